#!/usr/bin/env node
// Development server for the chat example: serves clients/js (the page and
// the SDK, no build step) on http://127.0.0.1:8000/ and signs development
// tokens at /token?sub=NAME with the auth.hmac_secret of conf/herald.json
// (or $HERALD_CONF), like deploy/mktoken.py. For development only: it hands
// a token to anyone who can reach it, so it listens on loopback.
//
//   node clients/js/examples/serve.js        then open
//   http://127.0.0.1:8000/examples/chat.html
//
// Environment: PORT (default 8000), HERALD_CONF, HERALD_URL (the WebSocket
// URL the page connects to, default ws://<host of the page>:8080/).

import { createHmac } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const CONF = process.env.HERALD_CONF || path.resolve(ROOT, "..", "..", "conf", "herald.json");
const PORT = Number(process.env.PORT || 8000);
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css" };

const secret = JSON.parse(fs.readFileSync(CONF, "utf8")).auth?.hmac_secret;
if (!secret) {
  console.error(`no auth.hmac_secret in ${CONF}`);
  process.exit(1);
}

const b64url = (s) => Buffer.from(s).toString("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");

function sign(claims) {
  const input = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + b64url(JSON.stringify(claims));
  return input + "." + b64url(createHmac("sha256", secret).update(input).digest());
}

http
  .createServer((req, res) => {
    const url = new URL(req.url, "http://localhost");
    if (url.pathname === "/token") {
      const sub = url.searchParams.get("sub") || "";
      if (!/^[A-Za-z0-9_.@-]{1,64}$/.test(sub)) {
        res.writeHead(400, { "Content-Type": "text/plain" }).end("sub: 1..64 of [A-Za-z0-9_.@-]\n");
        return;
      }
      // short-lived, so that the SDK's token renewal (getToken) is exercised
      const token = sign({ sub, exp: Math.floor(Date.now() / 1000) + 600 });
      res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-store" });
      res.end(JSON.stringify({ token, url: process.env.HERALD_URL || null }));
      return;
    }
    const file = path.join(ROOT, path.normalize(decodeURIComponent(url.pathname)));
    if (!file.startsWith(ROOT + path.sep) || file.includes(`${path.sep}node_modules${path.sep}`) ||
        !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": TYPES[path.extname(file)] || "application/octet-stream" });
    fs.createReadStream(file).pipe(res);
  })
  .listen(PORT, "127.0.0.1", () => {
    console.log(`chat example: http://127.0.0.1:${PORT}/examples/chat.html (tokens signed with the secret of ${CONF})`);
  });
