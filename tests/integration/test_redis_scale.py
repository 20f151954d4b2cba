"""Redis at scale and under failure (issue 18): an ACL user limited by the
rule in docs/operations.md, the password from a file; a Sentinel-managed
primary killed with SIGKILL under a steady publish load (with and without
redis.wait_replicas); channels sharded over three Redis servers, one of
them stopped; a TLS-only Redis reached through the stunnel recipe in
deploy/stunnel/.

Each test starts its own redis-server / redis-sentinel / stunnel processes
on free loopback ports.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from harness import (API_KEY, RedisServer, admin_request, api_request,
                     free_port, pubsub_config, redis_cli, run, token_for,
                     wait_until)
from test_history import close_all, open_tclient, subscribed

NAMESPACES = {
    "hist": {"publish": True, "history_size": 10000, "history_ttl_s": 600},
    "nohist": {"publish": True},
    "pres": {"publish": True, "presence": True, "join_leave": True},
}

ACL_PASSWORD = "acl-pass-0123456789"

# The rule docs/operations.md gives ("Redis ACL user"), read from there so
# that the documented rule is the tested one.
def acl_rule(password):
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "operations.md")
    for line in open(doc):
        if line.strip().startswith("ACL SETUSER herald on >PASSWORD "):
            words = line.split()[3:]
            return [(">" + password) if w == ">PASSWORD" else w for w in words]
    raise AssertionError("docs/operations.md has no ACL SETUSER herald line")


def scale_config(**over):
    base = dict(namespaces=NAMESPACES, limits={"commands_per_second": 0})
    base.update(over)
    return pubsub_config(**base)


class Redis(RedisServer):
    """A RedisServer with extra command-line arguments."""

    def __init__(self, workdir, *extra):
        super().__init__(workdir)
        self.extra = list(extra)

    def start(self, timeout=15):
        for _ in range(5):
            self.port = free_port()
            log = open(os.path.join(self.dir, "redis.log"), "ab")
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self.dir] + self.extra,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.dir)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.ping():
                    return self
                time.sleep(0.02)
            self.stop()
        raise AssertionError("redis-server did not start; see %s/redis.log" % self.dir)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)


def health(h):
    status, _, body = admin_request(h.admin_port, "/health", timeout=5)
    return status, json.loads(body)


def herald_without_url(make_herald, **cfg):
    """A herald whose redis section has no url (sentinel or shards)."""
    h = make_herald(start=False, **cfg)
    del h.config["redis"]["url"]
    h.write_config()
    h.start()
    return h


# --------------------------------------------------------------------------
# ACL user, password from a file

def test_acl_user_with_password_file(make_herald, tmp_path, redis_server):
    port = redis_server.port
    out = redis_cli(port, "ACL", "SETUSER", "herald", *acl_rule(ACL_PASSWORD))
    assert out.strip() == "OK", out
    pwfile = tmp_path / "redis-password"
    pwfile.write_text(ACL_PASSWORD + "\n")
    h = make_herald(start=False, **scale_config(
        redis={"url": "redis://herald:@127.0.0.1:%d" % port,
               "password_file": str(pwfile)}))
    h.start()
    tok = token_for(h, sub="u1")

    async def go():
        sub = await open_tclient(h.url, tok)
        pub = await open_tclient(h.url, tok)
        first = await subscribed(sub, "hist:acl")
        await subscribed(sub, "nohist:acl")
        for i in range(5):
            r = await pub.publish("hist:acl", {"i": i})
            assert "result" in r, r
            r = await pub.publish("nohist:acl", {"i": i})
            assert "result" in r, r
        await sub.wait_pubs("hist:acl", 5)
        await sub.wait_pubs("nohist:acl", 5)
        r = await pub.call("history", {"channel": "hist:acl", "limit": 10})
        assert [p["data"]["i"] for p in r["result"]["publications"]] == list(range(5)), r
        # recovery through the restricted user
        rec = await pub.call("subscribe", {"channel": "hist:acl", "recover": True,
                                           "offset": 2, "epoch": first["epoch"]})
        assert rec["result"]["recovered"] is True, rec
        assert [p["data"]["i"] for p in rec["result"]["publications"]] == [2, 3, 4], rec
        # an idempotency key: the repeat is not published again
        r1 = await pub.call("publish", {"channel": "nohist:acl", "data": "once",
                                        "idempotency_key": "k-1"})
        r2 = await pub.call("publish", {"channel": "nohist:acl", "data": "once",
                                        "idempotency_key": "k-1"})
        assert r1["result"]["offset"] == r2["result"]["offset"], (r1, r2)
        # presence and join/leave (scripts that read the node registry)
        await subscribed(sub, "pres:acl")
        await subscribed(pub, "pres:acl")
        await sub.until(lambda: any("join" in p for p in sub.pushes), what="a join push")
        r = await pub.call("presence_stats", {"channel": "pres:acl"})
        assert r["result"]["clients"] == 2, r
        r = await pub.call("presence", {"channel": "pres:acl"})
        assert r["result"]["total"] == 2, r
        await close_all([sub, pub])

    run(go())
    # every connection herald holds is the ACL user's, and Redis refused
    # nothing it asked for
    clients = [l for l in redis_cli(port, "CLIENT", "LIST").splitlines()
               if "cmd=client|list" not in l]
    assert clients and all(" user=herald " in " %s " % l or "user=herald " in l
                           for l in clients), clients
    assert redis_cli(port, "ACL", "LOG").strip() == "", redis_cli(port, "ACL", "LOG")
    status, body = health(h)
    assert status == 200, body


def test_acl_wrong_password_is_degraded_not_silent(make_herald, tmp_path, redis_server):
    port = redis_server.port
    redis_cli(port, "ACL", "SETUSER", "herald", *acl_rule(ACL_PASSWORD))
    pwfile = tmp_path / "redis-password"
    pwfile.write_text("not-the-password\n")
    h = make_herald(start=False, **scale_config(
        redis={"url": "redis://herald:@127.0.0.1:%d" % port,
               "password_file": str(pwfile)}))
    h.start()
    h.find_log(lambda l: "AUTH/SELECT failed" in l.get("msg", ""), what="AUTH failure")
    # once the workers serve (they wait a moment for Redis first)
    wait_until(lambda: health(h)[1]["status"] == "degraded", 10, what="degraded")
    status, body = health(h)
    assert status == 503 and not any(w["up"] for w in body["redis"]), body
    assert "not-the-password" not in h.log_text()
    status, body = api_request(h.port, "/api/publish",
                               {"channel": "nohist:x", "data": 1}, key=API_KEY)
    assert status == 503, body


# --------------------------------------------------------------------------
# Sentinel

class Sentinel:
    def __init__(self, workdir, master_port, down_after_ms=500):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\n"
                    "sentinel monitor mymaster 127.0.0.1 %d 1\n"
                    "sentinel down-after-milliseconds mymaster %d\n"
                    "sentinel failover-timeout mymaster 5000\n"
                    % (self.port, self.dir, master_port, down_after_ms))
        log = open(os.path.join(self.dir, "sentinel.log"), "ab")
        self.proc = subprocess.Popen(["redis-sentinel", self.conf], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.dir)
        log.close()

    def cli(self, *args):
        return redis_cli(self.port, *args, timeout=5)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture
def sentinel_group(tmp_path):
    """A primary, two replicas (one left to WAIT for once the other is
    promoted) and one Sentinel that knows them all."""
    if shutil.which("redis-sentinel") is None:
        pytest.fail("redis-sentinel not on PATH (apt-get install redis-sentinel)")
    # a full sync at once, not after the default 5 s wait for more replicas
    fast = ("--repl-diskless-sync-delay", "0")
    master = Redis(tmp_path / "m", *fast).start()
    replicas = [Redis(tmp_path / ("r%d" % i), *fast).start() for i in range(2)]
    for r in replicas:
        redis_cli(r.port, "REPLICAOF", "127.0.0.1", master.port)
    for r in replicas:
        wait_until(lambda: "master_link_status:up" in redis_cli(r.port, "INFO", "replication"),
                   15, what="replica in sync")
    sen = Sentinel(tmp_path / "s", master.port)
    for r in replicas:
        wait_until(lambda: str(r.port) in sen.cli("SENTINEL", "replicas", "mymaster"),
                   20, what="Sentinel knows the replicas")
    yield master, replicas, sen
    sen.stop()
    for r in replicas:
        r.stop()
    master.stop()


async def steady_publisher(c, ch, stop, acked, failed, period=0.01):
    i = 0
    while not stop.is_set():
        r = await c.call("publish", {"channel": ch, "data": i}, timeout=15)
        if "result" in r:
            acked.append((time.monotonic(), r["result"]["offset"], i))
        else:
            failed.append((time.monotonic(), i, r["error"]["code"]))
        i += 1
        await asyncio.sleep(period)


async def reader(c, stop):
    while not stop.is_set():
        await c.pump(0.05)


def failover_run(make_herald, sentinel_group, wait_replicas):
    master, replicas, sen = sentinel_group
    redis = {"sentinel": {"master_name": "mymaster",
                          "addresses": ["127.0.0.1:%d" % sen.port]},
             "reconnect_max_ms": 1000}
    if wait_replicas:
        redis.update(wait_replicas=1, wait_timeout_ms=300)
    h = herald_without_url(make_herald, **scale_config(redis=redis))
    tok = token_for(h, sub="u1")
    ch = "hist:failover"

    async def go():
        pub = await open_tclient(h.url, tok)
        sub = await open_tclient(h.url, tok)
        await subscribed(sub, ch)
        stop, acked, failed = asyncio.Event(), [], []
        tasks = [asyncio.ensure_future(steady_publisher(pub, ch, stop, acked, failed)),
                 asyncio.ensure_future(reader(sub, stop))]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while len(acked) < 30:
            await asyncio.sleep(0.05)
            assert loop.time() - t0 < 20, "no steady publishing: %r" % failed[-3:]
        killed = time.monotonic()
        master.kill9()
        deadline = loop.time() + 30
        degraded = False
        while not any(t > killed + 0.5 for t, *_ in acked):
            await asyncio.sleep(0.05)
            st, body = health(h)
            degraded |= st == 503 and body["status"] == "degraded"
            assert loop.time() < deadline, "publishing did not resume: %r" % failed[-3:]
        # no primary for at least down-after-milliseconds: /health said so
        assert degraded, "/health never degraded while there was no primary"
        resumed = min(t for t, *_ in acked if t > killed + 0.5)
        n = len(acked)
        while len(acked) < n + 20:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
        await sub.drain(1.0)
        await close_all([pub, sub])
        return killed, resumed, acked, failed, sub

    killed, resumed, acked, failed, sub = run(go())
    port = int(sen.cli("SENTINEL", "get-master-addr-by-name", "mymaster").split()[1])
    promoted = [r for r in replicas if r.port == port]
    assert len(promoted) == 1, "no replica was promoted"
    replica = promoted[0]
    h.find_log(lambda l: "the primary is 127.0.0.1:%d" % replica.port in l.get("msg", ""),
               what="herald follows the promotion")
    # docs/operations.md: delivery resumes within down-after-milliseconds +
    # the failover (a few seconds) + redis.reconnect_max_ms
    print("publishing resumed %.2f s after the kill -9 (wait_replicas %d)"
          % (resumed - killed, 1 if wait_replicas else 0))
    assert resumed - killed < 15, resumed - killed
    status, body = health(h)
    assert status == 200, body
    return acked, failed, sub, replica, ch


def delivered_or_gapped(sub, ch, acked):
    """Every acknowledged publication reached the subscriber, or a gap push
    named it (its offset, or a new epoch that restarted the numbering):
    never a silent hole."""
    pubs = sub.pubs(ch)
    got = {p["data"] for p in pubs}
    first_epoch = pubs[0]["epoch"]
    gaps = sub.gaps(ch)
    for _, off, data in acked:
        if data in got:
            continue
        assert any(g["from"] <= off <= g["to"] for g in gaps) or \
            any(g["epoch"] != first_epoch for g in gaps), (
                "acked offset %d (data %r) neither delivered nor in a gap: gaps %r"
                % (off, data, gaps))


def test_sentinel_failover_with_wait_loses_no_ack(make_herald, sentinel_group):
    acked, failed, sub, replica, ch = failover_run(make_herald, sentinel_group, True)
    # WAIT 1: every acknowledged publication is on the promoted replica, in
    # the history of one epoch, with the data it was acknowledged for
    out = subprocess.run(["redis-cli", "-p", str(replica.port), "--json", "XRANGE",
                          "{herald||%s}:hist" % ch, "-", "+"],
                         capture_output=True, timeout=10).stdout
    hist = {}
    for _id, (_f, env) in json.loads(out):
        _v, off, epoch, _t, data = env.split(" ", 4)
        hist[int(off)] = (epoch, json.loads(data))
    assert len({e for e, _ in hist.values()}) == 1, "the epoch changed under WAIT"
    missing = [(off, data) for _, off, data in acked if hist.get(off, (0, None))[1] != data]
    assert not missing, "acknowledged publications missing after the failover: %r" % missing
    delivered_or_gapped(sub, ch, acked)


def test_sentinel_failover_without_wait_tells_clients(make_herald, sentinel_group):
    acked, failed, sub, replica, ch = failover_run(make_herald, sentinel_group, False)
    delivered_or_gapped(sub, ch, acked)
    # the failover started a new epoch (a new primary, a new replication
    # id): the subscriber was told
    epochs = [p["epoch"] for p in sub.pubs(ch)]
    assert len(set(epochs)) == 2, set(epochs)
    assert sub.gaps(ch), "no gap push after the failover"


# --------------------------------------------------------------------------
# shards

def test_shards_spread_and_isolate(make_herald, tmp_path):
    shards = [Redis(tmp_path / ("shard%d" % i)).start() for i in range(3)]
    try:
        cfg = scale_config(redis={"shards": [{"url": s.url} for s in shards],
                                  "reconnect_max_ms": 500})
        h1 = herald_without_url(make_herald, **cfg)
        h2 = herald_without_url(make_herald, **cfg)
        # 10,000 channels through two nodes (alternating), then count where
        # they landed: each on exactly one shard, within +-20 % of a third
        names = ["ch%d" % i for i in range(10000)]
        for k in range(0, len(names), 1000):
            node = h1 if (k // 1000) % 2 == 0 else h2
            status, body = api_request(node.port, "/api/broadcast",
                                       {"channels": ["nohist:" + n for n in names[k:k + 1000]],
                                        "data": 1}, key=API_KEY, timeout=30)
            assert status == 200, body
        counts = [int(redis_cli(s.port, "EVAL",
                                "return #redis.call('KEYS', '{herald||nohist:ch*}:meta')", 0))
                  for s in shards]
        assert sum(counts) == 10000, counts
        for c in counts:
            assert abs(c - 10000 / 3) <= 0.2 * 10000 / 3, counts
        # the same channel from the other node lands on the same shard
        status, body = api_request(h2.port, "/api/broadcast",
                                   {"channels": ["nohist:" + n for n in names[:1000]],
                                    "data": 2}, key=API_KEY, timeout=30)
        assert status == 200
        assert sum(int(redis_cli(s.port, "EVAL",
                                 "return #redis.call('KEYS', '{herald||nohist:ch*}:meta')", 0))
                   for s in shards) == 10000

        def shard_of(ch):
            for i, s in enumerate(shards):
                if redis_cli(s.port, "EXISTS", "{herald||%s}:meta" % ch).strip() == "1":
                    return i
            raise AssertionError(ch)

        # one channel per shard
        by_shard = {}
        for n in names[:60]:
            by_shard.setdefault(shard_of("nohist:" + n), "nohist:" + n)
        assert len(by_shard) == 3, by_shard
        shards[1].stop()
        down = by_shard[1]
        tok = token_for(h1, sub="u1")

        def shard_down():
            st, b = health(h1)
            return st == 503 and any(s["name"] == "127.0.0.1:%d" % shards[1].port
                                     and not s["up"] for s in b.get("redis_shards", []))
        wait_until(shard_down, 15, what="/health names the stopped shard")

        async def go():
            c = await open_tclient(h1.url, tok)
            for i, ch in by_shard.items():
                r = await c.subscribe(ch)
                rp = await c.publish(ch, "x")
                if i == 1:
                    assert r["error"]["code"] == 503, r
                    assert rp["error"]["code"] == 503, rp
                else:
                    assert "result" in r, r
                    assert "result" in rp, rp
            await close_all([c])

        run(go())
        status, body = api_request(h1.port, "/api/publish", {"channel": down, "data": 1},
                                   key=API_KEY)
        assert status == 503, body
        status, body = api_request(h1.port, "/api/publish", {"channel": by_shard[0], "data": 1},
                                   key=API_KEY)
        assert status == 200, body
    finally:
        for s in shards:
            s.stop()


def test_presence_refresh_with_a_shard_down_leaks_nothing(make_herald, tmp_path):
    """The presence refresh runs while any shard is up, on each channel's
    own shard; a channel whose shard is down is skipped, period after
    period, without leaking what the skipped request carried (the ASan
    build checks at exit)."""
    shards = [Redis(tmp_path / ("ps%d" % i)).start() for i in range(2)]
    try:
        cfg = scale_config(redis={"shards": [{"url": s.url} for s in shards],
                                  "reconnect_max_ms": 500},
                           cluster={"heartbeat_ms": 100, "node_ttl_ms": 300})
        h = herald_without_url(make_herald, workers=1, **cfg)
        names = ["pres:r%d" % i for i in range(24)]

        async def go():
            c = await open_tclient(h.url, token_for(h, sub="u1"))
            for ch in names:
                r = await c.subscribe(ch)
                assert "result" in r, r
            down = [ch for ch in names
                    if redis_cli(shards[1].port, "EXISTS",
                                 "{herald||%s}:pres" % ch).strip() == "1"]
            assert down, "no presence channel on shard 1"
            shards[1].stop()
            await asyncio.sleep(2.0)   # a few refresh periods (node_ttl_ms)
            await close_all([c])

        run(go())
        assert h.finish() == []   # exit, and no sanitizer report
    finally:
        for s in shards:
            s.stop()


# --------------------------------------------------------------------------
# TLS through the stunnel recipe

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "stunnel")


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def stunnel_conf(path, accept_port, redis_port, ca):
    """deploy/stunnel/herald-redis.conf with this test's ports, CA and host
    name: the shipped file is what runs."""
    out = []
    for line in open(os.path.join(DEPLOY, "herald-redis.conf")):
        key = line.split("=")[0].strip()
        if key == "accept":
            line = "accept = 127.0.0.1:%d\n" % accept_port
        elif key == "connect":
            line = "connect = 127.0.0.1:%d\n" % redis_port
        elif key == "CAfile":
            line = "CAfile = %s\n" % ca
        elif key == "checkHost":
            line = "checkHost = localhost\n"
        out.append(line)
    with open(path, "w") as f:
        f.writelines(out)


def test_tls_only_redis_through_stunnel(make_herald, tmp_path):
    if shutil.which("stunnel4") is None:
        pytest.fail("stunnel4 not on PATH (apt-get install stunnel4)")
    d = str(tmp_path / "tls")
    os.makedirs(d)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=herald test CA", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
            "-subj", "/CN=localhost", cwd=d)
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext", cwd=d)
    tls_port = free_port()
    # TLS only (--port 0), a password, no client certificates
    srv = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(tls_port), "--bind", "127.0.0.1",
         "--tls-cert-file", "srv.pem", "--tls-key-file", "srv.key",
         "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no",
         "--requirepass", "tls-redis-pw", "--save", "", "--appendonly", "no", "--dir", d],
        cwd=d, stdout=open(os.path.join(d, "redis.log"), "ab"), stderr=subprocess.STDOUT)
    accept = free_port()
    conf = os.path.join(d, "stunnel.conf")
    stunnel_conf(conf, accept, tls_port, os.path.join(d, "ca.pem"))
    tun = subprocess.Popen(["stunnel4", conf], cwd=d,
                           stdout=open(os.path.join(d, "stunnel.log"), "ab"),
                           stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "PONG" in redis_cli(accept, "-a", "tls-redis-pw", "--no-auth-warning",
                                               "PING"),
                   15, what="Redis answering through stunnel")
        # plain text straight to the TLS port gets nowhere
        assert "PONG" not in redis_cli(tls_port, "-a", "tls-redis-pw", "--no-auth-warning",
                                       "PING", timeout=5)
        pwfile = tmp_path / "pw"
        pwfile.write_text("tls-redis-pw\n")
        h = make_herald(start=False, **scale_config(
            redis={"url": "redis://127.0.0.1:%d" % accept, "password_file": str(pwfile)}))
        h.start()
        tok = token_for(h, sub="u1")

        async def go():
            sub = await open_tclient(h.url, tok)
            pub = await open_tclient(h.url, tok)
            await subscribed(sub, "hist:tls")
            for i in range(3):
                assert "result" in await pub.publish("hist:tls", i)
            pubs = await sub.wait_pubs("hist:tls", 3)
            assert [p["data"] for p in pubs] == [0, 1, 2]
            await close_all([sub, pub])

        run(go())
        status, body = health(h)
        assert status == 200, body
    finally:
        tun.terminate()
        tun.wait(5)
        srv.terminate()
        srv.wait(5)


def test_reload_adding_a_shard_moves_some_channels_to_a_new_epoch(make_herald, tmp_path):
    """2 shards -> 3 by SIGHUP: about a third of the channels move; a moved
    channel starts a new epoch on its new shard, so a recovery from before
    the move says recovered: false (never wrong data); the others recover
    exactly, as if nothing happened."""
    shards = [Redis(tmp_path / ("rs%d" % i)).start() for i in range(3)]
    try:
        cfg = scale_config(redis={"shards": [{"url": s.url} for s in shards[:2]]})
        h = herald_without_url(make_herald, **cfg)
        tok = token_for(h, sub="u1")
        chans = ["hist:mv%d" % i for i in range(60)]

        async def publish_all(c, data):
            out = {}
            for ch in chans:
                r = await c.call("publish", {"channel": ch, "data": data})
                assert "result" in r, r
                out[ch] = r["result"]["offset"]
            return out

        async def before():
            c = await open_tclient(h.url, tok)
            epochs = {}
            for ch in chans:
                epochs[ch] = (await subscribed(c, ch))["epoch"]
            await publish_all(c, "a")
            await close_all([c])
            return epochs

        epochs = run(before())

        def where(ch):
            return [i for i, s in enumerate(shards)
                    if redis_cli(s.port, "EXISTS", "{herald||%s}:meta" % ch).strip() == "1"]

        old = {ch: where(ch) for ch in chans}
        assert all(len(v) == 1 and v[0] in (0, 1) for v in old.values()), old
        old_pids = set(h.worker_pids().values())
        h.config["redis"]["shards"] = [{"url": s.url} for s in shards]
        h.write_config()
        h.send_signal(signal.SIGHUP)
        # the replaced workers drain and go; then only new ones serve
        def replaced():
            slots = h.worker_slots()
            pids = {p for ps in slots.values() for p in ps}
            return (len(slots) == 2 and all(len(ps) == 1 for ps in slots.values())
                    and not (old_pids & pids) and health(h)[0] == 200)
        wait_until(replaced, 30, what="workers replaced on the new shard list")

        async def after():
            c = await open_tclient(h.url, tok)
            res = {}
            for ch in chans:
                r = await c.call("subscribe", {"channel": ch, "recover": True,
                                               "offset": 0, "epoch": epochs[ch]})
                assert "result" in r, r
                res[ch] = r["result"]
            await close_all([c])
            return res

        res = run(after())
        moved = [ch for ch in chans if 2 in where(ch)]
        stayed = [ch for ch in chans if ch not in moved]
        # rendezvous hashing: only channels the new shard wins move
        assert all(where(ch) == old[ch] for ch in stayed)
        assert 8 <= len(moved) <= 35, len(moved)
        for ch in moved:
            assert res[ch]["recovered"] is False and res[ch]["epoch"] != epochs[ch], res[ch]
        for ch in stayed:
            assert res[ch]["recovered"] is True and res[ch]["epoch"] == epochs[ch], res[ch]
            assert [p["data"] for p in res[ch]["publications"]] == ["a"], res[ch]
    finally:
        for s in shards:
            s.stop()
