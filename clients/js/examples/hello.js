// The SDK from Node.js: subscribe, publish, get our own publication back.
//   ./deploy/dev.sh run                   (in another terminal)
//   (cd clients/js && npm ci)             (the ws package, for Node.js < 22)
//   node clients/js/examples/hello.js
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { HeraldClient } from "../src/index.js";

// a development token signed with the shipped secret (your backend does this)
const mktoken = fileURLToPath(new URL("../../../deploy/mktoken.py", import.meta.url));
const getToken = async () => execFileSync(mktoken, ["--sub", "bob"], { encoding: "utf8" }).trim();

const client = new HeraldClient(process.env.HERALD_URL || "ws://127.0.0.1:8080/", { websocket: WebSocket, getToken });
client.on("connected", (r) => console.log("connected as", r.client, "to worker", r.worker));

const sub = client.subscribe("chat:lobby");
const received = new Promise((resolve) =>
  sub.on("publication", (data, { offset }) => {
    console.log("received", offset, data);
    if (data.user === "bob") resolve();
  }),
);
sub.on("subscribed", async () => {
  const { offset } = await client.publish("chat:lobby", { user: "bob", text: "hi from Node.js" });
  console.log("published at offset", offset);
  await received; // the push may come before the publish reply
  client.disconnect();
});
client.connect();
