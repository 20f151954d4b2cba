"""Issue 15: the connect and subscribe proxy. A small HTTP backend on
127.0.0.1 answers as the test tells it (allow, deny, slow, HTTP 500,
garbage) and records what herald sent; herald asks it asynchronously on
the worker's loop, so a slow backend must not stall the worker's other
clients."""

import asyncio
import http.server
import json
import threading
import time

import pytest

from harness import (PUBSUB_CONFIG, admin_request, deep_merge, free_port, open_client,
                     parse_metrics, run)


class Backend:
    """POST /connect and /subscribe. The JSON body's "data" {"mode": ...}
    picks the answer: allow (default), deny, slow, 500, garbage."""

    def __init__(self):
        self.seen = []
        be = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                be.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                mode = (body.get("data") or {}).get("mode", "allow")
                status, out = 200, None
                if mode == "slow":
                    time.sleep(float((body.get("data") or {}).get("sleep", 3)))
                if mode == "500":
                    status, out = 500, b"oops"
                elif mode == "garbage":
                    out = b"<html>this is not json</html>"
                elif mode == "deny":
                    out = json.dumps({"error": {"code": 403, "message": "not logged in"}}).encode()
                elif self.path == "/connect":
                    out = json.dumps({"result": {"user": "u-" + (self.headers.get("Cookie") or "none"),
                                                 "channels": ["pp:*", "chat:*"], "info": {"via": "proxy"}}}).encode()
                else:
                    out = json.dumps({"result": {}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def backend():
    b = Backend()
    yield b
    b.stop()


def proxied(backend, **over):
    return deep_merge(PUBSUB_CONFIG, deep_merge({
        "workers": 1,
        "proxy": {"connect_url": backend.url("/connect"), "subscribe_url": backend.url("/subscribe"),
                  "timeout_ms": 1000, "headers": ["Cookie", "X-Session"]},
        "namespaces": {"pp": {"subscribe_proxy": True}},
    }, over))


async def connect_mode(url, mode, cookie=None, session=None, **data):
    headers = {"Cookie": cookie} if cookie else {}
    if session:
        headers["X-Session"] = session
    c = await open_client(url, do_connect=False, extra_headers=headers)
    r = await c.call("connect", {"data": dict(mode=mode, **data)}, timeout=15)
    return c, r


def test_connect_proxy_outcomes(make_herald, backend):
    h = make_herald(**proxied(backend))

    async def go():
        # allow: the backend saw the cookie, the client its answer
        c, r = await connect_mode(h.url, "allow", cookie="session=abc", session="s1", extra=1)
        assert "result" in r, r
        assert "expires_at" not in r["result"]  # the backend gave no expiry
        path, hdrs, body = backend.seen[-1]
        assert path == "/connect" and hdrs.get("cookie") == "session=abc", hdrs
        assert hdrs.get("x-session") == "s1", hdrs   # a header lws has no token for
        assert body["data"] == {"mode": "allow", "extra": 1} and body["transport"] == "websocket"
        assert body["client"] == r["result"]["client"]
        # the answer's channels are the connection's allow-list
        assert "result" in await c.subscribe("chat:x")
        assert (await c.subscribe("news:x"))["error"]["code"] == 403
        await c.close()
        # a token still works beside the proxy
        from harness import token_for
        await (await open_client(h.url, token_for(h, sub="t"))).close()

        # deny: the backend's code and message, then 4500
        c, r = await connect_mode(h.url, "deny")
        assert r["error"] == {"code": 403, "message": "not logged in"}, r
        assert await c.wait_closed(10) == 4500
        # 500, garbage, slow: 503, then 1013 (retry later)
        for mode in ("500", "garbage", "slow"):
            t0 = time.monotonic()
            c, r = await connect_mode(h.url, mode)
            assert r["error"]["code"] == 503, (mode, r)
            assert await c.wait_closed(10) == 1013, mode
            if mode == "slow":
                assert time.monotonic() - t0 < 2.9, "proxy.timeout_ms not applied"
    run(go())

    # every outcome counted once (the token connect asked no backend)
    _, _, text = admin_request(h.admin_port, "/metrics")
    _, samples = parse_metrics(text)
    got = {}
    for (name, labels), v in samples.items():
        if name == "herald_proxy_requests_total":
            r = dict(labels)["result"]
            got[r] = got.get(r, 0) + v
    assert got == {"allowed": 1, "refused": 1, "timeout": 1, "error": 1,
                   "invalid": 1, "busy": 0}, got


def test_connect_proxy_backend_down(make_herald):
    """A proxy-only server (no token keys at all) whose backend is down."""
    h = make_herald(**dict(PUBSUB_CONFIG, auth={"allow_anonymous": False, "hmac_secret": None},
                           proxy={"connect_url": "http://127.0.0.1:%d/connect" % free_port(),
                                  "timeout_ms": 1000}))

    async def go():
        c, r = await connect_mode(h.url, "allow")
        assert r["error"]["code"] == 503, r
        assert await c.wait_closed(10) == 1013
        # "token": null is no token: the proxy is asked, not refused as 401
        c = await open_client(h.url, do_connect=False)
        r = await c.call("connect", {"token": None}, timeout=15)
        assert r["error"]["code"] == 503, r
        assert await c.wait_closed(10) == 1013
    run(go())


def test_subscribe_proxy(make_herald, backend):
    h = make_herald(**proxied(backend))

    async def go():
        c, r = await connect_mode(h.url, "allow", cookie="k=1")
        assert "result" in r, r

        async def sub(channel, mode):
            return await c.call("subscribe", {"channel": channel, "data": {"mode": mode}}, timeout=15)
        r = await sub("pp:a", "allow")
        assert "result" in r, r
        path, _, body = backend.seen[-1]
        assert path == "/subscribe" and body["channel"] == "pp:a" and body["user"] == "u-k=1", body
        assert (await sub("pp:a", "allow"))["error"]["code"] == 409
        assert (await sub("pp:b", "deny"))["error"] == {"code": 403, "message": "not logged in"}
        assert (await sub("pp:c", "500"))["error"]["code"] == 503
        assert (await sub("pp:d", "garbage"))["error"]["code"] == 503
        assert (await sub("pp:e", "slow"))["error"]["code"] == 503
        # not asked outside subscribe_proxy namespaces
        n = len(backend.seen)
        assert "result" in await sub("chat:z", "deny")
        assert len(backend.seen) == n
        # still connected and working after all that
        assert "result" in await c.call("ping")
        await c.close()
    run(go())


def test_slow_backend_does_not_stall_the_worker(make_herald, backend):
    """One worker; a connect waits 2.5 s on the backend (timeout 4 s) while
    another client of the same worker keeps getting answers, and other
    connects go through the proxy in the meantime."""
    h = make_herald(**proxied(backend, proxy={"timeout_ms": 4000}))

    async def go():
        other = await open_client(h.url, do_connect=False)
        assert "result" in await other.call("connect", {"data": {"mode": "allow"}})
        slow = await open_client(h.url, do_connect=False)
        slow_id = await slow.send("connect", {"data": {"mode": "slow", "sleep": 2.5}})
        t0 = time.monotonic()
        worst = 0.0
        while time.monotonic() - t0 < 2.0:
            t = time.monotonic()
            assert "result" in await other.call("ping", timeout=5)
            worst = max(worst, time.monotonic() - t)
            await asyncio.sleep(0.05)
        c2, r = await connect_mode(h.url, "allow")
        assert "result" in r, r
        assert time.monotonic() - t0 < 2.4, "a connect waited for the slow one"
        r = await slow.reply(slow_id, timeout=10)
        assert "result" in r, r
        assert time.monotonic() - t0 >= 2.3
        # generous: a stalled loop would show the whole 2.5 s
        assert worst < 1.0, worst
        for x in (other, slow, c2):
            await x.close()
    run(go())


def test_one_connection_cannot_take_every_backend_slot(make_herald, backend):
    """proxy.max_requests is the worker's; one connection holds at most
    proxy.max_requests_per_connection of it (default 16), so a client
    firing subscribes at a slow backend cannot make every other client's
    connect "busy" (503 and a close)."""
    h = make_herald(**proxied(backend, proxy={"timeout_ms": 3000, "max_requests": 32}))

    async def go():
        c, r = await connect_mode(h.url, "allow")
        assert "result" in r, r
        ids = [await c.send("subscribe", {"channel": "pp:s%d" % i,
                                          "data": {"mode": "slow", "sleep": 1.5}})
               for i in range(32)]
        await asyncio.sleep(0.3)
        c2, r = await connect_mode(h.url, "allow")
        assert "result" in r, r   # a slot was left for it
        replies = [await c.reply(i, timeout=15) for i in ids]
        busy = [r for r in replies
                if r.get("error", {}).get("message") == "subscribe proxy busy, retry later"]
        assert len(busy) == 16, replies
        for x in (c, c2):
            await x.close()
    run(go())
