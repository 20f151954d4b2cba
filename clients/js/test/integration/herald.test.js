// The SDK against the real herald binary and a real redis-server.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { HeraldClient } from "../../src/index.js";
import { Herald, Proxy, Publisher, Redis, checkExactlyOnce, heraldBin, removeDir, sleep, tmpDir, token, until } from "../lib/harness.js";

const BIN = heraldBin();
if (!BIN && process.env.HERALD_BIN) throw new Error(`HERALD_BIN=${process.env.HERALD_BIN} is not an executable`);
const skip = BIN ? false : "no herald binary (set HERALD_BIN or build build/master/herald)";

async function withHerald(name, overrides, fn) {
  const dir = tmpDir(name);
  const redis = await new Redis(dir).start();
  const herald = new Herald(BIN, dir, redis.url, overrides);
  const clients = [];
  const mk = (url, opts = {}) => {
    const c = new HeraldClient(url, {
      websocket: WebSocket,
      token: token({ sub: `u${clients.length}` }),
      minReconnectDelay: 50,
      maxReconnectDelay: 1000,
      maxQueuedMessages: 100000,
      ...opts,
    });
    clients.push(c);
    return c;
  };
  let failed = true;
  try {
    await herald.start();
    await fn({ herald, redis, mk });
    failed = false;
  } finally {
    // after a failure a publisher may still run: stop it, or the test
    // process never exits
    const stopping = Publisher.stopAll();
    for (const c of clients) c.disconnect();
    await stopping;
    const problems = await herald.finish();
    await redis.stop();
    if (failed) console.error(`${herald.diag()}\n(logs kept in ${dir})`);
    if (!failed) {
      assert.deepEqual(problems, [], problems.join("\n"));
      removeDir(dir);
    }
  }
}

async function connected(c) {
  if (c.state !== "connected") c.connect();
  await until(() => c.state === "connected", 15000, "the client to connect");
}

function collect(sub) {
  const r = { got: [], seqs: [], gaps: [], events: [], subscribed: [] };
  sub.on("publication", (data, ctx) => {
    r.got.push(ctx.offset);
    r.seqs.push(data && data.seq);
    r.events.push(["pub", ctx.offset, ctx.epoch]);
  });
  sub.on("gap", (g) => {
    r.gaps.push(g);
    r.events.push(["gap", g]);
  });
  sub.on("subscribed", (e) => r.subscribed.push(e));
  return r;
}

const isSubscribed = (sub) => until(() => sub.state === "subscribed", 15000, `subscription to ${sub.channel}`);

test("publish and subscribe, history, ping, errors with herald's codes", { skip, timeout: 90000 }, async () => {
  await withHerald("pubsub", {}, async ({ herald, mk }) => {
    const a = mk(herald.url);
    const b = mk(herald.url);
    const sub = a.subscribe("chat:room");
    const r = collect(sub);
    await connected(a);
    await connected(b);
    await isSubscribed(sub);
    const offsets = [];
    for (let i = 0; i < 20; i++) offsets.push((await b.publish("chat:room", { seq: i })).offset);
    assert.deepEqual(offsets, Array.from({ length: 20 }, (_, i) => i + 1));
    await until(() => r.got.length === 20, 10000, "20 publications");
    assert.deepEqual(r.got, offsets);
    assert.deepEqual(r.seqs, Array.from({ length: 20 }, (_, i) => i));
    assert.equal(sub.offset, 20);
    const h = await a.history("chat:room", { limit: 5 });
    assert.deepEqual(h.publications.map((p) => p.offset), [16, 17, 18, 19, 20]);
    assert.equal(h.epoch, sub.epoch);
    assert.ok((await a.ping()) >= 0);
    await assert.rejects(b.publish("nope:room", 1), (e) => e.code === 403 && e.method === "publish");
    const bad = a.subscribe("nope:room");
    const err = await new Promise((resolve) => bad.on("error", resolve));
    assert.equal(err.code, 403);
    assert.equal(a.stats().publicationsDelivered, 20);
    assert.equal(a.stats().gaps, 0);
  });
});

test("socket cut while publishing at 1000/s: every message exactly once after recovery", { skip, timeout: 90000 }, async () => {
  await withHerald("cut", {}, async ({ herald, mk }) => {
    const proxy = await new Proxy(herald.port).start();
    try {
      const subc = mk(proxy.url);
      const pubc = mk(herald.url);
      const disc = [];
      subc.on("disconnected", (code, reason, reconnect) => disc.push({ code, reconnect }));
      const sub = subc.subscribe("chat:cut");
      const r = collect(sub);
      await connected(subc);
      await connected(pubc);
      await isSubscribed(sub);
      const pub = new Publisher(pubc, "chat:cut", 1000).start();
      await until(() => r.got.length >= 300, 15000, "300 publications before the cut");
      proxy.cut();
      await until(() => disc.length === 1, 5000, "the client to notice the cut");
      assert.equal(disc[0].reconnect, true);
      const before = pub.sent;
      await sleep(700);
      assert.ok(pub.sent - before >= 100, `only ${pub.sent - before} published during the cut`);
      proxy.up();
      await until(() => subc.state === "connected", 15000, "reconnect through the proxy");
      await sleep(500);
      await pub.stop();
      assert.equal(pub.failed.size, 0, `publishes failed: ${[...new Set(pub.failed.values())]}`);
      await until(() => r.got[r.got.length - 1] >= pub.maxAcked(), 15000, "every acknowledged publication");
      await sleep(200); // a duplicate would arrive now
      checkExactlyOnce(assert, r.got, pub);
      assert.deepEqual(r.seqs, Array.from({ length: pub.sent }, (_, i) => i));
      assert.deepEqual(r.gaps, []);
      assert.equal(r.subscribed.length, 2);
      assert.equal(r.subscribed[1].recovered, true);
      assert.ok(subc.stats().reconnects >= 1); // attempts, some refused while cut
    } finally {
      await proxy.stop();
    }
  });
});

test("SIGHUP that replaces workers (1012) under load: zero loss", { skip, timeout: 90000 }, async () => {
  await withHerald("reload", {}, async ({ herald, mk }) => {
    const subc = mk(herald.url);
    const pubc = mk(herald.url);
    const codes = [];
    for (const c of [subc, pubc]) c.on("disconnected", (code) => codes.push(code));
    const sub = subc.subscribe("chat:reload");
    const r = collect(sub);
    await connected(subc);
    await connected(pubc);
    await isSubscribed(sub);
    const pub = new Publisher(pubc, "chat:reload", 1000).start();
    await until(() => r.got.length >= 300, 15000, "300 publications before the reload");
    herald.config.timeouts.connect_ms = 12345; // a worker-level key: workers are replaced
    herald.writeConfig();
    herald.signal("SIGHUP");
    await until(() => codes.length >= 2, 20000, "both clients closed by the reload");
    assert.ok(codes.every((c) => c === 1012), `close codes ${codes}`);
    await until(() => subc.state === "connected" && pubc.state === "connected", 15000, "both reconnected");
    await sleep(700);
    await pub.stop();
    // a publish in flight when its connection closed may or may not have been
    // made; one refused by a draining worker (503) was not
    for (const code of pub.failed.values()) assert.ok(code === "disconnected" || code === 503, String(code));
    await until(() => r.got[r.got.length - 1] >= pub.maxAcked(), 15000, "every acknowledged publication");
    await sleep(200);
    checkExactlyOnce(assert, r.got, pub);
    assert.deepEqual(r.gaps, []);
    assert.ok(r.subscribed.length >= 2 && r.subscribed.slice(1).every((s) => s.recovered), JSON.stringify(r.subscribed));
  });
});

test("Redis restarted: a gap event, then live again", { skip, timeout: 90000 }, async () => {
  await withHerald("redis", {}, async ({ herald, redis, mk }) => {
    const subc = mk(herald.url);
    const pubc = mk(herald.url);
    const sub = subc.subscribe("news:r");
    const r = collect(sub);
    await connected(subc);
    await connected(pubc);
    await isSubscribed(sub);
    await pubc.publish("news:r", { seq: 0 });
    await until(() => r.got.length === 1, 10000, "the first publication");
    const epoch = sub.epoch;
    const port = redis.port;
    await redis.stop();
    await sleep(300);
    await redis.start(port);
    // Publish until one arrives: 503 while herald has no Redis; a
    // publication made before herald's subscriber is back is missed and
    // reported by the gap push.
    let seq = 1;
    const deadline = Date.now() + 20000;
    while (!r.events.some((e) => e[0] === "pub" && e[2] !== epoch)) {
      if (Date.now() > deadline) assert.fail(`nothing delivered after the restart: ${JSON.stringify(r.events)}`);
      try {
        await pubc.publish("news:r", { seq: seq++ });
      } catch (e) {
        if (e.code !== 503 && e.code !== "disconnected" && e.code !== "timeout") throw e;
      }
      await sleep(100);
    }
    const gapAt = r.events.findIndex((e) => e[0] === "gap");
    const liveAt = r.events.findIndex((e) => e[0] === "pub" && e[2] !== epoch);
    assert.ok(gapAt >= 0, `no gap event: ${JSON.stringify(r.events)}`);
    assert.ok(gapAt < liveAt, `gap after the new publication: ${JSON.stringify(r.events)}`);
    assert.notEqual(sub.epoch, epoch);
    assert.equal(subc.state, "connected");
    const n = r.got.length;
    const { offset } = await pubc.publish("news:r", { seq: 1000 });
    await until(() => r.seqs.includes(1000), 10000, "live delivery after the gap");
    assert.equal(r.got.length, n + 1);
    assert.equal(r.got[n], offset);
  });
});

test("a terminal close (invalid token, 4500): state closed, no reconnect", { skip, timeout: 90000 }, async () => {
  await withHerald("terminal", {}, async ({ herald, mk }) => {
    let sockets = 0;
    class Counting extends WebSocket {
      constructor(...args) {
        super(...args);
        sockets++;
      }
    }
    const c = mk(herald.url, { websocket: Counting, token: token({ sub: "eve" }, "not-the-secret") });
    const disc = [];
    const errors = [];
    c.on("disconnected", (code, reason, reconnect) => disc.push({ code, reconnect }));
    c.on("error", (e) => errors.push(e.code));
    c.connect();
    await until(() => c.state === "closed", 10000, "state closed");
    assert.deepEqual(disc.map((d) => [d.code, d.reconnect]), [[4500, false]]);
    assert.deepEqual(errors, [401]);
    await sleep(1500);
    assert.equal(sockets, 1, "no second connection");
    await assert.rejects(c.publish("chat:x", 1), (e) => e.code === "closed");
  });
});

test("token about to expire: refreshed on the live connection, no reconnect", { skip, timeout: 90000 }, async () => {
  await withHerald("refresh", {}, async ({ herald, mk }) => {
    const issued = [];
    const getToken = async () => {
      const exp = Math.floor(Date.now() / 1000) + (issued.length === 0 ? 2 : 3600);
      issued.push(exp);
      return token({ sub: "alice", exp });
    };
    const c = mk(herald.url, { token: undefined, getToken });
    const pubc = mk(herald.url);
    const results = [];
    const codes = [];
    const refreshed = [];
    c.on("connected", (res) => results.push(res));
    c.on("disconnected", (code) => codes.push(code));
    c.on("refreshed", (e) => refreshed.push(e));
    const sub = c.subscribe("chat:exp");
    const r = collect(sub);
    await connected(c);
    await connected(pubc);
    await isSubscribed(sub);
    assert.equal(results[0].refresh, true, "the server offers refresh");
    assert.equal(results[0].expires_at, issued[0]);
    // the token is shorter than auth.refresh_window_s: the push comes at once
    await until(() => refreshed.length >= 1, 10000, "the refresh");
    assert.equal(issued.length, 2);
    assert.deepEqual(refreshed[0], { expires_at: issued[1] });
    // past the first token's exp: still the same connection
    await until(() => Date.now() / 1000 > issued[0] + 1.5, 10000, "the first token's expiry");
    assert.deepEqual(codes, []);
    assert.equal(results.length, 1);
    await pubc.publish("chat:exp", { seq: 7 });
    await until(() => r.seqs.includes(7), 10000, "a publication after the refresh");
    assert.deepEqual(r.gaps, []);
  });
});

test("token expiry without a refresh (refused): 4003, getToken called, connection restored", { skip, timeout: 90000 }, async () => {
  await withHerald("refresh-refused", {}, async ({ herald, mk }) => {
    const calls = [];
    const codes = [];
    // every refresh before the close is refused (a token of another sub:
    // 403), however many the server's push and the client's own timer
    // ask for; the reconnect after 4003 gets a good one
    const getToken = async () => {
      calls.push(Date.now());
      const now = Math.floor(Date.now() / 1000);
      if (calls.length === 1) return token({ sub: "alice", exp: now + 2 });
      if (!codes.includes(4003)) return token({ sub: "mallory", exp: now + 3600 });
      return token({ sub: "alice", exp: now + 3600 });
    };
    const c = mk(herald.url, { token: undefined, getToken });
    const results = [];
    const errors = [];
    c.on("connected", (res) => results.push(res));
    c.on("disconnected", (code) => codes.push(code));
    c.on("error", (e) => errors.push(e.code));
    const sub = c.subscribe("chat:exp");
    const r = collect(sub);
    const pubc = mk(herald.url);
    await connected(pubc);
    await connected(c);
    await isSubscribed(sub);
    assert.equal(results[0].refresh, true, "the server offers refresh");
    assert.equal(typeof results[0].expires_at, "number");
    await until(() => results.length === 2 && c.state === "connected", 15000, "the reconnect after 4003");
    assert.deepEqual(codes, [4003]);
    assert.ok(errors.length >= 1 && errors.every((e) => e === 403), `errors ${errors}`);
    assert.ok(calls.length >= 3, `getToken called ${calls.length} times`);
    // the subscription came back with recovery: a publication made now arrives
    await isSubscribed(sub);
    await pubc.publish("chat:exp", { seq: 9 });
    await until(() => r.seqs.includes(9), 10000, "a publication on the restored connection");
    assert.deepEqual(r.gaps, []);
    assert.equal(r.subscribed[r.subscribed.length - 1].recovered, true);
  });
});
