// Test harness: a real redis-server and the real herald binary on free
// loopback ports, the way tests/integration/harness.py starts them, plus
// HS256 tokens and a TCP proxy whose connections a test can cut.
//
// HERALD_BIN names the binary (default: build/master/herald of the repo).

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, "..", "..", "..", "..");
export const SECRET = "integration-test-secret-0123456789abcdef";
export const API_KEY = "integration-api-key-0123456789abcdef";

const SANITIZER_MARKERS = ["ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"];

export function heraldBin() {
  const p = path.resolve(process.env.HERALD_BIN || path.join(REPO_ROOT, "build", "master", "herald"));
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return p;
  } catch {
    return null;
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll pred() until it is truthy; fail naming `what` after timeout ms. */
export async function until(pred, timeout, what) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(20);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function tmpDir(name) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `herald-js-${name}-`));
}

/** Remove a test's directory (kept after a failure, for its logs). */
export function removeDir(dir) {
  fs.rmSync(dir, { recursive: true, force: true });
}

function b64url(buf) {
  return Buffer.from(buf).toString("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}

/** An HS256 JWT; claims default to sub "user" and exp in one hour. */
export function token(claims = {}, secret = SECRET) {
  const body = { sub: "user", exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const input = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + b64url(JSON.stringify(body));
  return input + "." + b64url(createHmac("sha256", secret).update(input).digest());
}

function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    const done = (v) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(1000, () => done(false));
    s.on("error", () => done(false));
    s.on("connect", () => s.write("PING\r\n"));
    s.on("data", (d) => done(d.toString().startsWith("+PONG")));
  });
}

function exited(proc) {
  return proc.exitCode !== null || proc.signalCode !== null;
}

function waitExit(proc, ms) {
  if (exited(proc)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    proc.once("exit", () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

export class Redis {
  constructor(dir) {
    this.dir = dir;
    this.port = null;
    this.proc = null;
  }
  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }
  async start(port) {
    for (let i = 0; i < 5; i++) {
      this.port = port || (await freePort());
      const log = fs.openSync(path.join(this.dir, "redis.log"), "a");
      this.proc = spawn(
        "redis-server",
        ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.dir],
        { stdio: ["ignore", log, log], cwd: this.dir },
      );
      fs.closeSync(log);
      const end = Date.now() + 15000;
      while (Date.now() < end && !exited(this.proc)) {
        if (await redisPing(this.port)) return this;
        await sleep(20);
      }
      await this.stop();
      if (port) await sleep(200); // same port still held: try again
    }
    throw new Error(`redis-server did not start; see ${this.dir}/redis.log`);
  }
  async stop() {
    if (this.proc && !exited(this.proc)) {
      this.proc.kill("SIGTERM");
      if (!(await waitExit(this.proc, 5000))) {
        this.proc.kill("SIGKILL");
        await waitExit(this.proc, 5000);
      }
    }
  }
}

function deepMerge(base, over) {
  const out = JSON.parse(JSON.stringify(base));
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else if (v && typeof v === "object" && !Array.isArray(v) && out[k] && typeof out[k] === "object") {
      out[k] = deepMerge(out[k], v);
    } else out[k] = JSON.parse(JSON.stringify(v));
  }
  return out;
}

export class Herald {
  /** overrides: merged over the base config; edit(config): a last change in place. */
  constructor(bin, dir, redisUrl, overrides = {}, edit = null) {
    this.edit = edit;
    this.bin = bin;
    this.dir = dir;
    this.redisUrl = redisUrl;
    this.overrides = overrides;
    this.confPath = path.join(dir, "herald.json");
    this.logPath = path.join(dir, "herald.log");
    this.errPath = path.join(dir, "stderr.txt");
    this.proc = null;
  }
  get url() {
    return `ws://127.0.0.1:${this.port}/`;
  }
  writeConfig() {
    fs.writeFileSync(this.confPath + ".tmp", JSON.stringify(this.config, null, 2) + "\n");
    fs.renameSync(this.confPath + ".tmp", this.confPath);
  }
  async start() {
    this.port = await freePort();
    this.adminPort = await freePort();
    const base = {
      workers: 2,
      listen: { address: "127.0.0.1", port: this.port, backlog: 512 },
      admin: { address: "127.0.0.1", port: this.adminPort },
      redis: { url: this.redisUrl },
      auth: { hmac_secret: SECRET, allow_anonymous: false },
      api: { key: API_KEY },
      log: { level: "info", format: "json", file: this.logPath },
      timeouts: { shutdown_ms: 2000, handshake_ms: 5000 },
      // the publishers run at 1000 commands per second: no per-connection rate limit
      limits: { recovery_max_publications: 100000, commands_per_second: 0 },
      namespaces: {
        default: { publish: true },
        chat: { publish: true, history_size: 100000, history_ttl_s: 600 },
        news: { publish: true },
      },
    };
    this.config = deepMerge(base, this.overrides);
    if (this.edit) this.edit(this.config);
    this.writeConfig();
    const err = fs.openSync(this.errPath, "a");
    this.proc = spawn(this.bin, ["-c", this.confPath], {
      cwd: this.dir,
      stdio: ["ignore", err, err],
      detached: true, // own process group, like start_new_session
      env: {
        ASAN_OPTIONS: "detect_leaks=1:abort_on_error=1:halt_on_error=1",
        UBSAN_OPTIONS: "print_stacktrace=1:halt_on_error=1",
        ...process.env,
      },
    });
    fs.closeSync(err);
    const end = Date.now() + 30000;
    let last = null;
    while (Date.now() < end) {
      if (exited(this.proc)) throw new Error(`herald exited during start-up\n${this.diag()}`);
      try {
        if (await pingOnce(this.url)) return this;
      } catch (e) {
        last = e;
      }
      await sleep(50);
    }
    throw new Error(`herald not ready (${last})\n${this.diag()}`);
  }
  signal(sig) {
    process.kill(this.proc.pid, sig);
  }
  diag() {
    const tail = (p) => {
      try {
        return fs.readFileSync(p, "utf8").split("\n").slice(-30).join("\n");
      } catch {
        return "";
      }
    };
    return `--- herald stderr ---\n${tail(this.errPath)}\n--- herald log ---\n${tail(this.logPath)}`;
  }
  /** Stop herald; returns a list of problems (hang, bad exit, sanitizer reports). */
  async finish() {
    const problems = [];
    if (!this.proc) return problems;
    if (!exited(this.proc)) {
      this.signal("SIGTERM");
      if (!(await waitExit(this.proc, 20000))) {
        problems.push("master did not exit within 20 s of SIGTERM");
        try {
          process.kill(-this.proc.pid, "SIGKILL");
        } catch {}
        await waitExit(this.proc, 5000);
      }
    }
    if (this.proc.exitCode !== 0) problems.push(`master exit status ${this.proc.exitCode} (${this.proc.signalCode})`);
    for (const p of [this.errPath, this.logPath]) {
      let text = "";
      try {
        text = fs.readFileSync(p, "utf8");
      } catch {}
      for (const m of SANITIZER_MARKERS) {
        if (text.includes(m)) problems.push(`sanitizer report in ${p}:\n${text.slice(text.indexOf(m) - 200, text.indexOf(m) + 3000)}`);
      }
    }
    return problems;
  }
}

function pingOnce(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, "herald.v1");
    const t = setTimeout(() => {
      ws.terminate();
      reject(new Error("ping timeout"));
    }, 3000);
    ws.on("error", (e) => {
      clearTimeout(t);
      reject(e);
    });
    ws.on("open", () => ws.send(JSON.stringify({ id: 1, method: "ping" })));
    ws.on("message", (d) => {
      clearTimeout(t);
      ws.close();
      resolve(JSON.parse(d.toString()).result !== undefined);
    });
  });
}

/**
 * A TCP proxy on a free loopback port in front of `port`. cut() closes
 * both sides of every connection (the network cut); while down, new
 * connections are accepted and closed at once.
 */
export class Proxy {
  constructor(targetPort) {
    this.target = targetPort;
    this.conns = new Set();
    this.down = false;
    this.accepted = 0;
  }
  async start() {
    this.server = net.createServer((client) => {
      this.accepted++;
      if (this.down) {
        client.destroy();
        return;
      }
      const upstream = net.connect(this.target, "127.0.0.1");
      const pair = { client, upstream };
      this.conns.add(pair);
      const kill = () => {
        client.destroy();
        upstream.destroy();
        this.conns.delete(pair);
      };
      client.on("error", kill);
      upstream.on("error", kill);
      client.on("close", kill);
      upstream.on("close", kill);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise((r) => this.server.listen(0, "127.0.0.1", r));
    this.port = this.server.address().port;
    return this;
  }
  get url() {
    return `ws://127.0.0.1:${this.port}/`;
  }
  /** Close both sides of every proxied connection; refuse new ones until up(). */
  cut() {
    this.down = true;
    for (const { client, upstream } of this.conns) {
      client.destroy();
      upstream.destroy();
    }
    this.conns.clear();
  }
  up() {
    this.down = false;
  }
  async stop() {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}

/**
 * Publish on channel at `rate` messages per second through `client`
 * (a HeraldClient) until stop(); data is {seq}. Keeps which seqs were
 * acknowledged with which offset, and which failed (outcome unknown).
 */
export class Publisher {
  constructor(client, channel, rate = 1000) {
    this.client = client;
    this.channel = channel;
    this.rate = rate;
    this.sent = 0;
    this.acked = new Map(); // seq -> offset
    this.failed = new Map(); // seq -> error code
    this.inflight = new Set();
  }
  start() {
    const t0 = Date.now();
    this.timer = setInterval(() => {
      const due = Math.floor(((Date.now() - t0) * this.rate) / 1000);
      while (this.sent < due) this._one(this.sent++);
    }, 5);
    Publisher.running.add(this);
    return this;
  }

  /** Stop every publisher still running (test cleanup after a failure). */
  static stopAll() {
    const all = [...Publisher.running];
    for (const p of all) clearInterval(p.timer);
    return Promise.all(all.map((p) => p.stop()));
  }
  _one(seq) {
    const p = this.client.publish(this.channel, { seq }).then(
      (r) => this.acked.set(seq, r.offset),
      (e) => this.failed.set(seq, e.code),
    );
    this.inflight.add(p);
    p.finally(() => this.inflight.delete(p));
  }
  async stop() {
    clearInterval(this.timer);
    Publisher.running.delete(this);
    while (this.inflight.size) await Promise.all([...this.inflight]);
  }
  static running = new Set();

  maxAcked() {
    let m = 0;
    for (const o of this.acked.values()) m = Math.max(m, o);
    return m;
  }
}

/**
 * Assert that `got` (offsets delivered, in order) is exactly first..last
 * with no hole and no duplicate, and holds every acknowledged offset.
 */
export function checkExactlyOnce(assert, got, publisher, first = 1) {
  const last = got.length ? got[got.length - 1] : first - 1;
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== first + i) {
      assert.fail(`delivery ${i}: offset ${got[i]}, expected ${first + i} (around: ${got.slice(Math.max(0, i - 3), i + 3)})`);
    }
  }
  const maxAcked = publisher.maxAcked();
  assert.ok(last >= maxAcked, `last delivered ${last} < last acknowledged ${maxAcked}`);
}
