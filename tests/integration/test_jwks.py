"""Issue 15: JWK Sets. A file (auth.jwks_file) and a URL (auth.jwks_url)
served by a local HTTPS server on 127.0.0.1 with a test CA: keys in use,
rotation without a reload, an unknown kid refetched (rate-limited), the
endpoint failing or answering garbage (the last good set stays), and the
herald_jwks_* metrics."""

import http.server
import json
import os
import ssl
import subprocess
import threading
import time

import pytest

from harness import PUBSUB_CONFIG, admin_request, deep_merge, open_client, parse_metrics, run, wait_until
from keyutil import KeyDir


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeyDir(tmp_path_factory.mktemp("keys"), ["rsa", "rsa2", "p256", "ed", "ed2"])


class JwksServer:
    """HTTPS on 127.0.0.1 with a certificate from a throw-away CA. What it
    answers is set by the test: status, body."""

    def __init__(self, workdir):
        d = str(workdir)
        os.makedirs(d, exist_ok=True)
        self.ca = os.path.join(d, "ca.pem")
        key, csr, crt, cakey = (os.path.join(d, n) for n in ("srv.key", "srv.csr", "srv.pem", "ca.key"))
        ext = os.path.join(d, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\n")
        for cmd in (
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", cakey, "-out", self.ca, "-days", "2", "-subj", "/CN=herald test CA"],
            ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
            ["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", cakey,
             "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        self.status, self.body, self.requests = 200, b'{"keys":[]}', 0
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                srv.requests += 1
                body = srv.body
                self.send_response(srv.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "https://127.0.0.1:%d/.well-known/jwks.json" % self.port

    def serve(self, obj):
        self.status, self.body = 200, json.dumps(obj).encode()

    stopped = False

    def stop(self):
        self.stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()


async def connect_code(url, tok):
    """The connect reply: None when accepted, else the error code."""
    c = await open_client(url, do_connect=False)
    try:
        r = await c.connect(tok)
        return None if "result" in r else r["error"]["code"]
    finally:
        await c.close()


def until_connect(h, tok, want, timeout=15):
    """Retry a connect until it gives want (None = accepted)."""
    last = []

    def check():
        last[:] = [run(connect_code(h.url, tok))]
        return last[0] == want
    wait_until(check, timeout, interval=0.3, what="connect giving %r (last %r)" % (want, last))


def jwks_metrics(h):
    status, _, body = admin_request(h.admin_port, "/metrics")
    assert status == 200
    types, samples = parse_metrics(body)
    assert types["herald_jwks_refresh_total"] == "counter"
    out = {r: samples[("herald_jwks_refresh_total", (("result", r),))]
           for r in ("success", "fetch_error", "invalid")}
    out["keys"] = samples[("herald_jwks_keys", ())]
    return out


def test_jwks_file_and_unknown_kid(make_herald, keys, tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks([("ed", "e1"), ("p256", "p1")])))
    h = make_herald(**deep_merge(PUBSUB_CONFIG, {"auth": {
        "jwks_file": str(path), "jwks_min_refresh_s": 1}}))
    until_connect(h, keys.token("ed", "EdDSA", kid="e1"), None, timeout=5)
    assert run(connect_code(h.url, keys.token("p256", "ES256", kid="p1"))) is None
    # the JWK's kid binds the key: ed2's signature under kid e1 fails
    assert run(connect_code(h.url, keys.token("ed2", "EdDSA", kid="e1"))) == 401
    assert jwks_metrics(h)["keys"] == 2

    # rotation: e2 appears, e1 goes; the unknown kid makes the master
    # re-read the file (no reload)
    path.write_text(json.dumps(keys.jwks([("ed2", "e2")])))
    until_connect(h, keys.token("ed2", "EdDSA", kid="e2"), None)
    assert run(connect_code(h.url, keys.token("ed", "EdDSA", kid="e1"))) == 401
    # a broken file keeps the set in use
    path.write_text("{not json")
    before = jwks_metrics(h)["invalid"]
    assert run(connect_code(h.url, keys.token("ed", "EdDSA", kid="zz"))) == 401
    wait_until(lambda: jwks_metrics(h)["invalid"] > before, 10, what="the invalid file counted")
    assert run(connect_code(h.url, keys.token("ed2", "EdDSA", kid="e2"))) is None
    assert jwks_metrics(h)["keys"] == 1


def test_jwks_url_rotation_failures_and_garbage(make_herald, keys, tmp_path):
    srv = JwksServer(tmp_path / "tls")
    try:
        srv.serve(keys.jwks([("rsa", "r1")]))
        h = make_herald(**deep_merge(PUBSUB_CONFIG, {"auth": {
            "jwks_url": srv.url, "jwks_ca_file": srv.ca,
            "jwks_min_refresh_s": 1, "jwks_refresh_s": 600, "jwks_timeout_ms": 2000}}))
        until_connect(h, keys.token("rsa", "RS256", kid="r1"), None)
        m = jwks_metrics(h)
        assert m["success"] >= 1 and m["keys"] == 1, m

        # rotation: the IdP publishes r2 and drops r1; a token with r2 is
        # refused once (unknown kid), the master refetches, then it works
        srv.serve(keys.jwks([("rsa2", "r2")]))
        tok2 = keys.token("rsa2", "PS256", kid="r2")
        until_connect(h, tok2, None)
        until_connect(h, keys.token("rsa", "RS256", kid="r1"), 401)

        # unknown kids do not hammer the IdP: at most one fetch a second
        n0 = srv.requests
        t0 = time.monotonic()
        for i in range(8):
            assert run(connect_code(h.url, keys.token("rsa", "RS256", kid="nope%d" % i))) == 401
        time.sleep(1.2)
        elapsed = time.monotonic() - t0
        assert srv.requests - n0 <= elapsed + 2, (srv.requests - n0, elapsed)

        # endpoint failing: 500, then garbage; the last good set stays
        for status, body, counter in ((500, b"oops", "fetch_error"),
                                      (200, b"<html>not json</html>", "invalid"),
                                      (200, b'{"keys":[{"kty":"RSA","n":"!!","e":"AQAB"}]}', "invalid")):
            before = jwks_metrics(h)[counter]
            srv.status, srv.body = status, body
            assert run(connect_code(h.url, keys.token("rsa", "RS256", kid="x-%d" % status))) == 401
            wait_until(lambda: jwks_metrics(h)[counter] > before, 10, what=counter + " counted")
            assert run(connect_code(h.url, tok2)) is None
        # endpoint down altogether
        srv.stop()
        before = jwks_metrics(h)["fetch_error"]
        time.sleep(1.1)
        assert run(connect_code(h.url, keys.token("rsa", "RS256", kid="down"))) == 401
        wait_until(lambda: jwks_metrics(h)["fetch_error"] > before, 10, what="the failed fetch counted")
        assert run(connect_code(h.url, tok2)) is None
        assert jwks_metrics(h)["keys"] == 1
        assert h.find_log(lambda l: "JWK Set fetch" in l.get("msg", "") and "failed" in l.get("msg", ""),
                          what="the failed fetch logged")
    finally:
        if not srv.stopped:
            srv.stop()


def test_jwks_url_needs_the_ca(make_herald, keys, tmp_path):
    """Without the test CA the server's certificate does not verify: no
    keys, a fetch error, tokens refused."""
    srv = JwksServer(tmp_path / "tls")
    try:
        srv.serve(keys.jwks([("rsa", "r1")]))
        h = make_herald(**deep_merge(PUBSUB_CONFIG, {"auth": {"jwks_url": srv.url}}))
        wait_until(lambda: jwks_metrics(h)["fetch_error"] >= 1, 10, what="the TLS failure counted")
        assert run(connect_code(h.url, keys.token("rsa", "RS256", kid="r1"))) == 401
        assert jwks_metrics(h)["keys"] == 0
    finally:
        srv.stop()


def test_jwks_added_and_removed_by_reload(make_herald, keys, tmp_path):
    """auth.jwks_file applies in place: a reload that adds it gives the
    running workers the keys (no worker replaced), one that removes it
    takes them away again."""
    import signal
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks([("ed", "e1")])))
    h = make_herald(**deep_merge(PUBSUB_CONFIG, {"auth": {"jwks_min_refresh_s": 1}}))
    tok = keys.token("ed", "EdDSA", kid="e1")
    assert run(connect_code(h.url, tok)) == 401
    pids = sorted(h.worker_pids())

    cfg = deep_merge(h.config, {"auth": {"jwks_file": str(path)}})
    h.write_config(cfg)
    h.send_signal(signal.SIGHUP)
    until_connect(h, tok, None)
    assert sorted(h.worker_pids()) == pids, "workers were replaced"

    cfg = deep_merge(h.config, {"auth": {"jwks_file": None}})
    h.write_config(cfg)
    h.send_signal(signal.SIGHUP)
    until_connect(h, tok, 401)
    assert sorted(h.worker_pids()) == pids
