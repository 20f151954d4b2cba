"""deploy/nginx/herald.conf and deploy/haproxy/herald.cfg in front of a real
herald: TLS termination with a self-signed certificate, WebSocket proxying,
the HTTP publish API, the forwarded headers, and the admin port kept out.

The shipped files are used as they are, except for what has to differ on a
test box (ports, certificate paths, pid/log/chroot/user settings). Every
rewrite must match the shipped text a known number of times, so a file
that drifts from what the test expects fails here instead of being
silently tested in a different shape. The proxies run in the foreground
in a temp dir, each in its own process group, and are killed at teardown.

Needs the Debian packages nginx, haproxy and openssl.
"""

import asyncio
import http
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import websockets

import harness
from harness import free_port, recv_messages, wait_until

DEPLOY = os.path.join(harness.REPO_ROOT, "deploy")
NGINX_CONF = os.path.join(DEPLOY, "nginx", "herald.conf")
HAPROXY_CFG = os.path.join(DEPLOY, "haproxy", "herald.cfg")

API_KEY = "deploy-test-api-key-0123456789"
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def need(tool, package):
    path = shutil.which(tool, path=SBIN_PATH)
    if path is None:
        pytest.fail("%s not found: apt-get install %s" % (tool, package))
    return path


def rewrite(text, rules, what):
    """Apply (regex, replacement, expected_count) rules to text; fail when a
    rule does not match exactly expected_count times."""
    for pattern, repl, count in rules:
        text, n = re.subn(pattern, repl, text, flags=re.M)
        assert n == count, ("%s: rewrite %r matched %d times, expected %d; did the "
                            "shipped file change?" % (what, pattern, n, count))
    return text


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    """A self-signed EC certificate for localhost / 127.0.0.1:
    (cert.pem, key.pem, combined.pem for HAProxy)."""
    openssl = need("openssl", "openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key, both = d / "cert.pem", d / "key.pem", d / "combined.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30)
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    return str(cert), str(key), str(both)


def client_ssl(cert):
    """A client context that trusts only our certificate and verifies the
    host name, as a browser would."""
    ctx = ssl.create_default_context(cafile=cert)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


class Proxy:
    """nginx or HAProxy, foreground, in its own process group."""

    def __init__(self, kind, workdir, tls, backend_port, admin_port,
                 proxy_protocol=True, second=None):
        self.kind = kind
        # (backend port, admin port) of a second node: the shipped files'
        # commented second server line, made live
        self.second = second
        # False: drop HAProxy's send-proxy-v2, for a stand-in backend that
        # does not speak the PROXY protocol
        self.proxy_protocol = proxy_protocol
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self.out_path = os.path.join(self.dir, "proxy.out")
        cert, key, both = tls
        if kind == "nginx":
            self.argv = self._nginx(cert, key, backend_port)
        else:
            self.argv = self._haproxy(both, backend_port, admin_port)

    # -- config --------------------------------------------------------------

    def _nginx(self, cert, key, backend_port):
        nginx = need("nginx", "nginx")
        with open(NGINX_CONF) as f:
            site = f.read()
        site = rewrite(site, [
            (r"^(\s*)listen 443 ssl;", r"\1listen 127.0.0.1:%d ssl;" % self.port, 1),
            (r"^\s*listen \[::\]:443 ssl;\n", "", 1),
            (r"^(\s*ssl_certificate)\s+/etc/ssl/herald/fullchain\.pem;", r"\1 %s;" % cert, 1),
            (r"^(\s*ssl_certificate_key)\s+/etc/ssl/herald/privkey\.pem;", r"\1 %s;" % key, 1),
            (r"^(\s*server) 127\.0\.0\.1:8080 ", r"\g<1> 127.0.0.1:%d " % backend_port, 1),
        ] + ([(r"^(\s*)# (server) 10\.0\.0\.12:8080 ",
               r"\1\2 127.0.0.1:%d " % self.second[0], 1)] if self.second else []),
            NGINX_CONF)
        # Nothing in the site file may point at herald's admin port.
        assert not re.search(r"^\s*[^#\s].*:9090", site, re.M), site
        with open(os.path.join(self.dir, "herald.conf"), "w") as f:
            f.write(site)
        tmp = self.dir
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(tmp, sub), exist_ok=True)
            os.chmod(os.path.join(tmp, sub), 0o777)
        main = "\n".join([
            # As root, nginx's workers would switch to "nobody", which cannot
            # read into our temp dir; the user directive is ignored otherwise.
            "user root;" if os.geteuid() == 0 else "",
            "worker_processes 1;",
            "error_log %s/error.log info;" % tmp,
            "events { worker_connections 1024; }",
            "http {",
            "    access_log %s/access.log;" % tmp,
            "    client_body_temp_path %s/body;" % tmp,
            "    proxy_temp_path %s/proxy;" % tmp,
            "    fastcgi_temp_path %s/fastcgi;" % tmp,
            "    uwsgi_temp_path %s/uwsgi;" % tmp,
            "    scgi_temp_path %s/scgi;" % tmp,
            "    include %s/herald.conf;" % tmp,
            "}",
            ""])
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(main)
        self.check_argv = [nginx, "-t", "-p", tmp, "-c", conf, "-e", os.path.join(tmp, "error.log"),
                           "-g", "pid %s/nginx.pid;" % tmp]
        return [nginx, "-p", tmp, "-c", conf, "-e", os.path.join(tmp, "error.log"),
                "-g", "daemon off; master_process on; pid %s/nginx.pid;" % tmp]

    def _haproxy(self, pem, backend_port, admin_port):
        haproxy = need("haproxy", "haproxy")
        with open(HAPROXY_CFG) as f:
            cfg = f.read()
        self.stats_sock = os.path.join(self.dir, "admin.sock")
        cfg = rewrite(cfg, [
            # host-specific global settings: no chroot, no user switch, no
            # daemon, logs to stdout, the stats socket in our dir
            (r"^\s*chroot .*\n", "", 1),
            (r"^\s*(user|group) haproxy\n", "", 2),
            (r"^\s*daemon\n", "", 1),
            (r"^(\s*)log /dev/log local0$", r"\1log stdout format raw local0 info", 1),
            (r"^(\s*stats socket) /run/haproxy/admin\.sock ", r"\1 %s " % self.stats_sock, 1),
            # a test box has a low fd limit
            (r"^(\s*maxconn) 200000$", r"\1 2000", 1),
            (r"^(\s*bind) :::443 v4v6 ssl crt /etc/haproxy/certs/herald\.pem ",
             r"\1 127.0.0.1:%d ssl crt %s " % (self.port, pem), 1),
            (r"^(\s*server herald1) 127\.0\.0\.1:8080 check port 9090 send-proxy-v2$",
             r"\1 127.0.0.1:%d check port %d%s"
             % (backend_port, admin_port, " send-proxy-v2" if self.proxy_protocol else ""), 1),
        ] + ([(r"^(\s*)# (server herald2) 10\.0\.0\.12:8080 check port 9090 send-proxy-v2$",
               r"\1\2 127.0.0.1:%d check port %d send-proxy-v2" % self.second, 1)]
             if self.second else []), HAPROXY_CFG)
        path = os.path.join(self.dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        self.check_argv = [haproxy, "-c", "-f", path]
        return [haproxy, "-db", "-f", path]

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout=15):
        chk = subprocess.run(self.check_argv, capture_output=True, text=True, timeout=30)
        assert chk.returncode == 0, ("%s config check failed:\n%s%s"
                                     % (self.kind, chk.stdout, chk.stderr))
        out = open(self.out_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()

        def listening():
            assert self.proc.poll() is None, "%s exited with %s\n%s" % (
                self.kind, self.proc.returncode, self.diag())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False
        wait_until(listening, timeout, what="%s to listen on %d" % (self.kind, self.port))
        return self

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        # workers (nginx) may outlive a master killed hard: take the group
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def diag(self):
        parts = []
        for name in ("proxy.out", "error.log"):
            p = os.path.join(self.dir, name)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    parts.append("--- %s %s ---\n%s" % (self.kind, name, f.read()[-3000:]))
        return "\n".join(parts)

    def haproxy_server_status(self, server="herald1"):
        """(status, check_status) of backend herald / server herald1 from
        the stats socket, e.g. ("UP", "L7OK"); None while HAProxy has not
        made the socket yet (it binds its frontend first)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            try:
                s.connect(self.stats_sock)
            except (FileNotFoundError, ConnectionRefusedError):
                return None
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "herald" and row.get("svname") == server:
                return row.get("status"), row.get("check_status")
        return None


@pytest.fixture
def make_proxy(tmp_path, tls_cert, request):
    made = []

    def make(kind, backend_port, admin_port, proxy_protocol=True, second=None):
        p = Proxy(kind, tmp_path / ("%s%d" % (kind, len(made))), tls_cert,
                  backend_port, admin_port, proxy_protocol, second)
        made.append(p)
        return p.start()

    yield make
    for p in made:
        p.stop()
        # captured: pytest shows it only when the test failed
        print(p.diag())


def pubsub_herald(make_herald, kind, **over):
    """herald set up as docs/operations.md says for each proxy: behind
    HAProxy a listener with proxy_protocol (send-proxy-v2) next to the
    plain one the harness checks readiness on; behind nginx, nginx's
    address in security.trusted_proxies. Returns (herald, backend port)."""
    timeouts = dict({"shutdown_ms": 400}, **over.pop("timeouts", {}))
    h = make_herald(
        start=False,
        timeouts=timeouts,
        api={"key": API_KEY},
        namespaces={"default": {"publish": True, "anonymous": True}}, **over)
    backend = h.port
    if kind == "haproxy":
        backend = free_port()
        h.config["listen"] = [
            {"address": "127.0.0.1", "port": h.port},
            {"address": "127.0.0.1", "port": backend, "proxy_protocol": True}]
    else:
        h.config.setdefault("security", {})["trusted_proxies"] = ["127.0.0.1"]
    h.write_config()
    h.start()
    return h, backend


def wss_connect(url, ctx, extra_headers=None, source=None):
    kw = {"local_addr": (source, 0)} if source else {}
    return websockets.connect(url, ssl=ctx, subprotocols=[harness.SUBPROTOCOL],
                              open_timeout=10, close_timeout=5, ping_interval=None,
                              extra_headers=extra_headers, **kw)


async def send_cmd(ws, cmd_id, method, params):
    await ws.send(json.dumps({"id": cmd_id, "method": method, "params": params}))


async def wait_reply(ws, cmd_id, pushes, timeout=10):
    """The reply to cmd_id; pushes that arrive first are appended to pushes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        assert left > 0, "no reply to command %d" % cmd_id
        for m in await recv_messages(ws, 1, timeout=left):
            if "push" in m:
                pushes.append(m["push"])
            elif m.get("id") == cmd_id:
                return m
            else:
                raise AssertionError("unexpected message %r" % (m,))


async def wait_push(ws, pushes, offset, timeout=10):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(p.get("pub", {}).get("offset") == offset for p in pushes):
        left = deadline - loop.time()
        assert left > 0, "no push with offset %d; have %r" % (offset, pushes)
        for m in await recv_messages(ws, 1, timeout=left):
            assert "push" in m, m
            pushes.append(m["push"])
    return [p for p in pushes if p.get("pub", {}).get("offset") == offset][0]


def https_post(url, body, ctx, headers):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers=dict(headers, **{"Content-Type": "application/json"}))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def https_get(url, ctx):
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_deploy_proxy_wss_subscribe_and_publish(kind, make_herald, make_proxy, tls_cert):
    herald, backend = pubsub_herald(make_herald, kind)
    proxy = make_proxy(kind, backend, herald.admin_port)
    ctx = client_ssl(tls_cert[0])
    base = "127.0.0.1:%d" % proxy.port
    chan = "deploy-%s" % kind

    if kind == "haproxy":
        # the health check against herald's /health (admin port) passes
        wait_until(lambda: proxy.haproxy_server_status() == ("UP", "L7OK"), 10,
                   interval=0.1, what="haproxy health check L7OK")

    async def go():
        async with wss_connect("wss://%s/" % base, ctx) as sub, \
                wss_connect("wss://%s/" % base, ctx) as pub:
            assert sub.subprotocol == harness.SUBPROTOCOL
            pushes = []
            await send_cmd(sub, 1, "subscribe", {"channel": chan})
            r = await wait_reply(sub, 1, pushes)
            assert "result" in r, r
            start = r["result"]["offset"]

            # publish over a second wss:// connection through the proxy
            await send_cmd(pub, 2, "publish", {"channel": chan, "data": {"via": "wss"}})
            r = await wait_reply(pub, 2, [])
            assert r.get("result", {}).get("offset") == start + 1, r
            p = await wait_push(sub, pushes, start + 1)
            assert p["channel"] == chan and p["pub"]["data"] == {"via": "wss"}, p

            # publish through the HTTP API over https:// through the proxy
            loop = asyncio.get_running_loop()
            status, body = await loop.run_in_executor(None, lambda: https_post(
                "https://%s/api/publish" % base, {"channel": chan, "data": {"via": "api"}},
                ctx, {"Authorization": "apikey " + API_KEY}))
            assert status == 200, (status, body)
            assert json.loads(body)["result"]["offset"] == start + 2, body
            p = await wait_push(sub, pushes, start + 2)
            assert p["pub"]["data"] == {"via": "api"}, p
    harness.run(go())

    # The admin server stays private: what the proxy serves on /metrics,
    # /health and /stats is not herald's admin output.
    for path in ("/metrics", "/health", "/stats"):
        status, body = https_get("https://%s%s" % (base, path), ctx)
        assert "herald_build_info" not in body and '"workers"' not in body, (path, status, body[:300])

    # Plain HTTP on the TLS port is refused, never proxied.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.settimeout(5)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        assert b'"status"' not in data, data[:300]


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_deploy_proxy_forwarded_headers(kind, make_proxy, tls_cert):
    """What the backend sees of a wss:// upgrade through the proxy: the
    upgrade itself, the client address in X-Forwarded-For (a spoofed one
    from the client replaced, not passed on), X-Forwarded-Proto https. A
    stand-in backend (websockets server) records the request headers."""
    backend_port = free_port()
    ctx = client_ssl(tls_cert[0])
    seen = {}

    async def health(path, headers):
        # stands in for herald's admin /health (HAProxy's health check)
        if path == "/health":
            return http.HTTPStatus.OK, [("Content-Type", "application/json")], b'{"status":"ok"}\n'
        return None

    async def handler(ws, path=None):
        seen.update({k.lower(): v for k, v in ws.request_headers.raw_items()})
        seen["_xff_all"] = ws.request_headers.get_all("X-Forwarded-For")
        await ws.send("hello")
        await ws.wait_closed()

    async def go():
        async with websockets.serve(handler, "127.0.0.1", backend_port,
                                    process_request=health):
            proxy = make_proxy(kind, backend_port, backend_port, proxy_protocol=False)
            try:
                if kind == "haproxy":
                    # its health check must reach this loop's /health first
                    deadline = time.monotonic() + 10
                    while proxy.haproxy_server_status() != ("UP", "L7OK"):
                        assert time.monotonic() < deadline, proxy.diag()
                        await asyncio.sleep(0.05)
                async with wss_connect("wss://127.0.0.1:%d/some/path" % proxy.port, ctx,
                                       extra_headers={"X-Forwarded-For": "6.6.6.6",
                                                      "X-Forwarded-Proto": "http"}) as ws:
                    assert await asyncio.wait_for(ws.recv(), 10) == "hello"
            finally:
                proxy.stop()
    harness.run(go())

    assert seen.get("upgrade", "").lower() == "websocket", seen
    assert "upgrade" in seen.get("connection", "").lower(), seen
    assert seen["_xff_all"] == ["127.0.0.1"], seen
    assert seen.get("x-forwarded-proto") == "https", seen
    assert seen.get("x-real-ip") == "127.0.0.1", seen


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_deploy_proxy_passes_client_address(kind, make_herald, make_proxy, tls_cert):
    """With the shipped proxy configs (HAProxy: send-proxy-v2; nginx:
    X-Real-IP / X-Forwarded-For, believed from trusted_proxies), herald
    counts connections per client address, not per proxy: clients on
    127.0.0.2 and 127.0.0.3 (the proxy is on 127.0.0.1) with
    connections_per_ip 1 get one connection each, a second one from
    127.0.0.2 is refused, and a spoofed X-Forwarded-For changes nothing.
    The log names the client's address."""
    herald, backend = pubsub_herald(make_herald, kind, limits={"connections_per_ip": 1},
                                    log={"level": "debug"})
    proxy = make_proxy(kind, backend, herald.admin_port)
    if kind == "haproxy":
        wait_until(lambda: proxy.haproxy_server_status() == ("UP", "L7OK"), 10,
                   interval=0.1, what="haproxy health check L7OK")
    ctx = client_ssl(tls_cert[0])
    url = "wss://127.0.0.1:%d/" % proxy.port

    async def go():
        async with wss_connect(url, ctx, source="127.0.0.2",
                               extra_headers={"X-Forwarded-For": "198.51.100.1"}) as a:
            await send_cmd(a, 1, "ping", {})
            assert "result" in await wait_reply(a, 1, [])
            # a second one from the same client: over its limit, however
            # it dresses up its headers
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
                async with wss_connect(url, ctx, source="127.0.0.2",
                                       extra_headers={"X-Forwarded-For": "198.51.100.2",
                                                      "X-Real-IP": "198.51.100.3"}):
                    pass
            assert e.value.status_code == 503
            async with wss_connect(url, ctx, source="127.0.0.3") as b:
                await send_cmd(b, 2, "connect", {"token": "not.a.token"})
                r = await wait_reply(b, 2, [])
                assert "error" in r, r
    harness.run(go())
    herald.find_log(lambda l: "127.0.0.3" in str(l.get("msg", "")), 10,
                    what="a log line naming the client 127.0.0.3")


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_deploy_proxy_stop_one_node_under_load(kind, make_herald, make_proxy, tls_cert):
    """Two nodes behind the shipped proxy config; one is stopped with
    SIGTERM while clients connect at ~25/s. Its /health fails first for
    timeouts.drain_health_ms while it still serves (HAProxy's check takes
    it out), then it drains and exits; what still reaches it is retried on
    the other node (retry-on/redispatch, proxy_next_upstream). Not one
    connect may fail. (Before: one 502 and one 503 per run with HAProxy.)"""
    drain_health = {"drain_health_ms": 3000}
    a, a_backend = pubsub_herald(make_herald, kind, timeouts=dict(drain_health))
    b, b_backend = pubsub_herald(make_herald, kind, timeouts=dict(drain_health))
    assert a.config["timeouts"]["drain_health_ms"] == 3000
    proxy = make_proxy(kind, a_backend, a.admin_port, second=(b_backend, b.admin_port))
    ctx = client_ssl(tls_cert[0])
    url = "wss://127.0.0.1:%d/" % proxy.port
    if kind == "haproxy":
        for srv in ("herald1", "herald2"):
            wait_until(lambda: proxy.haproxy_server_status(srv) == ("UP", "L7OK"), 15,
                       interval=0.1, what="haproxy %s UP" % srv)

    failures, ok = [], [0]
    health_seen = []

    async def one():
        try:
            async with wss_connect(url, ctx) as ws:
                assert ws.subprotocol == harness.SUBPROTOCOL
                await send_cmd(ws, 1, "subscribe", {"channel": "lb-stop"})
                r = await wait_reply(ws, 1, [])
                assert "result" in r, r
            ok[0] += 1
        except websockets.exceptions.ConnectionClosed as e:
            # closed by the draining node after the handshake: the client
            # was served and is told to reconnect, not refused
            if e.rcvd is not None and e.rcvd.code in (1001, 1012):
                ok[0] += 1
            else:
                failures.append(repr(e))
        except Exception as e:  # noqa: BLE001 - every failed connect counts
            failures.append(repr(e))

    async def go():
        loop = asyncio.get_running_loop()
        tasks = []
        stop_at = loop.time() + 1.0
        end = stop_at + 3.0 + 0.4 + 2.5  # health phase + drain + after
        stopped = False
        while loop.time() < end:
            if not stopped and loop.time() >= stop_at:
                a.send_signal(signal.SIGTERM)
                stopped = True
            if stopped and loop.time() < stop_at + 2.0 and not any(
                    st == 503 for st, _ in health_seen):
                st, body = await loop.run_in_executor(None, admin_health, a.admin_port)
                if st is not None:
                    health_seen.append((st, body))
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(0.04)
        await asyncio.gather(*tasks)

    asyncio.run(go())
    a.proc.wait(10)
    a.expect_clean_exit = True
    assert a.proc.returncode == 0, a.proc.returncode
    assert not failures, "%d of %d connects failed: %s" % (
        len(failures), len(failures) + ok[0], failures[:5])
    # during the health phase /health failed with the reason
    assert health_seen and health_seen[-1][0] == 503, health_seen
    assert json.loads(health_seen[-1][1])["status"] == "draining", health_seen
    assert ok[0] >= 100, ok[0]
    assert "/health reports draining" in a.log_text(), \
        "no health phase in the log"


def admin_health(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, None
