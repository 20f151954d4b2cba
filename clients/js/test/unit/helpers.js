import { HeraldClient } from "../../src/index.js";
import { FakeClock, fakeWebSocket, settle } from "./fakes.js";

export const CONNECT_RESULT = { client: "c-1", worker: 0, version: "0.1.0", ping_interval_ms: 25000 };

/** A client on a fake transport and clock; rnd is the jitter source. */
export function make(options = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocket();
  let r = 0.5;
  const client = new HeraldClient("ws://herald.test/", {
    websocket: WS,
    clock,
    random: () => r,
    token: "T",
    ...options,
  });
  const events = [];
  for (const name of ["state", "connected", "error", "dropped", "refreshed"]) {
    client.on(name, (...args) => events.push([name, ...args]));
  }
  // positional (code, reason, reconnect, delay), kept as one object here
  client.on("disconnected", (code, reason, reconnect, delay) =>
    events.push(["disconnected", delay === undefined ? { code, reason, reconnect } : { code, reason, reconnect, delay }]),
  );
  return {
    client,
    clock,
    WS,
    events,
    setRandom(v) {
      r = v;
    },
    get ws() {
      return WS.sockets[WS.sockets.length - 1];
    },
    /** Open the current socket and answer its connect command. */
    async accept(result = CONNECT_RESULT) {
      await settle();
      const ws = WS.sockets[WS.sockets.length - 1];
      ws.open();
      await settle();
      ws.reply(ws.last("connect"), result);
      await settle();
      return ws;
    },
  };
}

export { settle };
