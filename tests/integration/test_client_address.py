"""Real client addresses behind proxies (#16 item 15).

A listener with "proxy_protocol": true takes the client address from the
PROXY header (v1 text or v2 binary, as HAProxy sends them) and refuses a
connection without one; a listener without it refuses a PROXY header
(lws sees a bad request line). X-Forwarded-For and X-Real-IP are believed
only from security.trusted_proxies. What shows that the address is used:
limits.connections_per_ip counts it, and the log names it."""

import base64
import json
import os
import socket
import struct
import time

from harness import (SLACK, admin_request, api_request, free_port, open_client,
                     parse_metrics, pubsub_config, run, token_for, wait_until)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, port):
    fam = "TCP6" if ":" in src else "TCP4"
    dst = "::1" if ":" in src else "127.0.0.1"
    return ("PROXY %s %s %s 40000 %d\r\n" % (fam, src, dst, port)).encode()


def v2(src, port, local=False):
    if local:
        return SIG + bytes([0x20, 0x00, 0, 0])
    if ":" in src:
        addrs = (socket.inet_pton(socket.AF_INET6, src)
                 + socket.inet_pton(socket.AF_INET6, "::1")
                 + struct.pack("!HH", 40000, port))
        fam = 0x21
    else:
        addrs = (socket.inet_aton(src) + socket.inet_aton("127.0.0.1")
                 + struct.pack("!HH", 40000, port))
        fam = 0x11
    tlv = b"\x01\x00\x02h1"          # PP2_TYPE_ALPN, as proxy-v2-options may add
    body = addrs + tlv
    return SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def upgrade(port, prefix=b"", headers=()):
    """Open a TCP connection, send prefix then an upgrade request; return
    (status or None when closed without an answer, socket)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLACK)
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.v1\r\n"
           % key)
    for h in headers:
        req += h + "\r\n"
    s.sendall(prefix + (req + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            chunk = b""
        if not chunk:
            s.close()
            return None, None
        data += chunk
    return int(data.split(b" ", 2)[1]), s


def rejected(h, reason):
    status, _, body = admin_request(h.admin_port, "/metrics")
    assert status == 200
    _, samples = parse_metrics(body)
    return sum(v for (n, lab), v in samples.items()
               if n == "herald_connections_rejected_total" and ("reason", reason) in lab)


def proxied_herald(make_herald, **over):
    pp = free_port()
    h = make_herald(start=False, workers=1, **over)
    h.config["listen"] = [{"address": "127.0.0.1", "port": h.port},
                          {"address": "127.0.0.1", "port": pp, "proxy_protocol": True}]
    h.write_config()
    h.start()
    return h, pp


def test_proxy_v1_and_v2_address_counts_per_ip(make_herald):
    """Two connections from one client address (as the PROXY header says)
    fill connections_per_ip 2; a third from it gets 503, one from another
    address is accepted: all of them come from 127.0.0.1."""
    h, pp = proxied_herald(make_herald, limits={"connections_per_ip": 2})
    held = []
    for hdr in (v1("203.0.113.7", pp), v2("203.0.113.7", pp)):
        st, s = upgrade(pp, hdr)
        assert st == 101, st
        held.append(s)
    st, s = upgrade(pp, v2("203.0.113.7", pp))
    assert st == 503, st
    s.close()
    for hdr in (v1("2001:db8::7", pp), v2("198.51.100.9", pp),
                v2("", pp, local=True)):   # LOCAL: the peer's own address
        st, s = upgrade(pp, hdr)
        assert st == 101, (hdr, st)
        held.append(s)
    # the plain listener is unaffected: 127.0.0.1 has one count (LOCAL)
    st, s = upgrade(h.port)
    assert st == 101, st
    held.append(s)
    for s in held:
        s.close()


def test_proxy_address_in_logs(make_herald):
    h, pp = proxied_herald(make_herald, auth={"allow_anonymous": False},
                           log={"level": "debug"})
    st, s = upgrade(pp, v1("203.0.113.44", pp))
    assert st == 101
    # a connect with a bad token is logged with the client's address
    payload = b'{"id":1,"method":"connect","params":{"token":"x.y.z"}}'
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(frame)
    h.find_log(lambda l: "203.0.113.44" in str(l.get("msg", "")), 10 * SLACK,
               what="a log line naming 203.0.113.44")
    s.close()


def test_close_line_names_each_clients_address(make_herald):
    """herald keeps a client's address once, binary, and formats it when a
    line shows it: the abnormal-close line of each client names the
    address it came from, whether a PROXY header (v1 IPv6, v2 IPv4), a
    trusted proxy's X-Forwarded-For or the TCP peer gave it."""
    h, pp = proxied_herald(make_herald,
                           log={"level": "info", "format": "json"},
                           security={"trusted_proxies": ["127.0.0.2/32"]})
    held = []
    for port, prefix, headers in (
            (pp, v1("2001:db8::44", pp), ()),
            (pp, v2("203.0.113.9", pp), ()),
            (h.port, b"", ["X-Forwarded-For: 198.51.100.1"]),  # untrusted
            (pp, v2("127.0.0.2", pp), ["X-Forwarded-For: 198.51.100.2"])):
        st, s = upgrade(port, prefix, headers)
        assert st == 101, (prefix, headers, st)
        held.append(s)
    for s in held:
        s.close()                            # no close frame: 1006, logged
    want = {"2001:db8::44", "203.0.113.9", "127.0.0.1", "198.51.100.2"}

    def addrs():
        return {l.get("addr") for l in h.log_lines()
                if l.get("msg") == "abnormal close"}
    wait_until(lambda: len(addrs()) >= len(want), 10 * SLACK,
               what="four abnormal close lines")
    assert addrs() == want, addrs()


def test_api_shows_client_address_when_exposed(make_herald):
    """/api/connections formats each connection's address from the same
    binary table the logs read (api.expose_client_ips): the PROXY
    header's IPv6 client and a plain IPv4 peer."""
    h, pp = proxied_herald(make_herald,
                           **pubsub_config(api={"expose_client_ips": True}))
    st, s = upgrade(pp, v1("2001:db8::45", pp))
    assert st == 101, st
    payload = json.dumps({"id": 1, "method": "connect",
                          "params": {"token": token_for(h, sub="v6")}}).encode()
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0xfe]) + struct.pack("!H", len(payload)) + mask
              + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    async def go():
        c = await open_client(h.url, token_for(h, sub="v4"))

        def rows():
            st, body = api_request(h.port, "/api/connections", {})
            assert st == 200, body
            return {r["user"]: r.get("ip") for r in body["result"]["connections"]}
        wait_until(lambda: len(rows()) == 2, 10 * SLACK, what="two connections")
        assert rows() == {"v6": "2001:db8::45", "v4": "127.0.0.1"}, rows()
        await c.close()
    run(go())
    s.close()


def test_proxy_listener_refuses_connection_without_header(make_herald):
    h, pp = proxied_herald(make_herald)
    before = rejected(h, "proxy_protocol")
    st, s = upgrade(pp)                       # a plain upgrade, no header
    assert st is None, st
    st, s = upgrade(pp, b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n")  # malformed
    assert st is None, st
    wait_until(lambda: rejected(h, "proxy_protocol") >= before + 2, 10 * SLACK,
               what="proxy_protocol rejections counted")


def stalled(port, source):
    """A connection from source that never sends its PROXY header."""
    return socket.create_connection(("127.0.0.1", port), timeout=10 * SLACK,
                                    source_address=(source, 0))


def read_all(s):
    """Everything s receives until the peer closes (or resets) it."""
    data = b""
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data
        data += chunk


def test_proxy_header_waits_count_against_limits(make_herald):
    """Connections still owing their PROXY header hold a count of their
    peer's connections_per_ip (and of the node limit) like any connection
    before its handshake: one peer holds at most the limit of them, the
    next is refused at once with 503, each one held is closed within
    timeouts.handshake_ms, and then its counts are back. A client through
    another peer gets in meanwhile."""
    hs_ms = 2000
    h, pp = proxied_herald(make_herald, limits={"connections_per_ip": 3},
                           timeouts={"handshake_ms": hs_ms})
    ip_before = rejected(h, "ip_limit")
    pp_before = rejected(h, "proxy_protocol")
    t0 = time.monotonic()
    held = [stalled(pp, "127.0.0.2") for _ in range(3)]
    over = stalled(pp, "127.0.0.2")
    assert read_all(over).startswith(b"HTTP/1.1 503 "), "not refused at the limit"
    over.close()
    assert rejected(h, "ip_limit") == ip_before + 1
    # a well-behaved proxy (another peer) still gets its client in
    st, ok = upgrade(pp, v1("203.0.113.8", pp))
    assert st == 101, st
    # every stalled one is closed by the handshake deadline, unanswered
    for s in held:
        assert read_all(s) == b""
        s.close()
    assert time.monotonic() - t0 < hs_ms / 1000 + 5 * SLACK
    wait_until(lambda: rejected(h, "proxy_protocol") >= pp_before + 3,
               10 * SLACK, what="the stalled connections counted")
    # their counts were given back: the peer may hold three again, and
    # only a fourth is refused
    held = [stalled(pp, "127.0.0.2") for _ in range(3)]
    over = stalled(pp, "127.0.0.2")
    assert read_all(over).startswith(b"HTTP/1.1 503 ")
    assert rejected(h, "ip_limit") == ip_before + 2
    for s in held + [over, ok]:
        s.close()


def test_plain_listener_refuses_proxy_header(make_herald):
    """A PROXY header where none is configured is not believed: the
    request is refused, never upgraded."""
    h = make_herald(workers=1, limits={"connections_per_ip": 1})
    for hdr in (v1("203.0.113.7", h.port), v2("203.0.113.7", h.port)):
        st, s = upgrade(h.port, hdr)
        assert st != 101, st
        if s:
            s.close()
    st, s = upgrade(h.port)
    assert st == 101          # and nothing of the above held a count
    s.close()


def test_forwarded_headers_from_trusted_proxy(make_herald):
    h = make_herald(workers=1, limits={"connections_per_ip": 1},
                    security={"trusted_proxies": ["127.0.0.0/8"]})
    held = []
    st, s = upgrade(h.port, headers=["X-Forwarded-For: 198.51.100.1"])
    assert st == 101
    held.append(s)
    # the client's earlier claims (left of the hop the proxy added) are
    # not believed: the rightmost untrusted address is the client
    st, s = upgrade(h.port, headers=["X-Forwarded-For: 198.51.100.99, 198.51.100.1"])
    assert st == 503, st
    st, s = upgrade(h.port, headers=["X-Forwarded-For: 198.51.100.1, 127.0.0.5"])
    assert st == 503, st   # 127.0.0.5 is a trusted hop, skipped
    st, s = upgrade(h.port, headers=["X-Real-IP: 198.51.100.2"])
    assert st == 101
    held.append(s)
    st, s = upgrade(h.port, headers=["X-Real-IP: 198.51.100.2"])
    assert st == 503, st
    st, s = upgrade(h.port, headers=["X-Forwarded-For: 2001:db8::1"])
    assert st == 101
    held.append(s)
    # without a header: the proxy's own request (health checks) passes
    st, s = upgrade(h.port)
    assert st == 101
    held.append(s)
    for s in held:
        s.close()


def test_forwarded_headers_from_untrusted_peer_ignored(make_herald):
    """127.0.0.1 is not a trusted proxy here: whatever X-Forwarded-For or
    X-Real-IP it sends, its connections count as 127.0.0.1's."""
    h = make_herald(workers=1, limits={"connections_per_ip": 2},
                    security={"trusted_proxies": ["10.0.0.0/8"]})
    held = []
    for hdr in ("X-Forwarded-For: 198.51.100.1", "X-Real-IP: 198.51.100.2"):
        st, s = upgrade(h.port, headers=[hdr])
        assert st == 101
        held.append(s)
    st, s = upgrade(h.port, headers=["X-Forwarded-For: 198.51.100.3"])
    assert st == 503, st
    for s in held:
        s.close()
