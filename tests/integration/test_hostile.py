"""Hostile input (the "Protection" issue): for each input in the catalogue,
the documented outcome, while a healthy subscriber on the same worker keeps
receiving a live stream of publications without a missed offset, and no
worker restarts.

The catalogue runs against one herald with a single worker, so every
hostile connection lands on the worker that serves the healthy clients.
Inputs a WebSocket library refuses to produce (bad frames, bad handshakes,
half-sent headers) are written byte by byte on raw sockets (RawWS below;
test_limits.py uses it too).

Outcomes, from docs/protocol.md and RFC 6455:
  - frames: unmasked, RSV bits, unknown opcode, bad close code -> close
    1002; invalid UTF-8 -> 1007; a message (all its fragments) over
    limits.message_bytes -> 1009;
  - an unfinished fragmented message is held, bounded: the connection
    stays usable (control frames are answered) while it holds less than
    limits.message_bytes, is closed with 1009 as soon as it would hold
    more, and a client that goes silent mid-message is closed as stale
    (4001) by the heartbeat, which frees it;
  - handshakes that are not WebSocket (garbage, plain HTTP, bad key or
    version, oversized headers, too slow) never get a 101;
  - command-level junk gets an error reply with the documented code and
    the connection stays open.
"""

import asyncio
import base64
import json
import os
import socket
import struct
import threading
import time
import zlib

import pytest
import websockets.exceptions

import harness
import jwtutil
from harness import (SLACK, admin_request, open_client, parse_metrics, run,
                     wait_until)

# ==========================================================================
# raw WebSocket client (also used by test_limits.py)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def upgrade_request(port, path="/", key=None, version="13", origin=None,
                    extensions=None, protocol=harness.SUBPROTOCOL, extra=(),
                    omit=()):
    """The bytes of a WebSocket upgrade request. key/version None means
    a fresh valid key / leave the header out; omit names headers to leave
    out; extra is a list of raw header lines."""
    hdrs = [("Host", "127.0.0.1:%d" % port), ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key if key is not None else ws_key())]
    if version is not None:
        hdrs.append(("Sec-WebSocket-Version", version))
    if protocol:
        hdrs.append(("Sec-WebSocket-Protocol", protocol))
    if origin is not None:
        hdrs.append(("Origin", origin))
    if extensions:
        hdrs.append(("Sec-WebSocket-Extensions", extensions))
    lines = ["GET %s HTTP/1.1" % path]
    lines += ["%s: %s" % (k, v) for k, v in hdrs if k not in omit]
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def mask_bytes(payload, key):
    n = len(payload)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    """One client frame. rsv: the three RSV bits as a number 0..7 (4 is
    RSV1, the permessage-deflate bit)."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        hdr = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, m | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + mask_bytes(payload, key)


def parse_http_head(data):
    """(status, {lower-case name: value}, version, rest) of an HTTP
    response head at the start of data, or None when data holds no
    complete head."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return int(parts[1]), hdrs, parts[0], data[end + 4:]


def tcp_connect(port, source=None, timeout=10, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def exchange(port, data, timeout=10, source=None):
    """Send data on a fresh connection and read until the server closes it
    or timeout passes. Returns (bytes read, closed: bool, seconds)."""
    s = tcp_connect(port, source)
    t0 = time.monotonic()
    out, closed = b"", False
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = t0 + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not b:
                closed = True
                break
            out += b
    finally:
        s.close()
    return out, closed, time.monotonic() - t0


class Closed(Exception):
    """The server closed the TCP connection (EOF or reset)."""


class RawWS:
    """A WebSocket client on a raw socket: writes whatever bytes a test
    wants, parses the server's frames, and reports the close frame and the
    end of the TCP connection separately."""

    def __init__(self, sock, rest=b"", head=None):
        self.sock = sock
        self.buf = rest
        self.head = head        # (status, headers, version, rest)
        self.eof = False
        self.frames = []        # (opcode, payload) of frames read so far
        self.close_code = None
        self.close_reason = None
        # permessage-deflate negotiated: inflate the server's RSV1 frames
        # (one decompressor: right whether or not the server keeps its
        # context between messages)
        ext = head[1].get("sec-websocket-extensions", "") if head else ""
        self.inflater = zlib.decompressobj(-15) if "permessage-deflate" in ext else None

    @classmethod
    def open(cls, port, timeout=10, source=None, rcvbuf=None, **req):
        """Connect and upgrade; fails unless the answer is a 101."""
        s = tcp_connect(port, source, timeout, rcvbuf)
        s.sendall(upgrade_request(port, **req))
        data = b""
        deadline = time.monotonic() + timeout
        while parse_http_head(data) is None:
            left = deadline - time.monotonic()
            assert left > 0, "no upgrade response within %.1f s: %r" % (timeout, data[:300])
            s.settimeout(left)
            b = s.recv(65536)
            assert b, "connection closed during the upgrade: %r" % (data[:300],)
            data += b
        head = parse_http_head(data)
        assert head[0] == 101, "upgrade refused: %r" % (data[:500],)
        return cls(s, head[3], head)

    def send(self, data):
        """sendall; False if the server already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def send_frame(self, opcode, payload=b"", **kw):
        return self.send(frame(opcode, payload, **kw))

    def send_text(self, obj):
        return self.send_frame(1, json.dumps(obj) if not isinstance(obj, (str, bytes)) else obj)

    def _fill(self, deadline):
        """Read more bytes into buf; False on timeout. Raises Closed."""
        if self.eof:
            raise Closed()
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            b = self.sock.recv(262144)
        except socket.timeout:
            return False
        except ConnectionResetError:
            self.eof = True
            raise Closed() from None
        if not b:
            self.eof = True
            raise Closed()
        self.buf += b
        return True

    def _parse(self):
        """One complete frame off buf: (fin, rsv, opcode, payload) or None."""
        b = self.buf
        if len(b) < 2:
            return None
        fin, rsv, op = b[0] >> 7, (b[0] >> 4) & 7, b[0] & 15
        masked, n, i = b[1] >> 7, b[1] & 127, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, i = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, i = struct.unpack("!Q", b[2:10])[0], 10
        assert not masked, "server sent a masked frame"
        if len(b) < i + n:
            return None
        self.buf = b[i + n:]
        payload = b[i:i + n]
        if rsv & 4 and self.inflater is not None and op in (1, 2):
            # single-frame messages only: herald does not fragment
            assert fin, "compressed fragmented message"
            payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
        return fin, rsv, op, payload

    def next_frame(self, timeout=10):
        """The next frame, or None on timeout. Raises Closed at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            f = self._parse()
            if f is not None:
                self.frames.append((f[2], f[3]))
                if f[2] == 8:
                    p = f[3]
                    self.close_code = struct.unpack("!H", p[:2])[0] if len(p) >= 2 else (0 if p else None)
                    self.close_reason = p[2:]
                return f
            if not self._fill(deadline):
                return None

    def wait_close(self, timeout=10, answer_pings=False):
        """Read until the server's close frame; returns its code (None for
        a close frame without one). Fails if the TCP connection ends (or
        timeout passes) without a close frame."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                assert left > 0, "no close frame within %.1f s (frames %r)" % (
                    timeout, [(op, p[:40]) for op, p in self.frames[-5:]])
                f = self.next_frame(left)
                if f is None:
                    continue
                if f[2] == 8:
                    return self.close_code
                if f[2] == 9 and answer_pings:
                    self.send_frame(10, f[3])
        except Closed:
            raise AssertionError("connection closed without a close frame (frames %r)"
                                 % ([(op, p[:40]) for op, p in self.frames[-5:]],)) from None

    def wait_eof(self, timeout=10):
        """Read (discarding frames) until the server ends the TCP
        connection; True if it did within timeout."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.next_frame(deadline - time.monotonic())
        except Closed:
            return True
        return False

    def finish_close(self, timeout=10):
        """Answer the server's close frame as a client must, then expect
        the server to end the TCP connection."""
        self.send_frame(8, struct.pack("!H", 1000))
        return self.wait_eof(timeout)

    def reply(self, cmd_id, timeout=10, noid_ok=False):
        """Read text frames until the reply with cmd_id (an int) or, with
        cmd_id None (or noid_ok), the first message without an id."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no reply %r within %.1f s" % (cmd_id, timeout)
            f = self.next_frame(left)
            if f is None:
                continue
            assert f[2] != 8, "closed with %r while waiting for reply %r" % (self.close_code, cmd_id)
            if f[2] != 1:
                continue
            for line in f[3].decode().split("\n"):
                if not line.strip():
                    continue
                msg = json.loads(line)
                if (cmd_id is None or noid_ok) and "id" not in msg and "push" not in msg:
                    return msg
                if cmd_id is not None and msg.get("id") == cmd_id:
                    return msg

    def call(self, cmd_id, method, params=None, timeout=10, noid_ok=False):
        msg = {"id": cmd_id, "method": method}
        if params is not None:
            msg["params"] = params
        assert self.send_text(msg), "server closed before %s" % method
        return self.reply(cmd_id, timeout, noid_ok)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ==========================================================================
# metrics, processes

def metric_sum(h, name, **labels):
    """Sum over workers of name{labels} from the admin server."""
    status, _, body = admin_request(h.admin_port, "/metrics")
    assert status == 200, (status, body[:300])
    _, samples = parse_metrics(body)
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def config_accepted(herald_bin, workdir, config):
    """Whether `herald -t` accepts config (a dict)."""
    import subprocess
    os.makedirs(str(workdir), exist_ok=True)
    path = os.path.join(str(workdir), "check.json")
    with open(path, "w") as f:
        json.dump(config, f)
    r = subprocess.run([herald_bin, "-t", "-c", path], capture_output=True, timeout=30)
    return r.returncode == 0


# ==========================================================================
# the healthy stream

MAX_GAP = 2.0 * SLACK       # seconds a healthy subscriber may go without a publication


class Stream:
    """A publisher that keeps publishing on one channel (every `period`
    seconds) and a subscriber on each wanted worker slot, all in a thread
    of their own with an asyncio loop. check() asserts that every
    subscriber got every acknowledged offset exactly once and in order, and
    that publications kept arriving during a time window."""

    def __init__(self, h, channel, token, slots=(0,), period=0.02, **ws_kwargs):
        self.h, self.channel, self.token, self.slots = h, channel, token, slots
        self.period = period
        self.ws_kwargs = ws_kwargs      # e.g. local_addr=("127.0.0.3", 0)
        self.acked = []             # (offset, monotonic time of the ack)
        self.arrivals = {}          # slot -> [(offset, monotonic time)]
        self.errors = []
        self.stop_flag = False
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._thread, daemon=True)

    def start(self, timeout=30):
        self.thread.start()
        assert self.ready.wait(timeout), "stream did not start: %r" % (self.errors,)
        assert not self.errors, self.errors
        # the stream is flowing before any attack starts
        wait_until(lambda: all(len(a) >= 3 for a in self.arrivals.values()), 10 * SLACK,
                   what="the stream to flow")
        return self

    def _thread(self):
        try:
            asyncio.run(self._main())
        except BaseException as e:     # surfaced by check()
            self.errors.append("stream thread: %r" % (e,))
        finally:
            self.ready.set()

    async def _main(self):
        subs, extra = {}, []
        for _ in range(60):
            c = await open_client(self.h.url, self.token, **self.ws_kwargs)
            if c.worker in self.slots and c.worker not in subs:
                subs[c.worker] = c
            else:
                extra.append(c)
            if len(subs) == len(self.slots):
                break
        for c in extra:
            await c.close()
        assert len(subs) == len(self.slots), "no subscriber on slots %r" % (self.slots,)
        for slot, c in subs.items():
            r = await c.subscribe(self.channel)
            assert "result" in r, r
            self.arrivals[slot] = []
        pub = await open_client(self.h.url, self.token, **self.ws_kwargs)
        self.ready.set()
        tasks = [asyncio.ensure_future(self._reader(s, c)) for s, c in subs.items()]
        try:
            n = 0
            while not self.stop_flag:
                n += 1
                r = await pub.publish(self.channel, {"n": n}, timeout=30)
                if "result" not in r:
                    self.errors.append("publish %d: %r" % (n, r))
                    break
                self.acked.append((r["result"]["offset"], time.monotonic()))
                await asyncio.sleep(self.period)
        finally:
            self.stop_flag = True
            for t in tasks:
                t.cancel()
            for c in list(subs.values()) + [pub]:
                await c.close()

    async def _reader(self, slot, c):
        seen = 0
        try:
            while not self.stop_flag:
                await c.pump(0.2)
                pubs = c.pushes
                while seen < len(pubs):
                    p = pubs[seen]
                    seen += 1
                    if "pub" in p and p.get("channel") == self.channel:
                        self.arrivals[slot].append((p["pub"]["offset"], time.monotonic()))
                    else:
                        self.errors.append("slot %d: unexpected push %r" % (slot, p))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.errors.append("slot %d subscriber: %r (close code %r)"
                               % (slot, e, getattr(c.ws, "close_code", None)))

    def alive(self):
        return self.thread.is_alive() and not self.errors and not self.stop_flag

    def check(self, t0, t1):
        """Every offset acknowledged so far arrived at every subscriber,
        exactly once and in order; between t0 and t1 no subscriber went
        MAX_GAP seconds without a publication."""
        assert not self.errors, "stream broken: %r" % (self.errors,)
        assert self.thread.is_alive(), "stream thread ended"
        last = self.acked[-1][0]
        wait_until(lambda: self.errors or all(a and a[-1][0] >= last for a in self.arrivals.values()),
                   10 * SLACK, what="subscribers to catch up to offset %d" % last)
        assert not self.errors, "stream broken: %r" % (self.errors,)
        for slot, arr in self.arrivals.items():
            offs = [o for o, _ in arr]
            assert offs == list(range(1, len(offs) + 1)), (
                "slot %d: offsets not contiguous from 1: missing %r, duplicated %r"
                % (slot, sorted(set(range(1, max(offs) + 1)) - set(offs))[:20],
                   sorted({o for o in offs if offs.count(o) > 1})[:20]))
            times = [t0] + [t for _, t in arr if t0 <= t <= t1] + [t1]
            gap = max(b - a for a, b in zip(times, times[1:]))
            assert gap <= MAX_GAP, (
                "slot %d: no publication for %.2f s during the attack (%d arrived in %.2f s)"
                % (slot, gap, len(times) - 2, t1 - t0))

    def stop(self):
        self.stop_flag = True
        self.thread.join(30)


# ==========================================================================
# the catalogue's herald

CATALOGUE_CONFIG = harness.pubsub_config(
    workers=1,
    # large enough for the 100,000-deep JSON; the 1009 tests go past it
    limits={"message_bytes": 262144},
    timeouts={"handshake_ms": 2000},
    heartbeat={"ping_interval_ms": 1000, "pong_timeout_ms": 1000},
)
MSG_LIMIT = CATALOGUE_CONFIG["limits"]["message_bytes"]
HANDSHAKE_S = CATALOGUE_CONFIG["timeouts"]["handshake_ms"] / 1000.0


class Env:
    """One herald (one worker), its Redis, and the healthy stream."""

    def __init__(self, herald_bin, tmp, n):
        self.dir = os.path.join(str(tmp), "env%d" % n)
        self.redis = harness.RedisServer(os.path.join(self.dir, "redis")).start()
        self.h = harness.Herald(herald_bin, os.path.join(self.dir, "herald"),
                                self.redis.url, **CATALOGUE_CONFIG)
        self.h.start()
        self.token = jwtutil.token(self.h.config["auth"]["hmac_secret"], sub="healthy")
        self.stream = Stream(self.h, "chat:healthy", self.token).start()
        self.pids = self.h.worker_pids()

    @property
    def port(self):
        return self.h.port

    def token_for(self, **claims):
        return jwtutil.token(self.h.config["auth"]["hmac_secret"], **claims)

    def guard(self):
        return Guard(self)

    def teardown(self):
        self.stream.stop()
        problems = self.h.finish()
        self.redis.stop()
        return problems


class Guard:
    """with env.guard(): <attack> -- afterwards the stream was healthy all
    along and no worker restarted. env: anything with .h (Herald),
    .stream (Stream) and .pids (the worker pids the stream started with)."""

    def __init__(self, env):
        self.env = env

    def __enter__(self):
        self.pids = self.env.h.worker_pids()
        assert self.pids == self.env.pids, "workers changed before the test: %r -> %r" % (
            self.env.pids, self.pids)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, typ, val, tb):
        if typ is not None:
            return False
        t1 = time.monotonic()
        self.env.stream.check(self.t0, t1)
        assert self.env.h.alive(), "master exited\n" + self.env.h.diag()
        now = self.env.h.worker_pids()
        assert now == self.pids, "a worker restarted: %r -> %r\n%s" % (
            self.pids, now, self.env.h.diag())
        return False


@pytest.fixture(scope="module")
def env_holder(herald_bin, tmp_path_factory):
    holder = {"env": None, "n": 0, "tmp": tmp_path_factory.mktemp("hostile"),
              "problems": []}
    yield holder
    if holder["env"] is not None:
        holder["problems"] += holder["env"].teardown()
    if holder["problems"]:
        pytest.fail("herald teardown:\n" + "\n".join(holder["problems"]), pytrace=False)


@pytest.fixture
def env(request, env_holder, herald_bin):
    """The shared catalogue herald; rebuilt when a previous test broke it
    (a dead worker, a broken stream), so one failure does not cascade."""
    e = env_holder["env"]
    if e is not None and not (e.stream.alive() and e.h.alive() and e.h.worker_pids() == e.pids):
        env_holder["problems"] += e.teardown()
        e = None
    if e is None:
        env_holder["n"] += 1
        e = Env(herald_bin, env_holder["tmp"], env_holder["n"])
        env_holder["env"] = e
    request.node._heralds = [e.h]       # herald output on failure (conftest)
    return e


def raw_connected(env, sub="hostile", **claims):
    """A RawWS that has sent `connect` with a valid token."""
    ws = RawWS.open(env.port)
    r = ws.call(1, "connect", {"token": env.token_for(sub=sub, **claims)})
    assert "result" in r, r
    ws.frames.clear()
    return ws


def expect_close(ws, code, timeout=10):
    """The server sends a close frame with code, and ends the TCP
    connection once the client answers it."""
    got = ws.wait_close(timeout)
    assert got == code, "close code %r (reason %r), expected %d" % (got, ws.close_reason, code)
    assert ws.finish_close(5 * SLACK), "TCP connection still open after the close handshake"


def assert_no_upgrade(data, closed, what):
    """No 101: either a 4xx response (the connection may stay open for
    HTTP keep-alive) or the connection closed without a response."""
    assert b" 101 " not in data.split(b"\r\n", 1)[0], "%s: got a 101: %r" % (what, data[:300])
    if data:
        head = parse_http_head(data)
        assert head is not None, "%s: not an HTTP response: %r" % (what, data[:300])
        assert 400 <= head[0] < 500, "%s: status %d: %r" % (what, head[0], data[:300])
    else:
        assert closed, "%s: no response and the connection is still open" % what


# ==========================================================================
# HTTP level

@pytest.mark.parametrize("garbage", [
    b"\x00\xff\x13garbage \x80\x81\r\n\r\n",
    b"\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 2,   # a TLS hello
    bytes(range(256)) * 256,                                                  # 64 KiB of junk
], ids=["binary", "crlf", "http99", "tls", "64k"])
def test_garbage_instead_of_http(env, garbage):
    with env.guard():
        data, closed, dt = exchange(env.port, garbage, timeout=5 * SLACK)
        assert_no_upgrade(data, closed, "garbage")
        assert closed, "garbage: connection still open after %.1f s: %r" % (dt, data[:200])


def test_http_without_upgrade_404_json(env):
    with env.guard():
        data, closed, _ = exchange(env.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                   timeout=5 * SLACK)
        head = parse_http_head(data)
        assert head is not None, data
        status, hdrs, _, body = head
        assert status == 404, data
        assert hdrs.get("content-type", "").startswith("application/json"), hdrs
        n = int(hdrs.get("content-length", len(body)))
        assert json.loads(body[:n])["error"]["code"] == 404, body


@pytest.mark.parametrize("key,omit", [
    (None, ("Sec-WebSocket-Key",)),
    ("abc", ()),                                    # decodes to 2 bytes, not 16
    ("not base64 at all!!!!!!!", ()),
    (base64.b64encode(os.urandom(20)).decode(), ()),  # 20 bytes
    ("", ()),
], ids=["missing", "short", "not-base64", "20-bytes", "empty"])
def test_bad_websocket_key_refused(env, key, omit):
    # RFC 6455 4.2.1/4.2.2: the key must be base64 of 16 bytes; otherwise
    # the server MUST NOT upgrade (400 Bad Request).
    with env.guard():
        data, closed, _ = exchange(env.port, upgrade_request(env.port, key=key, omit=omit),
                                   timeout=5 * SLACK)
        assert_no_upgrade(data, closed, "key %r" % (key,))


@pytest.mark.parametrize("version", [None, "12", "8", "14", "abc"],
                         ids=["missing", "12", "8", "14", "abc"])
def test_bad_websocket_version_refused(env, version):
    # RFC 6455 4.2.2: only version 13; otherwise 426 Upgrade Required
    # (or 400) with Sec-WebSocket-Version: 13, and no upgrade.
    with env.guard():
        data, closed, _ = exchange(env.port, upgrade_request(env.port, version=version),
                                   timeout=5 * SLACK)
        head = parse_http_head(data)
        assert head is not None and head[0] != 101, "version %r upgraded: %r" % (version, data[:300])
        assert head[0] in (400, 426), data[:300]
        if head[0] == 426:
            assert head[1].get("sec-websocket-version") == "13", head[1]


@pytest.mark.parametrize("extra", [
    ["X-Big: " + "a" * 70000],
    ["X-H%d: v" % i for i in range(3000)],
    ["Cookie: " + "c=" + "x" * 8000],
], ids=["one-70k-header", "3000-headers", "8k-cookie"])
def test_headers_past_the_size_limit(env, extra):
    with env.guard():
        data, closed, dt = exchange(env.port, upgrade_request(env.port, extra=extra),
                                    timeout=5 * SLACK)
        assert_no_upgrade(data, closed, "oversized headers")
        assert closed, "oversized headers: connection still open after %.1f s" % dt


def trickle(port, delay, limit_s):
    """Send an upgrade request one byte every delay seconds; returns
    (seconds until the server closed, bytes sent, bytes received)."""
    req = upgrade_request(port)
    s = tcp_connect(port)
    t0 = time.monotonic()
    got, i = b"", 0
    try:
        while time.monotonic() - t0 < limit_s and i < len(req) - 1:
            try:
                s.sendall(req[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - t0, i, got
            i += 1
            end = time.monotonic() + delay
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                s.settimeout(left)
                try:
                    b = s.recv(4096)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    return time.monotonic() - t0, i, got
                if not b:
                    return time.monotonic() - t0, i, got
                got += b
        return None, i, got
    finally:
        s.close()


def test_slowloris_trickled_handshake_closed(env):
    # lws applies timeouts.handshake_ms in whole seconds (rounded up).
    limit = -(-HANDSHAKE_S // 1)
    with env.guard():
        results = {}

        def one(delay):
            results[delay] = trickle(env.port, delay, limit + 10 * SLACK)
        ts = [threading.Thread(target=one, args=(d,)) for d in (0.05, 0.3, 0.9)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for delay, (dt, sent, got) in sorted(results.items()):
            assert dt is not None, "trickling every %.2f s: still open after %.1f s (%d bytes sent)" % (
                delay, limit + 10 * SLACK, sent)
            assert b"101" not in got, got
            assert limit - 1.0 <= dt <= limit + 1.0 + 2 * SLACK, (
                "trickling every %.2f s: closed after %.2f s, expected about %.0f s" % (delay, dt, limit))


# ==========================================================================
# frames

PING = json.dumps({"id": 1, "method": "ping"}).encode()


def test_unmasked_frame_1002(env):
    with env.guard():
        ws = RawWS.open(env.port)
        ws.send_frame(1, PING, mask=False)
        expect_close(ws, 1002)
        assert all(op != 1 for op, _ in ws.frames), "the unmasked command was answered: %r" % ws.frames


def open_with(port, first_frames, timeout=10):
    """Send the upgrade request and first_frames in one write (so they
    reach the server before its 101), then read the 101; a RawWS."""
    s = tcp_connect(port, None, timeout)
    s.sendall(upgrade_request(port) + first_frames)
    data = b""
    deadline = time.monotonic() + timeout
    while parse_http_head(data) is None:
        left = deadline - time.monotonic()
        assert left > 0, "no upgrade response within %.1f s: %r" % (timeout, data[:300])
        s.settimeout(left)
        b = s.recv(65536)
        assert b, "connection closed during the upgrade: %r" % (data[:300],)
        data += b
    head = parse_http_head(data)
    assert head[0] == 101, "upgrade refused: %r" % (data[:500],)
    return RawWS(s, head[3], head)


# A command whose bytes hold CR LF CR LF (JSON whitespace) and then
# '"' 0xC3: read as a frame header, that is a masked frame of 67 bytes,
# which hides whatever follows it from a frame watch that restarts there.
PING_CRLF = b'{"id": 1, "method": "ping", "params": {\r\n\r\n"\xc3\xbf": 1}}'


def zero_masked(opcode, payload):
    """A masked frame with the all-zero key: the payload bytes go out as
    they are (a valid masked frame)."""
    assert len(payload) < 126
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + b"\0\0\0\0" + payload


@pytest.mark.parametrize("masked_first", [False, True])
def test_unmasked_frame_sent_with_the_upgrade_1002(env, masked_first):
    """Frames sent right behind the upgrade request reach the server
    before its handshake completes. A CR LF CR LF inside frame bytes is
    not the end of another request: it must not restart the frame watch
    (issue 16 item 9). Before, the watch restarted there, the crafted
    bytes after it swallowed the unmasked frame that follows, and that
    frame's command was answered."""
    with env.guard():
        first = zero_masked(1, PING_CRLF) if masked_first else frame(1, PING_CRLF, mask=False)
        then = frame(1, json.dumps({"id": 2, "method": "ping"}).encode(), mask=False)
        ws = open_with(env.port, first + then)
        expect_close(ws, 1002)
        answered = [json.loads(p) for op, p in ws.frames if op == 1]
        if masked_first:
            # the masked one may be answered; the unmasked one never
            assert all(m.get("id") != 2 for m in answered), answered
        else:
            assert answered == [], "unmasked commands were answered: %r" % answered


def test_upgrade_after_http_request_on_kept_alive_connection(env):
    """An HTTP request answered on a kept-alive connection, then the
    upgrade on the same connection: the frame watch starts over at the
    upgrade's headers, so masked frames are served and an unmasked one is
    still refused with 1002."""
    with env.guard():
        s = tcp_connect(env.port)
        s.sendall(b"GET /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 10
        while True:
            head = parse_http_head(data)
            if head is not None:
                n = int(head[1].get("content-length", "0"))
                if len(head[3]) >= n:
                    break
            s.settimeout(max(0.1, deadline - time.monotonic()))
            b = s.recv(65536)
            assert b, "connection closed after the HTTP answer: %r" % data
            data += b
        assert head[0] == 404, data
        s.sendall(upgrade_request(env.port))
        data = b""
        while parse_http_head(data) is None:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            b = s.recv(65536)
            assert b, "connection closed during the upgrade: %r" % data
            data += b
        head = parse_http_head(data)
        assert head[0] == 101, data
        ws = RawWS(s, head[3], head)
        r = ws.call(7, "ping", {})
        assert "result" in r, r
        ws.send_frame(1, PING, mask=False)
        expect_close(ws, 1002)


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_1002(env, rsv):
    # No extension is negotiated here, so even RSV1 is reserved.
    with env.guard():
        ws = RawWS.open(env.port)
        ws.send_frame(1, PING, rsv=rsv)
        expect_close(ws, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcode_1002(env, opcode):
    with env.guard():
        ws = RawWS.open(env.port)
        ws.send_frame(opcode, b"x")
        expect_close(ws, 1002)


@pytest.mark.parametrize("payload", [
    struct.pack("!H", 0), struct.pack("!H", 999), struct.pack("!H", 1004),
    struct.pack("!H", 1005), struct.pack("!H", 1006), struct.pack("!H", 1015),
    struct.pack("!H", 1016), struct.pack("!H", 2999),
], ids=["0", "999", "1004", "1005", "1006", "1015", "1016", "2999"])
def test_invalid_close_code_1002(env, payload):
    with env.guard():
        ws = RawWS.open(env.port)
        ws.send_frame(8, payload)
        got = ws.wait_close(5 * SLACK)
        assert got == 1002, "close %r answered with %r (payload %r)" % (payload, got, ws.frames[-1][1])
        assert ws.wait_eof(5 * SLACK)


@pytest.mark.parametrize("payload", [b"\x03", b"\x03\xe8\xff\xfe"], ids=["1-byte", "bad-utf8-reason"])
def test_malformed_close_frame_fails_connection(env, payload):
    # A close body of one byte has no room for a code; a reason must be
    # UTF-8. RFC 6455 5.5.1 / 7.1.7: fail the connection (close 1002 or
    # 1007, or just drop it) -- never echo the malformed body back.
    with env.guard():
        ws = RawWS.open(env.port)
        ws.send_frame(8, payload)
        try:
            f = ws.next_frame(5 * SLACK)
        except Closed:
            return                      # dropped: allowed
        assert f is not None, "no answer to a malformed close frame"
        assert f[2] == 8, f
        assert ws.close_code in (1002, 1007), "answered %r with a close body %r" % (payload, f[3])
        assert ws.wait_eof(5 * SLACK)


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4000, 4999])
def test_valid_close_code_echoed(env, code):
    # The other side of the previous test: valid codes close normally.
    with env.guard():
        ws = RawWS.open(env.port)
        ws.send_frame(8, struct.pack("!H", code) + b"bye")
        got = ws.wait_close(5 * SLACK)
        assert got in (code, 1000), got
        assert ws.wait_eof(5 * SLACK)


@pytest.mark.parametrize("payload", [
    b'{"id":1,"method":"ping","x":"\xff\xfe"}',
    b'{"id":1,"method":"ping","x":"\xc0\xaf"}',             # overlong "/"
    b'{"id":1,"method":"ping","x":"\xed\xa0\x80"}',         # UTF-16 surrogate
    b'{"id":1,"method":"ping","x":"\xf4\x90\x80\x80"}',     # past U+10FFFF
    b'{"id":1,"method":"ping","x":"\xe2\x82"}',             # truncated
], ids=["ff", "overlong", "surrogate", "too-big", "truncated"])
def test_invalid_utf8_1007(env, payload):
    with env.guard():
        ws = RawWS.open(env.port)
        ws.send_frame(1, payload)
        expect_close(ws, 1007)
        assert all(op != 1 for op, _ in ws.frames), ws.frames


def test_invalid_utf8_split_across_fragments_1007(env):
    with env.guard():
        ws = RawWS.open(env.port)
        ws.send_frame(1, b'{"id":1,"method":"ping","x":"\xe2', fin=False)
        ws.send_frame(0, b'\x28\xa1"}')                  # 0xe2 0x28: invalid
        expect_close(ws, 1007)


def test_one_oversized_frame_1009(env):
    with env.guard():
        ws = RawWS.open(env.port)
        ws.send_frame(1, b'{"id":1,"method":"ping","x":"' + b"a" * MSG_LIMIT + b'"}')
        expect_close(ws, 1009)
        assert all(op != 1 for op, _ in ws.frames), ws.frames


def test_frame_length_far_past_the_limit_1009(env):
    # A header announcing 2^40 bytes, then payload: herald must not trust
    # the length (nor wait for it); 1009 once the limit is passed.
    with env.guard():
        ws = RawWS.open(env.port)
        payload = b" " * (MSG_LIMIT + 8192)
        # an all-zero mask: the payload goes out as is
        ws.send(struct.pack("!BBQ", 0x81, 0xFF, 1 << 40) + b"\0\0\0\0")
        for i in range(0, len(payload), 16384):
            if not ws.send(payload[i:i + 16384]):
                break
        expect_close(ws, 1009)


@pytest.mark.parametrize("size,burst", [(300, True), (1000, True), (300, False)],
                         ids=["300B-burst", "1000B-burst", "300B-one-by-one"])
def test_thousand_fragments_past_the_limit_1009(env, size, burst):
    # 1,000 fragments whose total passes the limit, sent in one write or
    # one write per fragment.
    n = 1000
    assert n * size > MSG_LIMIT
    with env.guard():
        ws = RawWS.open(env.port)
        frames = [frame(1, b" " * size, fin=False)]
        frames += [frame(0, b" " * size, fin=False) for _ in range(n - 2)]
        frames.append(frame(0, b" " * size, fin=True))
        if burst:
            ws.send(b"".join(frames))
        else:
            for f in frames:
                if not ws.send(f):
                    break
        expect_close(ws, 1009)


def test_unfinished_fragmented_message_is_bounded(env):
    """An unfinished message holds at most limits.message_bytes: under it
    the connection stays open and answers control frames; the fragment that
    would take it past the limit gets 1009; a client that goes silent in
    the middle of a message is closed as stale (4001)."""
    with env.guard():
        # (a) held: 3/4 of the limit, never finished; still alive
        a = raw_connected(env)
        a.send_frame(1, b'{"id":2,"method":"ping","params":{"pad":"', fin=False)
        sent = 0
        while sent < MSG_LIMIT * 3 // 4:
            a.send_frame(0, b"p" * 4096, fin=False)
            sent += 4096
        a.send_frame(9, b"are you there")          # control frames may interleave
        deadline = time.monotonic() + 5 * SLACK
        pong = None
        while pong is None and time.monotonic() < deadline:
            f = a.next_frame(deadline - time.monotonic())
            if f is not None and f[2] == 10:
                pong = f[3]
            elif f is not None:
                assert f[2] == 9, "unexpected frame mid-message: %r" % (f,)
        assert pong == b"are you there", pong

        # (b) the fragment that passes the limit: 1009
        b = raw_connected(env)
        b.send_frame(1, b'{"id":2,"method":"ping","params":{"pad":"', fin=False)
        for _ in range(MSG_LIMIT // 4096 - 1):
            b.send_frame(0, b"p" * 4096, fin=False)
        b.send_frame(9, b"ok?")
        f = b.next_frame(5 * SLACK)
        while f is not None and f[2] == 9:
            f = b.next_frame(5 * SLACK)
        assert f is not None and f[2] == 10, f
        b.send_frame(0, b"p" * 8192, fin=False)
        expect_close(b, 1009)

        # (c) (a) went silent mid-message: the heartbeat closes it
        hb = env.h.config["heartbeat"]
        code = a.wait_close((hb["ping_interval_ms"] + hb["pong_timeout_ms"]) / 1000.0 + 1 + 5 * SLACK)
        assert code == 4001, code
        assert not any(op == 1 for op, _ in a.frames), "the unfinished message was answered: %r" % a.frames
        a.close()


# ==========================================================================
# commands

def test_malformed_json_400_stays_open(env):
    with env.guard():
        ws = raw_connected(env)
        for junk in (b'{"id": 1, "method": "ping"', b"not json", b'{"id":}', b"[1,2",
                     b'{"id": 3, "method": "ping"}}', b"\"unterminated", b"{" * 10,
                     b'{"id": 1, "method": "ping", "id": 2}'):
            assert ws.send_frame(1, junk)
            r = ws.reply(None)
            assert r["error"]["code"] == 400, (junk, r)
        assert ws.call(9, "ping")["result"] == {"worker": 0}
        ws.close()


@pytest.mark.parametrize("shape", ["array", "unclosed", "params", "objects"])
def test_json_nested_100000_deep_400(env, shape):
    depth = 100000
    if shape == "array":
        doc = b"[" * depth + b"]" * depth
    elif shape == "unclosed":
        doc = b"[" * depth
    elif shape == "params":
        doc = b'{"id":5,"method":"ping","params":' + b"[" * depth + b"]" * depth + b"}"
    else:
        # objects cost 5 bytes a level: as deep as the message limit allows
        depth = MSG_LIMIT // 6
        doc = b'{"a":' * depth + b"1" + b"}" * depth
    assert len(doc) <= MSG_LIMIT
    with env.guard():
        ws = raw_connected(env)
        assert ws.send_frame(1, doc)
        # jansson stops at its depth limit: invalid JSON, so no id
        r = ws.reply(None, timeout=10 * SLACK)
        assert r["error"]["code"] == 400, r
        assert ws.call(9, "ping")["result"] == {"worker": 0}
        ws.close()


@pytest.mark.parametrize("text", [
    '{"id": 1e400, "method": "ping"}',
    '{"id": 99999999999999999999, "method": "ping"}',
    '{"id": 18446744073709551616, "method": "ping"}',
    '{"id": -1, "method": "ping"}',
    '{"id": 1.5, "method": "ping"}',
    '{"id": 1, "method": "publish", "params": {"channel": "chat:n", "data": 1e400}}',
    '{"id": 1, "method": "publish", "params": {"channel": "chat:n", "data": -99999999999999999999999}}',
    '{"id": 1, "method": "history", "params": {"channel": "chat:n", "limit": 1e400}}',
    '{"id": 1, "method": "history", "params": {"channel": "chat:n", "limit": 99999999999999999999}}',
], ids=["id-1e400", "id-1e20", "id-2^64", "id-neg", "id-frac", "data-1e400",
        "data-neg-huge", "limit-1e400", "limit-1e20"])
def test_huge_numbers_400(env, text):
    with env.guard():
        ws = raw_connected(env)
        assert ws.send_frame(1, text)
        deadline = time.monotonic() + 10 * SLACK
        r = None
        while r is None:
            f = ws.next_frame(deadline - time.monotonic())
            assert f is not None, "no reply to %s" % text
            assert f[2] != 8, "closed with %r" % ws.close_code
            if f[2] == 1:
                r = json.loads(f[3].decode().split("\n")[0])
        assert "result" not in r, (text, r)
        assert r["error"]["code"] == 400, (text, r)
        assert ws.call(9, "ping")["result"] == {"worker": 0}
        ws.close()


def test_largest_id_is_echoed(env):
    # The edge of the previous test: 2^63 - 1 is a valid id.
    with env.guard():
        ws = raw_connected(env)
        r = ws.call(9223372036854775807, "ping")
        assert r == {"id": 9223372036854775807, "result": {"worker": 0}}, r
        ws.close()


def test_unknown_methods_404(env):
    with env.guard():
        ws = raw_connected(env)
        for i, m in enumerate(["PING", "Subscribe", "nope", "x" * 10000, "ping ", " ping",
                               "__proto__", "ping\n", "connect\u00e9"], 10):
            r = ws.call(i, m)
            assert r.get("id") == i and r["error"]["code"] == 404, (m[:20], r)
        # a NUL in a string: jansson refuses it (invalid input, 400 without
        # an id) or it is an unknown method (404): either way an error
        r = ws.call(30, "connect\u0000", noid_ok=True)
        assert r["error"]["code"] in (400, 404) and r.get("id") in (None, 30), r
        assert ws.call(99, "ping")["result"] == {"worker": 0}
        ws.close()


def test_commands_before_connect_401(env):
    with env.guard():
        ws = RawWS.open(env.port)
        for i, (m, p) in enumerate([("subscribe", {"channel": "chat:a"}),
                                    ("unsubscribe", {"channel": "chat:a"}),
                                    ("publish", {"channel": "chat:a", "data": 1}),
                                    ("history", {"channel": "chat:a"})], 10):
            r = ws.call(i, m, p)
            assert r.get("id") == i and r["error"]["code"] == 401, (m, r)
        assert ws.call(20, "ping")["result"] == {"worker": 0}
        r = ws.call(21, "connect", {"token": env.token_for(sub="late")})
        assert "result" in r, r
        assert "result" in ws.call(22, "subscribe", {"channel": "chat:a"})
        ws.close()


def test_invalid_channel_names_400(env):
    with env.guard():
        ws = raw_connected(env)
        bad = ["", " ", "a b", "chat:a b", "x" * 256, "chat:" + "x" * 251, "chat:\u00e9t\u00e9",
               "chat:a/b", "chat:a\u0000b", "chat:*", "chat:a\nb", 5, None, ["chat:a"], {"c": 1}]
        for i, ch in enumerate(bad, 10):
            for m in ("subscribe", "publish"):
                params = {"channel": ch} if m == "subscribe" else {"channel": ch, "data": 1}
                cmd_id = i * 10 + (m == "publish")
                r = ws.call(cmd_id, m, params, noid_ok=True)
                # only a NUL makes the line invalid JSON for jansson (no id)
                assert r.get("id") == (None if "\u0000" in str(ch) else cmd_id), (m, ch, r)
                assert "result" not in r and r["error"]["code"] == 400, (m, ch, r)
        # the edges that are valid
        ok = "chat:" + "x" * 250
        assert len(ok) == 255
        assert "result" in ws.call(1000, "subscribe", {"channel": ok})
        assert "result" in ws.call(1001, "subscribe", {"channel": "chat:A-z_0.9:@"})
        ws.close()


def test_ten_thousand_subscribes_on_one_connection(env):
    """10,000 subscribes, 100 per frame, as fast as they go: at most
    limits.subscriptions_per_connection (128) succeed, every other one gets
    429 (subscription limit or rate limit), or the connection is closed
    with 4004 for flooding; the worker and the stream do not notice."""
    n = 10000
    with env.guard():
        async def go():
            c = await open_client(env.h.url, env.token_for(sub="flooder"))
            first = c.next_id
            sent = 0
            try:
                for i in range(0, n, 100):
                    lines = [json.dumps({"id": first + i + k, "method": "subscribe",
                                         "params": {"channel": "chat:flood%d" % (i + k)}})
                             for k in range(100)]
                    await c.ws.send("\n".join(lines))
                    sent += 100
            except Exception:
                pass                    # closed with 4004 mid-flood
            code = None
            try:
                await c.until(lambda: len(c.replies) >= sent, 30 * SLACK, "all replies")
            except websockets.exceptions.ConnectionClosed:
                code = c.ws.close_code
            await c.close()
            return c, code

        c, code = run(go())
        results = [r for r in c.replies.values() if "result" in r]
        errors = [r for r in c.replies.values() if "error" in r]
        assert len(results) <= 128, len(results)
        assert len(results) >= 100, "the first subscribes (within burst and limit) failed: %r" % errors[:3]
        assert all(r["error"]["code"] == 429 for r in errors), {r["error"]["code"] for r in errors}
        assert not c.noid, c.noid[:3]
        if code is None:
            assert len(c.replies) == n
        else:
            assert code == 4004, "closed with %r after %d replies" % (code, len(c.replies))
        # the worker still serves a fresh client
        r = run(harness.ping_once(env.h.url))
        assert r["result"]["worker"] == 0


def test_publish_forbidden_403(env):
    with env.guard():
        ws = raw_connected(env)
        for i, ch in enumerate(["ro:x", "nope:x", "secret:y", "public:z"], 10):
            r = ws.call(i, "publish", {"channel": ch, "data": {"x": 1}})
            assert r.get("id") == i and r["error"]["code"] == 403, (ch, r)
        ws.close()
        # a token limited to news:* may not publish elsewhere
        ws = raw_connected(env, sub="limited", channels=["news:*"])
        r = ws.call(2, "publish", {"channel": "chat:x", "data": 1})
        assert r["error"]["code"] == 403, r
        assert "result" in ws.call(3, "publish", {"channel": "news:x", "data": 1})
        ws.close()


# ==========================================================================
# tests with a herald of their own

def test_handshake_timeout_on_quiet_worker(make_herald):
    """timeouts.handshake_ms holds on a worker with no other traffic too:
    a client that sends part of its upgrade request and then nothing is
    dropped after about handshake_ms (lws counts whole seconds)."""
    h = make_herald(workers=1, timeouts={"handshake_ms": 2000},
                    log={"level": "info"})
    limit = 2.0
    pid = h.worker_pids()[0]
    results = {}

    def one(n):
        results[n] = exchange(h.port, upgrade_request(h.port)[:n], timeout=limit + 1 + 3 * SLACK)
    ts = [threading.Thread(target=one, args=(n,)) for n in (0, 1, 20, 100)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for n, (data, closed, dt) in sorted(results.items()):
        assert closed, "sent %d bytes of the request: still open after %.1f s" % (n, dt)
        assert dt <= limit + 1.0 + 2 * SLACK, (
            "sent %d bytes of the request: dropped after %.2f s, expected about %.0f s"
            % (n, dt, limit))
        assert b"101" not in data
    assert h.worker_pids() == {0: pid}


def test_rejected_handshakes_are_counted(make_herald):
    """docs/metrics.md: herald_connections_rejected_total{reason="handshake"}
    counts bad upgrades and handshake timeouts."""
    h = make_herald(workers=1, timeouts={"handshake_ms": 1000}, log={"level": "info"})
    before = metric_sum(h, "herald_connections_rejected_total", reason="handshake")
    inputs = [b"\x00\xff garbage\r\n\r\n",
              upgrade_request(h.port, extra=["X-Big: " + "a" * 70000]),
              upgrade_request(h.port, omit=("Sec-WebSocket-Key",)),
              upgrade_request(h.port)[:30]]                     # times out
    # traffic on another connection, so that the handshake timeout fires
    # on time (see test_handshake_timeout_on_quiet_worker)
    busy = RawWS.open(h.port)
    stop = threading.Event()

    def keep_busy():
        i = 0
        while not stop.wait(0.1):
            i += 1
            busy.call(i, "ping")
    t = threading.Thread(target=keep_busy, daemon=True)
    t.start()
    try:
        for data in inputs:
            _, closed, _ = exchange(h.port, data, timeout=10 * SLACK)
            assert closed, data[:40]
    finally:
        stop.set()
        t.join()
        busy.close()
    want = before + len(inputs)
    try:
        wait_until(lambda: metric_sum(h, "herald_connections_rejected_total",
                                      reason="handshake") >= want, 5 * SLACK,
                   what="handshake rejections to be counted")
    except AssertionError:
        got = metric_sum(h, "herald_connections_rejected_total", reason="handshake")
        raise AssertionError("herald_connections_rejected_total{reason=\"handshake\"} went from "
                             "%d to %d after %d refused handshakes" % (before, got, len(inputs)))
