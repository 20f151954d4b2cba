"""The session monitor page on the master's admin port (issue 14), in a
real headless Chromium (Debian's chromium) driven over the DevTools
protocol: the page loads from a running herald with an admin token, shows
the numbers /stats has, follows connection changes, and the run leaves a
screenshot (tmp dir, and $HERALD_TEST_ARTIFACTS when set)."""

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest
import websockets

from harness import admin_request, open_client, pubsub_config, run, token_for, wait_until

TOKEN = "monitor-admin-token-0123456789"
CHROMIUM = shutil.which("chromium")


def stats(h):
    st, _, body = admin_request(h.admin_port, "/stats",
                                headers={"Authorization": "Bearer " + TOKEN})
    assert st == 200, body
    return json.loads(body)


class Browser:
    """One headless Chromium with a DevTools websocket to its page."""

    def __init__(self, profile):
        self.profile = str(profile)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--user-data-dir=" + self.profile,
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--window-size=1280,1000", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        wait_until(lambda: os.path.exists(port_file) and open(port_file).read().count("\n") >= 1,
                   30, what="chromium's DevTools port")
        self.port = int(open(port_file).read().split("\n")[0])
        pages = wait_until(lambda: [t for t in self._targets() if t["type"] == "page"], 15,
                           what="a page target")
        self.ws_url = pages[0]["webSocketDebuggerUrl"]
        self.ws = None
        self.next_id = 0

    def _targets(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/json" % self.port, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return []

    async def open(self):
        self.ws = await websockets.connect(self.ws_url, max_size=64 * 1024 * 1024,
                                           ping_interval=None, open_timeout=20)

    async def cmd(self, method, **params):
        self.next_id += 1
        my = self.next_id
        await self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if msg.get("id") == my:
                assert "error" not in msg, msg
                return msg["result"]

    async def js(self, expr):
        r = await self.cmd("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")

    async def until(self, expr, pred, timeout=20, what="page state"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await self.js(expr)
            if pred(last):
                return last
            await asyncio.sleep(0.2)
        raise AssertionError("timed out waiting for %s: %s = %r" % (what, expr, last))

    async def close(self):
        if self.ws is not None:
            await self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def text(id_):
    return "document.getElementById(%r).textContent" % id_


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_monitor_page_in_chromium(make_herald, tmp_path):
    h = make_herald(**pubsub_config(admin={"token": TOKEN}))
    # the page itself needs no token (it holds no data); the data does
    st, hdrs, body = admin_request(h.admin_port, "/")
    assert st == 200 and hdrs["content-type"].startswith("text/html"), (st, hdrs)
    assert "src=" not in body and "href=" not in body, "the page must be self-contained"
    st, _, _ = admin_request(h.admin_port, "/stats")
    assert st == 401
    st, _, _ = admin_request(h.admin_port, "/events")
    assert st == 401

    async def go():
        b = Browser(tmp_path / "chromium")
        try:
            await b.open()
            await b.cmd("Page.enable")
            await b.cmd("Page.navigate", url="http://127.0.0.1:%d/#token=%s" % (h.admin_port, TOKEN))
            await b.until("document.body && document.body.getAttribute('data-polls')",
                          lambda v: v is not None and int(v) >= 2, what="two polls")
            assert await b.js(text("error")) == ""
            # the token left the address bar, and is kept for the session
            assert "token" not in await b.js("location.href")
            s = stats(h)
            assert await b.js(text("workers-expected")) == str(s["workers"]["expected"])
            assert await b.js(text("workers-running")) == str(s["workers"]["running"])
            assert await b.js(text("version")) == "v" + s["version"]
            assert await b.js(text("redis-state")) == "up"
            rows = await b.js("document.querySelectorAll('#workers tbody tr').length")
            assert rows == len(s["per_worker"]) == h.workers
            assert await b.js(text("conn-active")) == "0"

            # connections change: the page follows
            clients = [await open_client(h.url, token_for(h, sub="u%d" % i, tenant="acme"))
                       for i in range(3)]
            for c in clients:
                assert "result" in await c.subscribe("chat:busy")
            assert "result" in await clients[0].subscribe("chat:quiet")
            await b.until(text("conn-active"), lambda v: v == "3", what="3 connections")
            # this node, the cluster's nodes and the top channels
            node = clients[0].info["client"].split("-")[0]
            await b.until(text("node-id"), lambda v: v == node, what="the node id")
            await b.until("document.querySelector('#nodes tbody').textContent",
                          lambda v: v is not None and v.startswith(node), what="the node row")
            await b.until("Array.from(document.querySelectorAll('#top-channels tbody tr'))"
                          ".map(function (r) { return r.textContent; }).join(',')",
                          lambda v: v == "acmechat:busy3,acmechat:quiet1", what="the top channels")
            s = stats(h)
            assert s["cluster"]["node"] == node
            assert [(c["tenant"], c["channel"], c["subscribers"]) for c in s["cluster"]["top_channels"]] \
                == [("acme", "chat:busy", 3), ("acme", "chat:quiet", 1)], s["cluster"]
            assert [n["id"] for n in s["cluster"]["nodes"]] == [node]
            assert s["cluster"]["nodes"][0]["workers"] == h.workers
            s = stats(h)
            assert s["connections"]["active"] == 3
            await b.until("document.querySelector('#tenants tbody tr') && "
                          "document.querySelector('#tenants tbody tr').textContent",
                          lambda v: v == "acme3", what="the acme tenant row")
            assert await b.js(text("tenants-active")) == str(s["tenants"]["active"])
            assert int(await b.js(text("conn-accepted"))) <= s["connections"]["accepted"]
            png = base64.b64decode((await b.cmd("Page.captureScreenshot", format="png"))["data"])
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
            shot = tmp_path / "monitor.png"
            shot.write_bytes(png)
            art = os.environ.get("HERALD_TEST_ARTIFACTS")
            if art:
                os.makedirs(art, exist_ok=True)
                shutil.copy(shot, os.path.join(art, "monitor.png"))
            for c in clients:
                await c.close()
            await b.until(text("conn-active"), lambda v: v == "0", what="0 connections")
            # a reload shows up in the events list
            h.send_signal(__import__("signal").SIGHUP)
            await b.until(text("reloads-ok"), lambda v: v == "1", what="the reload count")
            await b.until("document.querySelector('#events tbody').textContent",
                          lambda v: "reload" in (v or ""), what="the reload event")
        finally:
            await b.close()
    run(go())


def test_monitor_asks_for_a_missing_token(make_herald, tmp_path):
    """Without the token the page says so instead of showing numbers."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed")
    h = make_herald(**pubsub_config(admin={"token": TOKEN}))
    r = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--user-data-dir=" + str(tmp_path / "p2"),
         "--virtual-time-budget=3000", "--dump-dom", "http://127.0.0.1:%d/" % h.admin_port],
        capture_output=True, timeout=90, stdin=subprocess.DEVNULL)
    dom = r.stdout.decode("utf-8", "replace")
    assert 'id="conn-active">-<' in dom, dom[:2000]
    assert "unauthorized" in dom, dom[:3000]
    assert '<form id="login">' in dom, dom[:3000]  # shown: no "hidden" left
