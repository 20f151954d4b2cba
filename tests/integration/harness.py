"""Helpers for the herald integration tests.

The real binary ($HERALD_BIN) runs against a real redis-server, both on
127.0.0.1 and on free ports, driven by Debian's python3-websockets (10.x,
asyncio API). Everything here polls with deadlines instead of sleeping a
fixed time: the sanitizer build on a busy 2-core box is several times
slower than a normal one.
"""

import asyncio
import copy
import json
import os
import re
import signal
import socket
import subprocess
import time

import websockets
import websockets.exceptions

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SUBPROTOCOL = "herald.v1"

# Slack on top of a timeout that the spec states exactly (e.g. "exits within
# timeouts.shutdown_ms"): process exit, sanitizer leak checks at exit and
# scheduling on a loaded box. Generous, but bounded.
SLACK = float(os.environ.get("HERALD_TEST_SLACK", "1.5"))

# Markers of a sanitizer report in a process's output.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "LeakSanitizer",
    "runtime error:",
    "UndefinedBehaviorSanitizer",
)

DEFAULT_SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:halt_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def herald_bin():
    """Path of the binary under test, or None when it does not exist."""
    path = os.environ.get("HERALD_BIN") or os.path.join(REPO_ROOT, "build", "master", "herald")
    path = os.path.abspath(path)
    return path if os.access(path, os.X_OK) else None


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Poll pred() until it returns a truthy value; return it. On timeout
    raise AssertionError naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def deep_merge(base, over):
    """A copy of dict base with dict over merged in recursively. A value of
    None in over deletes the key."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --------------------------------------------------------------------------
# /proc helpers

def read_cmdline(pid):
    """The process title as one string ("" for zombies or gone pids)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    # A rewritten argv[0] may be padded with NULs or spaces.
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def proc_stat(pid):
    """(state, ppid, pgrp) of pid, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2])


def children_of(pid):
    """Pids of the live (non-zombie) children of pid."""
    kids = None
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        pass
    if kids is None:  # kernel without CONFIG_PROC_CHILDREN
        kids = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = proc_stat(int(name))
                if st and st[1] == pid:
                    kids.append(int(name))
    live = []
    for k in kids:
        st = proc_stat(k)
        if st and st[0] not in ("Z", "X"):
            live.append(k)
    return live


def pids_in_group(pgrp):
    """Live pids whose process group is pgrp."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st and st[2] == pgrp and st[0] not in ("Z", "X"):
                out.append(int(name))
    return out


WORKER_TITLE = re.compile(r"^herald: worker (\d+)\b")


# --------------------------------------------------------------------------
# redis

class RedisServer:
    """A throw-away redis-server on a free loopback port, in its own dir."""

    def __init__(self, workdir):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = None
        self.proc = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout=15):
        # A port may be taken between free_port() and bind(): try a few.
        for _ in range(5):
            self.port = free_port()
            log = open(os.path.join(self.dir, "redis.log"), "ab")
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self.dir],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.dir)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self.ping():
                    return self
                time.sleep(0.02)
            self.stop()
        raise AssertionError("redis-server did not start; see %s/redis.log" % self.dir)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------
# herald

class Herald:
    """One herald master under test.

    Writes a config into its own directory (free ports, JSON log file),
    starts $HERALD_BIN -c CONF in a new process group with stdout/stderr to
    files, and gives the tests pids, log lines and signals. The fixture
    that creates it calls finish() at teardown.
    """

    def __init__(self, binary, workdir, redis_url, **overrides):
        self.bin = binary
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.conf_path = os.path.join(self.dir, "herald.json")
        self.log_path = os.path.join(self.dir, "herald.log")
        self.out_path = os.path.join(self.dir, "stdout.txt")
        self.err_path = os.path.join(self.dir, "stderr.txt")
        self.port = free_port()
        self.admin_port = free_port()
        # where url (and so wait_ready) connects: "[::1]" for a herald
        # that listens on IPv6 only
        self.host = "127.0.0.1"
        base = {
            "workers": 2,
            "listen": {"address": "127.0.0.1", "port": self.port, "backlog": 512},
            "admin": {"address": "127.0.0.1", "port": self.admin_port},
            "redis": {"url": redis_url},
            "auth": {"hmac_secret": "integration-test-secret-0123456789abcdef",
                     "allow_anonymous": True},
            "log": {"level": "debug", "format": "json", "file": self.log_path},
            # drain_health_ms 0: a stop drains at once (test_lb_stop tests
            # the /health phase before it)
            "timeouts": {"shutdown_ms": 2000, "drain_health_ms": 0,
                         "handshake_ms": 5000},
        }
        self.config = deep_merge(base, overrides)
        self.proc = None
        # Set by a test that checks the exit itself (e.g. SIGQUIT, whose exit
        # status the spec leaves open); finish() then skips the rc == 0 check.
        self.expect_clean_exit = True
        self.write_config()

    # -- config ------------------------------------------------------------

    @property
    def workers(self):
        return self.config["workers"]

    @property
    def url(self):
        return "ws://%s:%d/" % (self.host, self.port)

    @property
    def shutdown_s(self):
        return self.config["timeouts"]["shutdown_ms"] / 1000.0

    def write_config(self, config=None, text=None):
        """Write config (a dict, merged over nothing) or raw text to the
        config file. With neither, write self.config."""
        if text is None:
            if config is not None:
                self.config = config
            text = json.dumps(self.config, indent=2) + "\n"
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf_path)

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout=30):
        env = dict(os.environ)
        for k, v in DEFAULT_SANITIZER_ENV.items():
            env.setdefault(k, v)
        out = open(self.out_path, "ab")
        err = open(self.err_path, "ab")
        self.proc = subprocess.Popen(
            [self.bin, "-c", self.conf_path], cwd=self.dir, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True)
        out.close()
        err.close()
        self.wait_ready(timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=30):
        """Wait until all worker slots exist and a ping over WebSocket
        succeeds."""
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError("herald exited with %s during start-up\n%s"
                                     % (self.proc.returncode, self.diag()))
            slots = self.worker_slots()
            if sorted(slots) == list(range(self.workers)) and all(len(p) == 1 for p in slots.values()):
                try:
                    reply = run(ping_once(self.url, timeout=min(5.0, max(0.5, deadline - time.monotonic()))))
                    if "result" in reply:
                        return
                    last_err = "ping reply %r" % (reply,)
                except Exception as e:  # not ready yet
                    last_err = repr(e)
            time.sleep(0.05)
        raise AssertionError("herald not ready within %.0f s (last error: %s)\n%s"
                             % (timeout, last_err, self.diag()))

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        """The master's exit status, or None if it still runs after timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def finish(self):
        """Teardown: stop the master if it still runs (SIGTERM, then SIGKILL),
        reap stray processes of its group, and return a list of problems: a
        non-zero exit, a hang, leftover workers, sanitizer reports."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.send_signal(signal.SIGTERM)
            limit = min(self.shutdown_s + 10 * SLACK, 40.0)
            rc = self.wait_exit(limit)
            if rc is None:
                problems.append("master did not exit within %.1f s of SIGTERM" % limit)
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        rc = self.proc.returncode
        if self.expect_clean_exit and rc != 0:
            problems.append("master exit status %s, expected 0" % rc)
        # Workers must not outlive their master.
        try:
            wait_until(lambda: not pids_in_group(self.pid), 5, what="workers to exit")
        except AssertionError:
            left = pids_in_group(self.pid)
            problems.append("processes left after the master exited: %s"
                            % ", ".join("%d (%s)" % (p, read_cmdline(p)) for p in left))
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        problems.extend(self.sanitizer_reports())
        return problems

    # -- processes -----------------------------------------------------------

    def worker_slots(self):
        """{slot: [pids]} of the master's live children titled
        "herald: worker N". A slot may briefly have two pids while a worker
        is being replaced."""
        slots = {}
        if not self.alive():
            return slots
        for kid in children_of(self.pid):
            m = WORKER_TITLE.match(read_cmdline(kid))
            if m:
                slots.setdefault(int(m.group(1)), []).append(kid)
        for v in slots.values():
            v.sort()
        return slots

    def worker_pids(self):
        """{slot: pid}; fails if a slot has more than one process."""
        slots = self.worker_slots()
        dup = {s: p for s, p in slots.items() if len(p) != 1}
        assert not dup, "slots with several workers: %r" % dup
        return {s: p[0] for s, p in slots.items()}

    def wait_workers(self, expect, timeout=15, what=None, exclude=()):
        """Wait until the worker set is exactly expect: a dict {slot: pid or
        None}, None meaning any single pid that is not in exclude (e.g. a
        just-killed pid that /proc still shows for a moment). Returns
        {slot: pid}."""
        def check():
            slots = self.worker_slots()
            if sorted(slots) != sorted(expect):
                return None
            for s, pids in slots.items():
                if len(pids) != 1 or pids[0] in exclude:
                    return None
                if expect[s] is not None and pids[0] != expect[s]:
                    return None
            return {s: p[0] for s, p in slots.items()}
        try:
            return wait_until(check, timeout, what=what or "workers %r" % (expect,))
        except AssertionError as e:
            raise AssertionError("%s; have %r\n%s" % (e, self.worker_slots(), self.diag())) from None

    # -- output ----------------------------------------------------------------

    def _read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr(self):
        return self._read(self.err_path)

    def stdout(self):
        return self._read(self.out_path)

    def log_text(self):
        return self._read(self.log_path)

    def log_lines(self):
        """Parsed JSON log lines; a line that is not a JSON object becomes
        {"_raw": line, "_bad": True}."""
        out = []
        for line in self.log_text().splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
                obj["_raw"] = line
            except ValueError:
                obj = {"_raw": line, "_bad": True}
            out.append(obj)
        return out

    def find_log(self, pred, timeout=10, what="log line"):
        """Wait for a parsed log line for which pred(line) is true."""
        def check():
            for line in self.log_lines():
                if not line.get("_bad") and pred(line):
                    return line
            return None
        try:
            return wait_until(check, timeout, interval=0.05, what=what)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.diag())) from None

    def sanitizer_reports(self):
        problems = []
        for name, text in (("stderr", self.stderr()), ("stdout", self.stdout()),
                           ("log", self.log_text())):
            for marker in SANITIZER_MARKERS:
                i = text.find(marker)
                if i >= 0:
                    start = max(0, text.rfind("\n", 0, max(0, i - 200)))
                    problems.append("sanitizer report (%r) in herald %s:\n%s"
                                    % (marker, name, text[start:start + 4000]))
                    break
        return problems

    def diag(self, tail=40):
        """The tails of stderr and the log, for failure messages."""
        def t(s):
            return "\n".join(s.splitlines()[-tail:])
        return ("--- herald stderr (tail) ---\n%s\n--- herald log (tail) ---\n%s"
                % (t(self.stderr()), t(self.log_text())))


def log_text_of(line):
    """All string values of a parsed log line joined, so a match does not
    depend on which field (msg, error, ...) carries the text."""
    parts = []

    def walk(v):
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                if not k.startswith("_"):
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(line)
    return "\n".join(parts)


# --------------------------------------------------------------------------
# WebSocket client (websockets 10.x asyncio API)

def run(coro):
    """Run a coroutine to completion on a fresh event loop."""
    return asyncio.run(coro)


def connect(url, subprotocols=(SUBPROTOCOL,), open_timeout=10):
    """websockets.connect() with the settings the tests want: our
    subprotocol, no client keepalive pings, bounded handshake and close."""
    return websockets.connect(
        url,
        subprotocols=list(subprotocols) if subprotocols else None,
        open_timeout=open_timeout,
        close_timeout=5,
        ping_interval=None,
        max_size=16 * 1024 * 1024,
    )


async def recv_messages(ws, n, timeout=10):
    """Receive frames until n messages have arrived; a text frame may carry
    several newline-separated JSON messages. Returns the parsed messages
    (exactly the ones received: more than n if the last frame had more)."""
    msgs = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(msgs) < n:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError("timed out after %.1f s: got %d of %d messages: %r"
                                 % (timeout, len(msgs), n, msgs))
        try:
            frame = await asyncio.wait_for(ws.recv(), left)
        except asyncio.TimeoutError:
            continue
        assert isinstance(frame, str), "expected a text frame, got %r" % (frame,)
        for part in frame.split("\n"):
            if part.strip():
                msgs.append(json.loads(part))
    return msgs


async def recv_nothing(ws, quiet=0.3):
    """Assert that no further message arrives within quiet seconds."""
    try:
        frame = await asyncio.wait_for(ws.recv(), quiet)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected extra frame: %r" % (frame,))


async def command(ws, cmd_id, method, params=None, timeout=10):
    """Send one command and return its one reply."""
    msg = {"id": cmd_id, "method": method}
    if params is not None:
        msg["params"] = params
    await ws.send(json.dumps(msg))
    (reply,) = await recv_messages(ws, 1, timeout)
    return reply


async def ping_once(url, cmd_id=1, timeout=10, subprotocols=(SUBPROTOCOL,)):
    """Open a fresh connection, ping, close; returns the reply."""
    async with connect(url, subprotocols, open_timeout=timeout) as ws:
        return await command(ws, cmd_id, "ping", {}, timeout)


async def slots_seen(url, connections, want=None):
    """Ping over up to `connections` fresh connections; return the set of
    worker slots that answered. Stops early once `want` (a set) is seen."""
    seen = set()
    for i in range(connections):
        try:
            reply = await ping_once(url, cmd_id=i + 1)
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
            raise AssertionError("connection %d of %d (slots seen so far %r) failed: %r"
                                 % (i + 1, connections, sorted(seen), e)) from None
        assert reply.get("id") == i + 1 and "result" in reply, reply
        seen.add(reply["result"]["worker"])
        if want is not None and want <= seen:
            break
    return seen


# --------------------------------------------------------------------------
# pub/sub data plane (test_pubsub, test_auth, test_api, test_channels)

API_KEY = "integration-api-key-0123456789abcdef"

# Config overrides for the pub/sub tests: the HTTP API on, tokens required,
# and namespaces with every combination of flags the tests need.
PUBSUB_CONFIG = {
    "auth": {"allow_anonymous": False},
    # lws logs every socket event at debug: too much for the bulk tests
    "log": {"level": "info"},
    "api": {"key": API_KEY},
    "namespaces": {
        "default": {"publish": True},
        "chat": {"publish": True},
        "ro": {},                                   # no client publish
        "news": {"publish": True},
        "open": {"anonymous": True, "publish": True},
        "public": {"anonymous": True},
    },
}


class Client:
    """A herald.v1 client over one WebSocket: matches replies by id, keeps
    pushes in arrival order, counts frames and messages. Every line of
    every frame must parse as JSON (json.loads raises otherwise)."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 1
        self.replies = {}       # id -> reply, until taken by call()
        self.noid = []          # replies without an id
        self.pushes = []        # the "push" objects, in arrival order
        self.frames = 0
        self.msgs = 0
        self.info = None        # the connect result

    @property
    def worker(self):
        return self.info["worker"] if self.info else None

    def _dispatch(self, frame):
        assert isinstance(frame, str), "expected a text frame, got %r" % (frame,)
        self.frames += 1
        for line in frame.split("\n"):
            if not line.strip():
                continue
            msg = json.loads(line)
            assert isinstance(msg, dict), line
            self.msgs += 1
            if "push" in msg:
                self.pushes.append(msg["push"])
            elif "id" in msg:
                assert msg["id"] not in self.replies, "second reply for id %r: %r" % (msg["id"], msg)
                self.replies[msg["id"]] = msg
            else:
                self.noid.append(msg)

    async def pump(self, timeout):
        """Read and dispatch one frame; False if none came within timeout.
        Raises websockets ConnectionClosed when the connection is closed."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), max(0.0, timeout))
        except asyncio.TimeoutError:
            return False
        self._dispatch(frame)
        return True

    async def until(self, pred, timeout=10, what="condition"):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError("timed out after %.1f s waiting for %s (worker %s; %d pushes, "
                                     "replies %r, noid %r)" % (timeout, what, self.worker, len(self.pushes),
                                                               self.replies, self.noid))
            await self.pump(left)

    async def drain(self, seconds):
        """Read whatever arrives during the next `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            await self.pump(deadline - loop.time())

    async def send(self, method, params=None):
        cmd_id = self.next_id
        self.next_id += 1
        msg = {"id": cmd_id, "method": method}
        if params is not None:
            msg["params"] = params
        await self.ws.send(json.dumps(msg))
        return cmd_id

    async def reply(self, cmd_id, timeout=10):
        await self.until(lambda: cmd_id in self.replies, timeout, "the reply to id %d" % cmd_id)
        return self.replies.pop(cmd_id)

    async def call(self, method, params=None, timeout=10):
        return await self.reply(await self.send(method, params), timeout)

    async def connect(self, token=None, timeout=10):
        r = await self.call("connect", {"token": token} if token is not None else {}, timeout)
        if "result" in r:
            self.info = r["result"]
        return r

    async def subscribe(self, channel, timeout=10):
        return await self.call("subscribe", {"channel": channel}, timeout)

    async def unsubscribe(self, channel, timeout=10):
        return await self.call("unsubscribe", {"channel": channel}, timeout)

    async def publish(self, channel, data, timeout=10):
        return await self.call("publish", {"channel": channel, "data": data}, timeout)

    def pubs(self, channel):
        """The "pub" objects pushed on channel, in arrival order."""
        return [p["pub"] for p in self.pushes if p.get("channel") == channel and "pub" in p]

    def gaps(self, channel):
        return [p["gap"] for p in self.pushes if p.get("channel") == channel and "gap" in p]

    async def wait_pubs(self, channel, n, timeout=10):
        await self.until(lambda: len(self.pubs(channel)) >= n, timeout,
                         "%d publications on %s" % (n, channel))
        return self.pubs(channel)

    async def wait_closed(self, timeout=10):
        """Read (and dispatch) until the server closes; return the close
        code. Fails if the connection is still open after timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise AssertionError("connection still open after %.1f s (worker %s)"
                                         % (timeout, self.worker))
                await self.pump(left)
        except websockets.exceptions.ConnectionClosed:
            return self.ws.close_code

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 10)
        except (asyncio.TimeoutError, OSError, websockets.exceptions.WebSocketException):
            pass


async def open_client(url, token=None, do_connect=True, open_timeout=20, **ws_kwargs):
    """A Client on a fresh connection; with do_connect, sends connect (with
    token, or none for anonymous) and asserts it succeeded."""
    kw = dict(subprotocols=[SUBPROTOCOL], open_timeout=open_timeout, close_timeout=5,
              ping_interval=None, max_size=16 * 1024 * 1024, max_queue=None)
    kw.update(ws_kwargs)
    ws = await websockets.connect(url, **kw)
    c = Client(ws)
    if do_connect:
        r = await c.connect(token)
        assert "result" in r, "connect failed: %r" % (r,)
    return c


async def clients_on_workers(url, token=None, slots=(0, 1), tries=60):
    """{slot: Client} with one connected client on each wanted worker slot,
    opening fresh connections until every slot is covered."""
    got, extra = {}, []
    try:
        for _ in range(tries):
            c = await open_client(url, token)
            if c.worker in slots and c.worker not in got:
                got[c.worker] = c
            else:
                extra.append(c)
            if len(got) == len(slots):
                return got
        raise AssertionError("no connection reached slots %r in %d tries (got %r)"
                             % (slots, tries, sorted(got)))
    finally:
        for c in extra:
            await c.close()


def redis_cli(port, *args, timeout=10):
    """Run redis-cli against 127.0.0.1:port; returns stdout."""
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + [str(a) for a in args],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return r.stdout.decode("utf-8", "replace")


def redis_pubsub_channels(port, pattern="*"):
    """The set of channels Redis has subscribers for."""
    return {line for line in redis_cli(port, "PUBSUB", "CHANNELS", pattern).splitlines() if line}


def redis_restart_same_port(srv, timeout=15):
    """Start srv's redis-server again on the port it had (after stop())."""
    port = srv.port
    deadline = time.monotonic() + timeout
    while True:
        log = open(os.path.join(srv.dir, "redis.log"), "ab")
        srv.proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", srv.dir],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=srv.dir)
        log.close()
        while time.monotonic() < deadline and srv.proc.poll() is None:
            if srv.ping():
                return srv
            time.sleep(0.02)
        srv.stop()
        if time.monotonic() >= deadline:
            raise AssertionError("redis-server did not restart on port %d; see %s/redis.log"
                                 % (port, srv.dir))
        time.sleep(0.2)         # port still held: try again


def api_request(port, path, body=None, key=API_KEY, method="POST", headers=None, timeout=10):
    """One HTTP request to herald's API on a fresh connection. body: a dict
    (sent as JSON), bytes or str. Returns (status, parsed JSON body or the
    text when it is not JSON)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json"}
        if key is not None:
            hdrs["Authorization"] = "apikey " + key
        hdrs.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read().decode("utf-8", "replace")
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data
    finally:
        conn.close()


# --------------------------------------------------------------------------
# admin server (test_admin, test_metrics)

def admin_request(port, path, method="GET", headers=None, timeout=10):
    """One HTTP request to the master's admin server on 127.0.0.1:port, on a
    fresh connection. Returns (status, {lower-case header name: value},
    body text)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


_PROM_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_PROM_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_metrics(text):
    """Parse Prometheus text format 0.0.4 strictly enough for the tests.
    Returns (types, samples): types maps a family name to its TYPE;
    samples maps (name, ((label, value), ...) sorted by label) to a float.
    A line that does not parse or a series that appears twice fails."""
    types, samples = {}, {}
    for n, line in enumerate(text.split("\n"), 1):
        if not line or line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, fam, typ = line.split(" ", 3)
            assert fam not in types, "line %d: second TYPE for %s" % (n, fam)
            types[fam] = typ
            continue
        assert not line.startswith("#"), "line %d: unexpected comment %r" % (n, line)
        m = _PROM_SAMPLE.match(line)
        assert m, "line %d does not parse: %r" % (n, line)
        labels, rest = [], m.group(2) or ""
        while rest:
            lm = _PROM_LABEL.match(rest)
            assert lm, "line %d: bad labels %r" % (n, m.group(2))
            labels.append((lm.group(1), lm.group(2)))
            rest = rest[lm.end():]
        key = (m.group(1), tuple(sorted(labels)))
        assert key not in samples, "line %d: duplicate series %r" % (n, line)
        samples[key] = float(m.group(3))
    return types, samples


def pubsub_config(**over):
    """PUBSUB_CONFIG with over merged in (same rules as deep_merge)."""
    return deep_merge(PUBSUB_CONFIG, over)


def token_for(herald, **claims):
    """A valid token for herald's secret (jwtutil.token arguments)."""
    import jwtutil
    return jwtutil.token(herald.config["auth"]["hmac_secret"], **claims)
