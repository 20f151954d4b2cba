// A typed use of the SDK; `npx tsc --noEmit -p .` checks it against
// src/index.d.ts (it is not run).
import { HeraldClient, HeraldError, PROFILES, closeAction, type GapEvent, type Stats } from "herald-client";

interface ChatMessage {
  user: string;
  text: string;
}

const client = new HeraldClient("ws://127.0.0.1:8080/", {
  getToken: async () => "a JWT from your backend",
  profile: "high-performance",
  maxQueuedMessages: 500,
  queueOverflow: "reject",
});

client.on("state", (state, previous) => console.log(previous, "->", state));
client.on("connected", (result) => console.log("client id", result.client, "ping every", result.ping_interval_ms));
client.on("disconnected", (code, reason, reconnect, delay) => console.log(code, reason, reconnect, delay ?? 0));
client.on("error", (err) => console.error(err.message));

const sub = client.subscribe<ChatMessage>("chat:lobby", { recover: true });
sub.on("publication", (msg, { offset, epoch, channel }) => {
  const text: string = msg.text;
  console.log(channel, offset, epoch, msg.user, text);
});
sub.on("gap", (gap: GapEvent) => console.warn("missed", gap.from, "..", gap.to, gap.reason));
sub.on("subscribed", ({ recovered }) => console.log("live, recovered:", recovered));
sub.on("error", (err) => console.error(err.code));

client.connect();

async function main(): Promise<void> {
  try {
    const { offset } = await client.publish("chat:lobby", { user: "alice", text: "hi" });
    const h = await client.history<ChatMessage>("chat:lobby", { limit: 10, since: { offset: offset - 5, epoch: sub.epoch ?? "" } });
    for (const p of h.publications) console.log(p.offset, p.data.text);
    const rtt: number = await client.ping();
    const s: Stats = client.stats();
    console.log(rtt, s.reconnects, s.duplicatesDropped, s.gaps, s.messagesDropped, s.lastRtt);
  } catch (e) {
    if (e instanceof HeraldError && e.code === 503) console.log("retry later");
  }
  console.log(PROFILES.production.maxQueuedMessages, closeAction(1012));
  sub.unsubscribe();
  client.disconnect();
}
void main();
