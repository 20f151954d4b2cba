// The SDK in a real headless Chromium (Debian's chromium, driven by
// puppeteer-core): the page's WebSocket goes through a TCP proxy in this
// process; the proxy cuts the network while a Node.js publisher keeps
// publishing, and the page must end with every message exactly once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import WebSocket from "ws";
import puppeteer from "puppeteer-core";
import { HeraldClient } from "../../src/index.js";
import { Herald, Proxy, Publisher, Redis, checkExactlyOnce, freePort, heraldBin, removeDir, SECRET, sleep, tmpDir, token, until } from "../lib/harness.js";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const BIN = heraldBin();
const skip = !BIN
  ? "no herald binary (set HERALD_BIN)"
  : !fs.existsSync(CHROMIUM)
    ? `no ${CHROMIUM} (apt-get install chromium)`
    : false;

const TYPES = { ".html": "text/html", ".js": "text/javascript" };

/** Serve clients/js (the SDK and the test page) on 127.0.0.1. */
async function staticServer() {
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const file = path.join(ROOT, path.normalize(rel));
    if (!file.startsWith(ROOT + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": TYPES[path.extname(file)] || "application/octet-stream" });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return server;
}

function launch(dir) {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: path.join(dir, "chromium-profile"),
    args: [
      "--no-sandbox", // root in CI
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

test("Chromium: network cut while publishing, every message recovered exactly once", { skip, timeout: 90000 }, async () => {
  const dir = tmpDir("chromium");
  const redis = await new Redis(dir).start();
  const herald = new Herald(BIN, dir, redis.url);
  let server, proxy, browser, pubc;
  let ok = false;
  try {
    await herald.start();
    server = await staticServer();
    proxy = await new Proxy(herald.port).start();
    browser = await launch(dir);
    const page = await browser.newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    const q = new URLSearchParams({ ws: proxy.url, token: token({ sub: "browser" }), channel: "chat:browser" });
    await page.goto(`http://127.0.0.1:${server.address().port}/test/browser/page.html?${q}`);
    const t = (expr) => page.evaluate(expr);
    await until(() => t("window.heraldTest && window.heraldTest.subscribed.length === 1"), 20000, "the page to subscribe");

    pubc = new HeraldClient(herald.url, { websocket: WebSocket, token: token({ sub: "pub" }), maxQueuedMessages: 100000 });
    pubc.connect();
    await until(() => pubc.state === "connected", 10000, "the publisher");
    const pub = new Publisher(pubc, "chat:browser", 1000).start();
    await until(() => t("window.heraldTest.got.length >= 200"), 15000, "200 publications in the page");
    proxy.cut();
    await until(() => t("window.heraldTest.disconnects.length >= 1"), 10000, "the page to see the cut");
    const before = pub.sent;
    await sleep(700);
    assert.ok(pub.sent - before >= 100, `only ${pub.sent - before} published during the cut`);
    proxy.up();
    await until(() => t("window.heraldTest.client.state === 'connected'"), 15000, "the page to reconnect");
    await sleep(500);
    await pub.stop();
    assert.equal(pub.failed.size, 0);
    const last = pub.maxAcked();
    await until(() => t(`window.heraldTest.got[window.heraldTest.got.length - 1] >= ${last}`), 15000, "every publication in the page");
    await sleep(200);
    const res = await t("({ got: heraldTest.got, seqs: heraldTest.seqs, gaps: heraldTest.gaps, subscribed: heraldTest.subscribed, stats: heraldTest.client.stats() })");
    checkExactlyOnce(assert, res.got, pub);
    assert.deepEqual(res.seqs, Array.from({ length: pub.sent }, (_, i) => i));
    assert.deepEqual(res.gaps, []);
    assert.equal(res.subscribed[res.subscribed.length - 1].recovered, true);
    assert.equal(res.stats.duplicatesDropped >= 0, true);
    assert.deepEqual(pageErrors, []);
    ok = true;
  } finally {
    const stopping = Publisher.stopAll();
    if (pubc) pubc.disconnect();
    await stopping;
    if (browser) await browser.close();
    if (proxy) await proxy.stop();
    if (server) server.close();
    const problems = await herald.finish();
    await redis.stop();
    if (!ok) console.error(`${herald.diag()}\n(logs kept in ${dir})`);
    else {
      assert.deepEqual(problems, []);
      removeDir(dir);
    }
  }
});

// The chat example as the README says to run it: examples/serve.js (page,
// SDK and development tokens) against herald with the shipped config's
// secret, namespaces and origins (ports and Redis changed for the test).
test("Chromium: the chat example works with the shipped config", { skip, timeout: 90000 }, async () => {
  const dir = tmpDir("chat");
  const redis = await new Redis(dir).start();
  const shipped = JSON.parse(fs.readFileSync(path.join(ROOT, "..", "..", "conf", "herald.json"), "utf8"));
  const herald = new Herald(BIN, dir, redis.url, {}, (config) => {
    for (const key of ["auth", "namespaces", "security"]) {
      if (shipped[key] === undefined) delete config[key];
      else config[key] = shipped[key];
    }
    // herald refuses the shipped development secret outside --dev; serve.js
    // signs with whatever secret the config it reads has
    config.auth = { ...config.auth, hmac_secret: SECRET };
  });
  let serve, browser;
  let ok = false;
  try {
    await herald.start();
    const port = await freePort();
    serve = spawn(process.execPath, [path.join(ROOT, "examples", "serve.js")], {
      env: { ...process.env, PORT: String(port), HERALD_CONF: herald.confPath },
      stdio: ["ignore", "pipe", "inherit"],
    });
    await until(async () => {
      try {
        const r = await new Promise((resolve, reject) =>
          http.get(`http://127.0.0.1:${port}/token?sub=alice`, (res) => resolve(res.statusCode)).on("error", reject),
        );
        return r === 200;
      } catch {
        return false;
      }
    }, 10000, "examples/serve.js");
    browser = await launch(dir);
    const pageUrl = `http://127.0.0.1:${port}/examples/chat.html?ws=${encodeURIComponent(herald.url)}`;
    const open = async (name) => {
      const p = await browser.newPage();
      const errors = [];
      p.on("pageerror", (e) => errors.push(String(e)));
      await p.goto(pageUrl);
      await p.evaluate((n) => (document.getElementById("name").value = n), name);
      await p.click("#join");
      await p.waitForFunction(() => !document.querySelector("#say input").disabled, { timeout: 30000 });
      return { p, errors };
    };
    const say = async ({ p }, text) => {
      await p.type("#say input", text);
      await p.keyboard.press("Enter");
    };
    // generous waits: CI shares two cores between Chromium, herald under
    // ASan and Redis; on failure the page's own log says what it saw
    const sees = async ({ p }, text) => {
      try {
        await p.waitForFunction((t) => document.getElementById("log").textContent.includes(t), { timeout: 30000 }, text);
      } catch (e) {
        const log = await p.evaluate(() => document.getElementById("log").innerText).catch(() => "?");
        const status = await p.evaluate(() => document.getElementById("status")?.textContent).catch(() => "?");
        throw new Error(`${e.message}: "${text}" not in the page's log (status ${status}):\n${log}`);
      }
    };
    const alice = await open("alice");
    await say(alice, "hello from alice");
    await sees(alice, "alice: hello from alice");
    const bob = await open("bob"); // joins later: gets the message from history
    await sees(bob, "alice: hello from alice");
    await say(bob, "hi alice");
    await sees(alice, "bob: hi alice");
    assert.deepEqual([...alice.errors, ...bob.errors], []);
    ok = true;
  } finally {
    if (browser) await browser.close();
    if (serve) serve.kill();
    const problems = await herald.finish();
    await redis.stop();
    if (!ok) console.error(`${herald.diag()}\n(logs kept in ${dir})`);
    else {
      assert.deepEqual(problems, []);
      removeDir(dir);
    }
  }
});
