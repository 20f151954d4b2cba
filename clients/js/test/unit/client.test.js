import { test } from "node:test";
import assert from "node:assert/strict";
import { HeraldClient, HeraldError } from "../../src/index.js";
import { make, settle, CONNECT_RESULT } from "./helpers.js";

const EPOCH = "e1";

function pub(channel, offset, data = { n: offset }, epoch = EPOCH) {
  return { push: { channel, pub: { offset, epoch, data } } };
}

async function subscribed(h, channel, offset = 0, opts) {
  const sub = h.client.subscribe(channel, opts);
  const got = [];
  const gaps = [];
  sub.on("publication", (data, ctx) => got.push(ctx.offset));
  sub.on("gap", (g) => gaps.push(g));
  await settle();
  const cmd = h.ws.last("subscribe");
  h.ws.reply(cmd, { offset, epoch: EPOCH });
  await settle();
  assert.equal(sub.state, "subscribed");
  return { sub, got, gaps };
}

test("connect: sends the token, reports state and the connect result", async () => {
  const h = make();
  h.client.connect();
  assert.equal(h.client.state, "connecting");
  const ws = await h.accept();
  assert.equal(ws.protocols, "herald.v1");
  assert.deepEqual(ws.commands()[0].params, { token: "T" });
  assert.equal(h.client.state, "connected");
  assert.deepEqual(
    h.events.filter((e) => e[0] === "state").map((e) => e[1]),
    ["connecting", "connected"],
  );
  assert.deepEqual(h.events.find((e) => e[0] === "connected")[1], CONNECT_RESULT);
});

test("no WebSocket at all is a clear error", () => {
  const saved = globalThis.WebSocket;
  try {
    delete globalThis.WebSocket;
    assert.throws(() => new HeraldClient("ws://x/"), /websocket/);
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});

test("commands issued in the same tick go out in one frame", async () => {
  const h = make();
  h.client.connect();
  const ws = await h.accept();
  const before = ws.frames.length;
  const ps = [h.client.publish("chat:a", 1), h.client.publish("chat:a", 2), h.client.publish("chat:b", 3)];
  await settle();
  assert.equal(ws.frames.length, before + 1);
  const lines = ws.frames[before].split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.params.data), [1, 2, 3]);
  // replies in another order, in one frame with an empty line
  ws.push(
    { id: lines[2].id, result: { offset: 9 } },
    "",
    { id: lines[0].id, result: { offset: 7 } },
    { id: lines[1].id, error: { code: 403, message: "publishing not allowed" } },
  );
  assert.deepEqual(await ps[0], { offset: 7 });
  assert.deepEqual(await ps[2], { offset: 9 });
  await assert.rejects(ps[1], (e) => e instanceof HeraldError && e.code === 403 && e.method === "publish");
});

test("batched frames stay under 64 KiB; a larger command is refused locally", async () => {
  const h = make();
  h.client.connect();
  const ws = await h.accept();
  const before = ws.frames.length;
  const big = "x".repeat(20000);
  for (let i = 0; i < 6; i++) h.client.publish("chat:a", big).catch(() => {});
  await settle();
  const frames = ws.frames.slice(before);
  assert.ok(frames.length >= 2, `split into ${frames.length} frames`);
  for (const f of frames) assert.ok(Buffer.byteLength(f) <= 60000, String(Buffer.byteLength(f)));
  assert.equal(frames.join("\n").split("\n").length, 6);
  await assert.rejects(h.client.publish("chat:a", "é".repeat(40000)), (e) => e.code === 413);
});

test("a frame is split on newlines: reply and pushes together", async () => {
  const h = make();
  h.client.connect();
  const ws = await h.accept();
  const sub = h.client.subscribe("chat:a");
  const got = [];
  sub.on("publication", (d) => got.push(d));
  await settle();
  const cmd = ws.last("subscribe");
  ws.onmessage({
    data: [
      JSON.stringify({ id: cmd.id, result: { offset: 0, epoch: EPOCH } }),
      JSON.stringify(pub("chat:a", 1, "a")),
      "",
      JSON.stringify(pub("chat:a", 2, "b")),
    ].join("\n"),
  });
  await settle();
  assert.deepEqual(got, ["a", "b"]);
});

test("command timeout rejects with code timeout; a late reply is ignored", async () => {
  const h = make({ commandTimeout: 3000 });
  h.client.connect();
  const ws = await h.accept();
  const p = h.client.publish("chat:a", 1);
  let settled = false;
  p.catch(() => {}).finally(() => (settled = true));
  await h.clock.advance(2999);
  assert.equal(settled, false);
  await h.clock.advance(1);
  await assert.rejects(p, (e) => e.code === "timeout" && e.method === "publish");
  ws.reply(ws.last("publish"), { offset: 1 }); // no crash, nothing resolves twice
  await settle();
});

test("duplicates (same epoch, offset at or below the last) are dropped and counted", async () => {
  const h = make();
  h.client.connect();
  await h.accept();
  const s = await subscribed(h, "chat:a", 0);
  h.ws.push(pub("chat:a", 1), pub("chat:a", 2), pub("chat:a", 2), pub("chat:a", 1), pub("chat:a", 3));
  await settle();
  assert.deepEqual(s.got, [1, 2, 3]);
  assert.equal(h.client.stats().duplicatesDropped, 2);
  assert.equal(h.client.stats().publicationsDelivered, 3);
  assert.equal(s.sub.offset, 3);
  assert.equal(s.sub.epoch, EPOCH);
});

test("offset jump: the missing range is fetched from history, newer pushes held", async () => {
  const h = make();
  h.client.connect();
  await h.accept();
  const s = await subscribed(h, "chat:a", 0);
  h.ws.push(pub("chat:a", 1), pub("chat:a", 4), pub("chat:a", 5));
  await settle();
  assert.deepEqual(s.got, [1]);
  const hist = h.ws.last("history");
  assert.deepEqual(hist.params, { channel: "chat:a", limit: 2, since: { offset: 1, epoch: EPOCH } });
  h.ws.push(pub("chat:a", 6));
  h.ws.reply(hist, {
    offset: 6,
    epoch: EPOCH,
    publications: [
      { offset: 2, data: 2 },
      { offset: 3, data: 3 },
    ],
  });
  await settle();
  assert.deepEqual(s.got, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(s.gaps, []);
});

test("offset jump without history: a gap event, then live delivery", async () => {
  const h = make();
  h.client.connect();
  await h.accept();
  const s = await subscribed(h, "news:a", 0);
  h.ws.push(pub("news:a", 1), pub("news:a", 5));
  await settle();
  h.ws.error(h.ws.last("history"), 403, "no history");
  await settle();
  assert.deepEqual(s.gaps.map((g) => [g.reason, g.from, g.to]), [["offset_jump", 2, 4]]);
  assert.deepEqual(s.got, [1, 5]);
  // the namespace is known to keep no history now: no second fetch
  const n = h.ws.commands().filter((c) => c.method === "history").length;
  h.ws.push(pub("news:a", 8));
  await settle();
  assert.equal(h.ws.commands().filter((c) => c.method === "history").length, n);
  assert.deepEqual(s.got, [1, 5, 8]);
  assert.equal(h.client.stats().gaps, 2);
});

test("a server gap push becomes a gap event and moves the position", async () => {
  const h = make();
  h.client.connect();
  await h.accept();
  const s = await subscribed(h, "chat:a", 0);
  h.ws.push(pub("chat:a", 1));
  h.ws.push({ push: { channel: "chat:a", gap: { from: 1, to: 3, epoch: "e2" } } });
  h.ws.push(pub("chat:a", 4, 4, "e2"), pub("chat:a", 4, 4, "e2"));
  await settle();
  assert.deepEqual(s.gaps, [{ reason: "server", from: 1, to: 3, epoch: "e2" }]);
  assert.deepEqual(s.got, [1, 4]);
  assert.equal(s.sub.epoch, "e2");
});

test("reconnect: resubscribes with recover, delivers the missed in order, then live", async () => {
  const h = make();
  h.client.connect();
  await h.accept();
  const s = await subscribed(h, "chat:a", 0);
  h.ws.push(pub("chat:a", 1), pub("chat:a", 2));
  await settle();
  h.ws.serverClose(1006);
  await settle();
  assert.equal(h.client.state, "disconnected");
  await h.clock.advance(h.client._opt.maxReconnectDelay);
  assert.equal(h.WS.sockets.length, 2);
  const ws = await h.accept();
  const cmd = ws.last("subscribe");
  assert.deepEqual(cmd.params, { channel: "chat:a", recover: true, offset: 2, epoch: EPOCH });
  const subscribedEvents = [];
  s.sub.on("subscribed", (e) => subscribedEvents.push(e));
  ws.push(
    {
      id: cmd.id,
      result: {
        recovered: true,
        offset: 4,
        epoch: EPOCH,
        publications: [
          { offset: 3, data: 3 },
          { offset: 4, data: 4 },
        ],
      },
    },
    pub("chat:a", 4),
    pub("chat:a", 5),
  );
  await settle();
  assert.deepEqual(s.got, [1, 2, 3, 4, 5]);
  assert.deepEqual(s.gaps, []);
  assert.deepEqual(subscribedEvents, [{ offset: 4, epoch: EPOCH, recovered: true }]);
  assert.equal(h.client.stats().reconnects, 1);
});

test("reconnect: recovered false is a gap event, then live", async () => {
  const h = make();
  h.client.connect();
  await h.accept();
  const s = await subscribed(h, "chat:a", 0);
  h.ws.push(pub("chat:a", 1));
  await settle();
  h.ws.serverClose(1012);
  await h.clock.advance(1000);
  const ws = await h.accept();
  ws.reply(ws.last("subscribe"), { recovered: false, offset: 9, epoch: EPOCH });
  ws.push(pub("chat:a", 10));
  await settle();
  assert.deepEqual(s.gaps, [{ reason: "not_recovered", from: 2, to: 9, epoch: EPOCH }]);
  assert.deepEqual(s.got, [1, 10]);
});

test("subscribe 503 is retried with backoff; 403 is a subscription error", async () => {
  const h = make();
  h.client.connect();
  await h.accept();
  const sub = h.client.subscribe("chat:a");
  assert.equal(h.client.subscribe("chat:a"), sub, "one Subscription per channel");
  const errors = [];
  sub.on("error", (e) => errors.push(e.code));
  await settle();
  h.ws.error(h.ws.last("subscribe"), 503, "redis down");
  await settle();
  const n = h.ws.commands().filter((c) => c.method === "subscribe").length;
  await h.clock.advance(h.client._opt.minReconnectDelay * 2);
  assert.equal(h.ws.commands().filter((c) => c.method === "subscribe").length, n + 1);
  h.ws.error(h.ws.last("subscribe"), 403, "forbidden");
  await settle();
  assert.deepEqual(errors, [503, 403]);
  assert.equal(sub.state, "unsubscribed");
  await h.clock.advance(600000);
  assert.equal(h.ws.commands().filter((c) => c.method === "subscribe").length, n + 1, "no retry after 403");
  assert.equal(h.WS.sockets.length, 1);
});

test("close codes drive reconnection: backoff, at once, new token, terminal", async () => {
  // backoff: delay within [min, min*2^attempt], growing with failures
  const h = make({ minReconnectDelay: 100, maxReconnectDelay: 10000 });
  h.setRandom(0.999);
  h.client.connect();
  await h.accept();
  h.ws.serverClose(1011);
  await settle();
  let d = h.events.filter((e) => e[0] === "disconnected").pop()[1];
  assert.equal(d.reconnect, true);
  assert.equal(d.code, 1011);
  assert.ok(d.delay >= 100 && d.delay < 200, String(d.delay));
  await h.clock.advance(d.delay);
  h.ws.serverClose(1006); // failed again before connecting
  await settle();
  d = h.events.filter((e) => e[0] === "disconnected").pop()[1];
  assert.ok(d.delay >= 300 && d.delay < 400, String(d.delay));

  // 1012: at once (small jitter)
  const h2 = make({ immediateReconnectJitter: 50 });
  h2.client.connect();
  await h2.accept();
  h2.ws.serverClose(1012);
  await settle();
  assert.ok(h2.events.filter((e) => e[0] === "disconnected").pop()[1].delay < 50);
  await h2.clock.advance(50);
  assert.equal(h2.WS.sockets.length, 2);

  // terminal: state closed, no retry ever, queued publishes rejected
  for (const code of [4500, 4501, 4999, 1002, 1003, 1007, 1009]) {
    const h3 = make();
    h3.client.connect();
    await h3.accept();
    h3.ws.serverClose(code);
    await settle();
    assert.equal(h3.client.state, "closed", `code ${code}`);
    assert.deepEqual(h3.events.filter((e) => e[0] === "disconnected").pop()[1], {
      code,
      reason: "",
      reconnect: false,
    });
    await h3.clock.advance(600000);
    assert.equal(h3.WS.sockets.length, 1, `code ${code}: no reconnect`);
    await assert.rejects(h3.client.publish("chat:a", 1), (e) => e.code === "closed");
  }
});

test("4003: getToken is called for a fresh token, then reconnect", async () => {
  let n = 0;
  const h = make({ token: undefined, getToken: async () => `tok-${++n}` });
  h.client.connect();
  await h.accept();
  assert.equal(h.ws.last("connect").params.token, "tok-1");
  h.ws.serverClose(1006);
  await h.clock.advance(1000);
  await h.accept();
  assert.equal(h.ws.last("connect").params.token, "tok-1", "a plain reconnect reuses the token");
  h.ws.serverClose(4003, "token expired");
  await h.clock.advance(2000);
  await h.accept();
  assert.equal(h.ws.last("connect").params.token, "tok-2");
  assert.equal(n, 2);

  // without getToken a static token cannot be renewed: terminal
  const h2 = make({ token: "static" });
  h2.client.connect();
  await h2.accept();
  h2.ws.serverClose(4003);
  await settle();
  assert.equal(h2.client.state, "closed");
});

test("backoff resets once a connection has stayed up", async () => {
  const h = make({ minReconnectDelay: 100, maxReconnectDelay: 100000, reconnectResetAfter: 5000 });
  h.setRandom(0.999);
  h.client.connect();
  await h.accept();
  for (let i = 0; i < 4; i++) {
    h.ws.serverClose(1006);
    await settle();
    await h.clock.advance(h.events.filter((e) => e[0] === "disconnected").pop()[1].delay);
  }
  assert.equal(h.WS.sockets.length, 5);
  await h.accept();
  await h.clock.advance(5000);
  h.ws.serverClose(1006);
  await settle();
  const d = h.events.filter((e) => e[0] === "disconnected").pop()[1];
  assert.ok(d.delay < 200, `reset backoff, got ${d.delay}`);
});

test("queue while disconnected: bounded, oldest dropped with an event", async () => {
  const h = make({ maxQueuedMessages: 2 });
  const results = [];
  const ps = [1, 2, 3].map((i) =>
    h.client.publish("chat:a", i).then(
      (r) => results.push(["ok", i, r.offset]),
      (e) => results.push(["err", i, e.code]),
    ),
  );
  await settle();
  assert.deepEqual(results, [["err", 1, "dropped"]]);
  assert.deepEqual(h.events.filter((e) => e[0] === "dropped").map((e) => e[1].params.data), [1]);
  assert.equal(h.client.stats().messagesDropped, 1);
  assert.equal(h.client.stats().messagesQueued, 2);
  h.client.connect();
  const ws = await h.accept();
  const pubs = ws.commands().filter((c) => c.method === "publish");
  assert.deepEqual(pubs.map((c) => c.params.data), [2, 3]);
  for (const c of pubs) ws.reply(c, { offset: c.params.data * 10 });
  await Promise.all(ps);
  assert.deepEqual(results.slice(1), [
    ["ok", 2, 20],
    ["ok", 3, 30],
  ]);
  assert.equal(h.client.stats().messagesQueued, 0);
});

test("queue overflow 'reject' refuses the new message instead", async () => {
  const h = make({ maxQueuedMessages: 1, queueOverflow: "reject" });
  const p1 = h.client.publish("chat:a", 1);
  await assert.rejects(h.client.publish("chat:a", 2), (e) => e.code === "queue_full");
  assert.equal(h.client.stats().messagesDropped, 1);
  h.client.disconnect();
  await assert.rejects(p1, (e) => e.code === "disconnected");
});

test("buffers stay bounded: pushes held during a gap fetch are capped", async () => {
  const h = make({ maxBufferedPublications: 10 });
  h.client.connect();
  await h.accept();
  const s = await subscribed(h, "chat:a", 0);
  h.ws.push(pub("chat:a", 1), pub("chat:a", 3));
  for (let i = 4; i < 1000; i++) h.ws.push(pub("chat:a", i));
  await settle();
  assert.ok(s.sub._held.length <= 10, String(s.sub._held.length));
  h.ws.reply(h.ws.last("history"), { offset: 999, epoch: EPOCH, publications: [{ offset: 2, data: 2 }] });
  await settle();
  // what was dropped is fetched again (the next jump), never delivered out of order
  assert.deepEqual(s.got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  h.ws.push(pub("chat:a", 1000));
  await settle();
  const again = h.ws.last("history");
  assert.equal(again.params.since.offset, 12);
});

test("heartbeat: ping after ping_interval_ms of silence, drop without a reply", async () => {
  const h = make({ pongTimeout: 2000 });
  h.WS.autoPong = false;
  h.client.connect();
  await h.accept({ ...CONNECT_RESULT, ping_interval_ms: 10000 });
  await h.clock.advance(5000);
  h.ws.push({ push: { channel: "x", pub: { offset: 1, epoch: "e", data: 1 } } }); // traffic
  await h.clock.advance(9999);
  assert.equal(h.ws.commands().filter((c) => c.method === "ping").length, 0);
  await h.clock.advance(1);
  const ping = h.ws.last("ping");
  assert.ok(ping, "ping sent after 10 s of silence");
  h.ws.reply(ping, { worker: 0 });
  await h.clock.advance(10000);
  assert.equal(h.ws.commands().filter((c) => c.method === "ping").length, 2);
  await h.clock.advance(1999);
  assert.equal(h.client.state, "connected");
  await h.clock.advance(1);
  assert.equal(h.client.state, "disconnected");
  assert.equal(h.events.filter((e) => e[0] === "disconnected").pop()[1].code, 4001);
  assert.equal(h.WS.sockets[0].closedWith, 1000, "the dead socket is closed");
});

test("ping() resolves to the round-trip time", async () => {
  const h = make();
  h.WS.autoPong = false;
  await assert.rejects(h.client.ping(), (e) => e.code === "disconnected");
  h.client.connect();
  await h.accept();
  const p = h.client.ping();
  await settle();
  await h.clock.advance(42);
  h.ws.reply(h.ws.last("ping"), { worker: 0 });
  assert.equal(await p, 42);
  assert.equal(h.client.stats().lastRtt, 42);
});

test("token refresh on a live connection when the server supports it", async () => {
  let n = 0;
  const h = make({ token: undefined, getToken: async () => `tok-${++n}` });
  h.client.connect();
  const now = Math.floor(h.clock.now() / 1000);
  await h.accept({ ...CONNECT_RESULT, expires_at: now + 3600, refresh: true });
  h.ws.push({ push: { refresh: { expires_at: now + 30 } } });
  await settle();
  const cmd = h.ws.last("refresh");
  assert.deepEqual(cmd.params, { token: "tok-2" });
  h.ws.reply(cmd, { expires_at: now + 7200 });
  await settle();
  assert.equal(h.WS.sockets.length, 1, "no reconnect");
  assert.deepEqual(h.events.filter((e) => e[0] === "refreshed").map((e) => e[1]), [{ expires_at: now + 7200 }]);
  // the fallback timer refreshes before expiry even without a push
  await h.clock.advance(7200 * 1000 - 10000);
  assert.equal(h.ws.commands().filter((c) => c.method === "refresh").length, 2);
});

test("without refresh support the refresh push is ignored; 4003 reconnects", async () => {
  let n = 0;
  const h = make({ token: undefined, getToken: async () => `tok-${++n}` });
  h.client.connect();
  const now = Math.floor(h.clock.now() / 1000);
  await h.accept({ ...CONNECT_RESULT, expires_at: now + 60 });
  h.ws.push({ push: { refresh: { expires_at: now + 60 } } });
  await h.clock.advance(59000);
  assert.equal(h.ws.commands().filter((c) => c.method === "refresh").length, 0);
  h.ws.serverClose(4003);
  await h.clock.advance(1000);
  await h.accept();
  assert.equal(h.ws.last("connect").params.token, "tok-2");
});

test("disconnect() stops for good until connect()", async () => {
  const h = make();
  h.client.connect();
  await h.accept();
  const s = await subscribed(h, "chat:a", 5);
  h.client.disconnect();
  assert.equal(h.client.state, "disconnected");
  assert.equal(h.WS.sockets[0].closedWith, 1000);
  await h.clock.advance(600000);
  assert.equal(h.WS.sockets.length, 1);
  h.client.connect();
  const ws = await h.accept();
  assert.deepEqual(ws.last("subscribe").params, { channel: "chat:a", recover: true, offset: 5, epoch: EPOCH });
  s.sub.unsubscribe();
  await settle();
  assert.deepEqual(ws.last("unsubscribe").params, { channel: "chat:a" });
  assert.notEqual(h.client.subscribe("chat:a"), s.sub);
});

test("a listener that throws does not break delivery", async () => {
  const h = make();
  h.client.connect();
  await h.accept();
  const s = await subscribed(h, "chat:a", 0);
  let first = true;
  s.sub.on("publication", () => {
    if (first) {
      first = false;
      throw new Error("app bug");
    }
  });
  h.ws.push(pub("chat:a", 1), pub("chat:a", 2));
  await settle();
  assert.deepEqual(s.got, [1, 2]);
  assert.ok(h.events.some((e) => e[0] === "error" && e[1].message === "app bug"));
});

test("browser: the online event ends a backoff wait at once", async () => {
  const listeners = {};
  const saved = {
    add: globalThis.addEventListener,
    remove: globalThis.removeEventListener,
    nav: Object.getOwnPropertyDescriptor(globalThis, "navigator"),
  };
  globalThis.addEventListener = (name, fn) => (listeners[name] = fn);
  globalThis.removeEventListener = (name, fn) => {
    if (listeners[name] === fn) delete listeners[name];
  };
  Object.defineProperty(globalThis, "navigator", { value: {}, configurable: true, writable: true });
  try {
    const h = make({ minReconnectDelay: 5000, maxReconnectDelay: 60000 });
    h.client.connect();
    await h.accept();
    assert.equal(typeof listeners.online, "function");
    h.ws.serverClose(1006);
    await settle();
    assert.equal(h.WS.sockets.length, 1);
    listeners.online();
    await settle();
    assert.equal(h.WS.sockets.length, 2, "reconnected without waiting for the backoff");
    h.client.disconnect();
    assert.equal(listeners.online, undefined, "listener removed by disconnect()");
  } finally {
    globalThis.addEventListener = saved.add;
    globalThis.removeEventListener = saved.remove;
    if (saved.nav) Object.defineProperty(globalThis, "navigator", saved.nav);
    else delete globalThis.navigator;
  }
});

test("no console output unless a logger is given or the profile is development", async () => {
  const calls = [];
  const saved = {};
  for (const k of ["debug", "info", "warn", "error", "log"]) {
    saved[k] = console[k];
    console[k] = (...a) => calls.push([k, ...a]);
  }
  const cycle = async (options) => {
    const h = make(options);
    h.client.connect();
    await h.accept();
    h.ws.serverClose(1006);
    await settle();
    h.client.disconnect();
  };
  try {
    await cycle({});
    await cycle({ profile: "high-performance" });
    assert.deepEqual(calls, []);
    await cycle({ profile: "development" });
    assert.ok(calls.length > 0, "development logs to the console");
    calls.length = 0;
    const mine = [];
    await cycle({ logger: (level, ...a) => mine.push(level) });
    assert.deepEqual(calls, []);
    assert.ok(mine.includes("info"), JSON.stringify(mine));
  } finally {
    Object.assign(console, saved);
  }
});

test("getToken that fails or never answers: an error, then retry with backoff", async () => {
  let n = 0;
  const h = make({
    token: undefined,
    connectTimeout: 3000,
    getToken: () => {
      n++;
      if (n === 1) return new Promise(() => {}); // hangs
      if (n === 2) throw new Error("auth backend down");
      return "fresh";
    },
  });
  h.client.connect();
  await settle();
  assert.equal(h.client.state, "connecting");
  await h.clock.advance(3000);
  assert.equal(h.events.filter((e) => e[0] === "error").pop()[1].code, "token");
  assert.equal(h.client.state, "disconnected");
  await h.clock.advance(h.events.filter((e) => e[0] === "disconnected").pop()[1].delay);
  assert.equal(h.events.filter((e) => e[0] === "error").pop()[1].message, "auth backend down");
  assert.equal(h.WS.sockets.length, 0, "no socket without a token");
  await h.clock.advance(h.events.filter((e) => e[0] === "disconnected").pop()[1].delay);
  await h.accept();
  assert.equal(h.ws.last("connect").params.token, "fresh");
  assert.equal(h.client.state, "connected");
});
