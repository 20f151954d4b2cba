"""Prometheus metrics from the shared-memory segment, scraped from the
master's admin server (docs/metrics.md): promtool, counters that never go
down across kill -9 and scaling, the connection gauge, message and
handshake counters, reload and restart counters."""

import asyncio
import collections
import math
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

import jwtutil
from harness import SLACK, admin_request, open_client, parse_metrics, wait_until

# "m": anonymous clients may subscribe, and everyone may publish.
NAMESPACES = {"m": {"publish": True, "anonymous": True}}


# --------------------------------------------------------------------------
# scraping and reading samples

def scrape_text(h):
    status, hdrs, body = admin_request(h.admin_port, "/metrics")
    assert status == 200, "GET /metrics: %d %r" % (status, body[:300])
    return hdrs, body


def scrape(h):
    """(types, samples) of one GET /metrics."""
    return parse_metrics(scrape_text(h)[1])


def series(samples, name, **labels):
    """{labels dict as tuple: value} of every series of name whose labels
    include labels."""
    want = set(labels.items())
    return {k[1]: v for k, v in samples.items()
            if k[0] == name and want <= set(k[1])}


def value(samples, name, **labels):
    """The value of the one series name{labels} (exact label set), or None."""
    return samples.get((name, tuple(sorted(labels.items()))))


def node_sum(samples, name, **labels):
    return math.fsum(series(samples, name, **labels).values())


def per_worker(samples, name, **labels):
    """{worker id: value} of name (summed over other labels)."""
    out = collections.Counter()
    for lab, v in series(samples, name, **labels).items():
        d = dict(lab)
        if "worker" in d:
            out[int(d["worker"])] += v
    return dict(out)


def monotonic_keys(types, samples):
    """The series that must never go down: counters, and the _bucket,
    _count and _sum series of histograms."""
    out = {}
    for (name, labels), v in samples.items():
        if types.get(name) == "counter":
            out[(name, labels)] = v
            continue
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
                out[(name, labels)] = v
    return out


def monotonic_problems(before, after, what):
    """Compare two scrapes ((types, samples) each): every counter and
    histogram series of before must still exist in after with a value at
    least as high, and so must its node-wide sum (over worker ids)."""
    problems = []
    b, a = monotonic_keys(*before), monotonic_keys(*after)
    for key, v in b.items():
        if key not in a:
            problems.append("%s: series %s%r disappeared (was %r)" % (what, key[0], dict(key[1]), v))
        elif a[key] < v:
            problems.append("%s: %s%r went down: %r -> %r" % (what, key[0], dict(key[1]), v, a[key]))

    def sums(m):
        groups = collections.defaultdict(list)
        for (name, labels), v in m.items():
            groups[(name, tuple(l for l in labels if l[0] != "worker"))].append(v)
        return {k: math.fsum(vs) for k, vs in groups.items()}
    sb, sa = sums(b), sums(a)
    for key, v in sb.items():
        w = sa.get(key, 0.0)
        if w < v - 1e-9 * max(1.0, abs(v)):
            problems.append("%s: node-wide sum of %s%r went down: %r -> %r"
                            % (what, key[0], dict(key[1]), v, w))
    return problems


def histogram_problems(types, samples, what):
    """Within one scrape: buckets are cumulative and _count equals the
    +Inf bucket, for every histogram and label set."""
    problems = []
    for fam, typ in types.items():
        if typ != "histogram":
            continue
        buckets = collections.defaultdict(list)
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                d = dict(labels)
                le = float(d.pop("le"))
                buckets[tuple(sorted(d.items()))].append((le, v))
        if not buckets:
            problems.append("%s: histogram %s has no buckets" % (what, fam))
        for lab, bs in buckets.items():
            bs.sort()
            counts = [c for _, c in bs]
            if counts != sorted(counts):
                problems.append("%s: %s%r buckets not cumulative: %r" % (what, fam, dict(lab), bs))
            if bs[-1][0] != math.inf:
                problems.append("%s: %s%r has no +Inf bucket" % (what, fam, dict(lab)))
            cnt = samples.get((fam + "_count", lab))
            if cnt != bs[-1][1]:
                problems.append("%s: %s%r _count %r != +Inf bucket %r"
                                % (what, fam, dict(lab), cnt, bs[-1][1]))
    return problems


def wait_metrics(h, pred, timeout=10, what="metrics"):
    """Scrape until pred(samples) is true; returns that scrape's samples.
    On timeout the failure shows pred's last input summarized by what."""
    last = [None]

    def check():
        last[0] = scrape(h)[1]
        return last[0] if pred(last[0]) else None
    try:
        return wait_until(check, timeout, interval=0.05, what=what)
    except AssertionError as e:
        interesting = {"%s%r" % (k[0], dict(k[1])): v for k, v in (last[0] or {}).items()
                       if k[0] in ("herald_connections", "herald_workers", "herald_redis_up",
                                   "herald_worker_restarts_total", "herald_config_reloads_total",
                                   "herald_connections_accepted_total")}
        raise AssertionError("%s; last scrape: %r\n%s" % (e, interesting, h.diag())) from None


def promtool_check(text):
    """Run `promtool check metrics` on text; fail on any complaint."""
    exe = shutil.which("promtool")
    assert exe, "promtool not on PATH (Debian package prometheus); the suite needs it"
    r = subprocess.run([exe, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0 and not out.strip(), \
        "promtool check metrics: status %d\n%s" % (r.returncode, out)


class Scraper(threading.Thread):
    """Scrapes /metrics in a loop and checks every scrape against the one
    before it (nothing monotonic goes down) and itself (histograms are
    consistent), so a dip during a fold or a respawn cannot hide between
    the scrapes the test takes."""

    def __init__(self, h, interval=0.02):
        super().__init__(daemon=True)
        self.h, self.interval = h, interval
        self.stop_ev = threading.Event()
        self.problems, self.errors = [], []
        self.count = 0
        self.last = None

    def run(self):
        prev = None
        while not self.stop_ev.is_set():
            try:
                cur = scrape(self.h)
            except Exception as e:   # noqa: BLE001 - reported by stop()
                self.errors.append(repr(e))
                if len(self.errors) > 20:
                    return
                time.sleep(0.05)
                continue
            self.count += 1
            self.problems += histogram_problems(*cur, what="scrape %d" % self.count)
            if prev is not None:
                self.problems += monotonic_problems(prev, cur, "scrape %d -> %d"
                                                    % (self.count - 1, self.count))
            prev = self.last = cur
            if len(self.problems) > 50:
                return
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.join(30)
        assert not self.is_alive(), "scraper thread hung"
        assert not self.problems, "\n".join(self.problems[:30])
        assert not self.errors, "scrapes failed: %r" % self.errors[:5]


# --------------------------------------------------------------------------
# traffic

class Runner:
    """An event loop that lives for the whole test, so WebSocket clients
    can stay open across the synchronous steps (signals, scrapes). Every
    client opened through Traffic is closed at teardown."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.clients = []

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def close(self, clients):
        async def go():
            await asyncio.gather(*(c.close() for c in clients))
        self.run(go())

    def shutdown(self):
        try:
            self.close(self.clients)
            pending = asyncio.all_tasks(self.loop)
            for t in pending:
                t.cancel()

            async def reap():
                await asyncio.gather(*pending, return_exceptions=True)
            self.run(reap())
        finally:
            self.loop.close()


@pytest.fixture
def aloop():
    r = Runner()
    yield r
    r.shutdown()


def token_for(h, sub):
    return jwtutil.token(h.config["auth"]["hmac_secret"], sub=sub, exp_in=600)


class Traffic:
    """Opens clients and makes them talk, counting what herald must count:
    TCP connections made, commands sent, publishes acknowledged and
    publications received by subscribers."""

    def __init__(self, h, runner):
        self.h = h
        self.runner = runner
        self.conns = 0
        self.commands = 0
        self.published = 0
        self.received = 0
        self.seq = 0

    async def client(self, jwt=False):
        self.seq += 1
        tok = token_for(self.h, "user%d" % self.seq) if jwt else None
        c = await open_client(self.h.url, token=tok)
        self.runner.clients.append(c)
        self.conns += 1
        self.commands += 1          # connect
        return c

    async def clients_covering(self, slots, at_least=0, jwt=False):
        """Open clients until every slot in slots has one and at least
        at_least are open."""
        out = []
        for _ in range(80 + at_least):
            out.append(await self.client(jwt=jwt and len(out) % 2 == 0))
            if {c.worker for c in out} >= set(slots) and len(out) >= at_least:
                return out
        raise AssertionError("clients never covered slots %r (got %r)"
                             % (sorted(slots), sorted({c.worker for c in out})))

    async def call(self, c, method, params=None):
        self.commands += 1
        r = await c.call(method, params)
        assert "result" in r, "%s %r: %r" % (method, params, r)
        return r["result"]

    async def round(self, slots, channel, n_pubs=3):
        """Subscribers on every slot, a JWT publisher, n_pubs publishes
        that every subscriber receives, pings; then everyone closes."""
        subs = await self.clients_covering(slots, at_least=len(slots) + 1)
        pub = await self.client(jwt=True)
        try:
            for s in subs:
                await self.call(s, "subscribe", {"channel": channel})
            for i in range(n_pubs):
                await self.call(pub, "publish", {"channel": channel, "data": {"i": i}})
                self.published += 1
            for s in subs:
                got = await s.wait_pubs(channel, n_pubs)
                assert [p["data"]["i"] for p in got] == list(range(n_pubs)), got
                self.received += len(got)
            for c in subs + [pub]:
                await self.call(c, "ping")
        finally:
            for c in subs + [pub]:
                await c.close()


# --------------------------------------------------------------------------
# tests

def test_metrics_promtool_and_content_type(make_herald, aloop):
    h = make_herald(namespaces=NAMESPACES)
    t = Traffic(h, aloop)
    aloop.run(t.round({0, 1}, "m:promtool"))
    hdrs, text = scrape_text(h)
    assert hdrs.get("content-type", "").startswith("text/plain; version=0.0.4"), hdrs
    assert hdrs.get("cache-control") == "no-store", hdrs
    assert text.endswith("\n")
    types, samples = parse_metrics(text)
    # The scrape is not trivially small: traffic was counted.
    assert node_sum(samples, "herald_messages_published_total") >= 3
    assert node_sum(samples, "herald_messages_delivered_total") >= 3
    assert not histogram_problems(types, samples, "scrape")
    # Every family of the catalogue is there, with its type.
    for fam, typ in (("herald_build_info", "gauge"), ("herald_workers", "gauge"),
                     ("herald_connections", "gauge"),
                     ("herald_connections_accepted_total", "counter"),
                     ("herald_connections_rejected_total", "counter"),
                     ("herald_handshake_duration_seconds", "histogram"),
                     ("herald_disconnects_total", "counter"),
                     ("herald_messages_published_total", "counter"),
                     ("herald_messages_delivered_total", "counter"),
                     ("herald_delivery_latency_seconds", "histogram"),
                     ("herald_redis_up", "gauge"),
                     ("herald_redis_command_duration_seconds", "histogram"),
                     ("herald_worker_restarts_total", "counter"),
                     ("herald_config_reloads_total", "counter"),
                     ("herald_process_cpu_seconds_total", "counter")):
        assert types.get(fam) == typ, "%s: TYPE %r, want %r" % (fam, types.get(fam), typ)
    promtool_check(text)
    # The check itself can fail: promtool rejects a broken exposition.
    with pytest.raises(AssertionError):
        promtool_check(text.replace('{worker="0"}', '{worker="0"', 1))


def test_metrics_connections_gauge_and_counters(make_herald, aloop):
    h = make_herald(namespaces=NAMESPACES)
    base = scrape(h)[1]
    acc0 = per_worker(base, "herald_connections_accepted_total")
    hs0 = per_worker(base, "herald_handshake_duration_seconds_count")
    d1000 = node_sum(base, "herald_disconnects_total", code="1000")
    rej0 = node_sum(base, "herald_connections_rejected_total")

    t = Traffic(h, aloop)
    clients = aloop.run(t.clients_covering({0, 1}, at_least=20, jwt=True))
    clients, extra = clients[:20], clients[20:]
    assert not extra, "20 connections did not reach both workers"

    def expect_gauge(open_clients):
        want = collections.Counter(c.worker for c in open_clients)
        return {w: want.get(w, 0) for w in range(h.workers)}

    want = expect_gauge(clients)
    s = wait_metrics(h, lambda s: per_worker(s, "herald_connections") == want, 10,
                     "herald_connections == %r" % want)
    assert node_sum(s, "herald_connections") == 20
    # Accepted and handshakes: exactly one per connection, on its worker.
    acc = per_worker(s, "herald_connections_accepted_total")
    hs = per_worker(s, "herald_handshake_duration_seconds_count")
    for w in range(h.workers):
        assert acc[w] - acc0.get(w, 0) == want[w], (w, acc0, acc, want)
        assert hs[w] - hs0.get(w, 0) == want[w], (w, hs0, hs, want)
    assert node_sum(s, "herald_connections_rejected_total") == rej0

    aloop.close(clients[:10])
    want = expect_gauge(clients[10:])
    s = wait_metrics(h, lambda s: per_worker(s, "herald_connections") == want, 10,
                     "herald_connections == %r after closing 10" % want)
    assert node_sum(s, "herald_connections") == 10
    # Client-initiated closes with 1000; nothing else was accepted.
    s = wait_metrics(h, lambda s: node_sum(s, "herald_disconnects_total", code="1000") - d1000 == 10,
                     10, "10 more disconnects with code 1000")
    assert node_sum(s, "herald_connections_accepted_total") - sum(acc0.values()) == 20

    aloop.close(clients[10:])
    wait_metrics(h, lambda s: node_sum(s, "herald_connections") == 0, 10, "herald_connections == 0")


def test_metrics_publish_and_delivery_counters(make_herald, aloop):
    h = make_herald(namespaces=NAMESPACES)
    base = scrape(h)[1]
    t = Traffic(h, aloop)

    async def go():
        subs = await t.clients_covering({0, 1}, at_least=6)
        pub = await t.client(jwt=True)
        for s in subs:
            await t.call(s, "subscribe", {"channel": "m:deliver"})
        per = collections.Counter(s.worker for s in subs)
        want_gauge = {w: per.get(w, 0) for w in range(h.workers)}
        # Subscriptions and channels are gauges per worker.
        # (blocking the loop is fine here: nothing needs reading meanwhile)
        wait_metrics(h, lambda m: per_worker(m, "herald_subscriptions") == want_gauge
                     and per_worker(m, "herald_channels") == {w: int(want_gauge[w] > 0) for w in want_gauge},
                     10, "herald_subscriptions == %r and one channel per worker" % want_gauge)
        for i in range(5):
            await t.call(pub, "publish", {"channel": "m:deliver", "data": {"n": i}})
            t.published += 1
        for s in subs:
            t.received += len(await s.wait_pubs("m:deliver", 5))
        return subs, pub, per

    subs, pub, per = aloop.run(go())
    assert t.published == 5 and t.received == 5 * len(subs)

    def delta(s, name):
        now, was = per_worker(s, name), per_worker(base, name)
        return {w: now.get(w, 0) - was.get(w, 0) for w in range(h.workers)}

    want_pub = {w: 5 if w == pub.worker else 0 for w in range(h.workers)}
    want_del = {w: 5 * per.get(w, 0) for w in range(h.workers)}
    s = wait_metrics(h, lambda s: delta(s, "herald_messages_published_total") == want_pub
                     and delta(s, "herald_messages_delivered_total") == want_del, 10,
                     "published %r and delivered %r" % (want_pub, want_del))
    # One message per command line: connect + subscribe per subscriber,
    # connect + 5 publishes for the publisher.
    assert sum(delta(s, "herald_messages_received_total").values()) == t.commands == 2 * len(subs) + 6
    assert sum(delta(s, "herald_bytes_received_total").values()) > 0
    sent = delta(s, "herald_bytes_sent_total")
    for w in range(h.workers):
        if per.get(w):
            assert sent[w] > 0, sent
            assert delta(s, "herald_delivery_latency_seconds_count")[w] > 0
    assert sum(delta(s, "herald_command_errors_total").values()) == 0
    assert sum(delta(s, "herald_redis_command_duration_seconds_count").values()) >= 5

    aloop.close(subs + [pub])
    wait_metrics(h, lambda s: node_sum(s, "herald_subscriptions") == 0
                 and node_sum(s, "herald_channels") == 0
                 and node_sum(s, "herald_connections") == 0, 10,
                 "subscriptions, channels and connections back to 0")


def test_metrics_monotonic_across_kill_and_scaling(make_herald, aloop):
    h = make_herald(workers=3, namespaces=NAMESPACES)
    s0 = scrape(h)
    acc0 = node_sum(s0[1], "herald_connections_accepted_total")
    assert value(s0[1], "herald_worker_restarts_total") == 0
    t = Traffic(h, aloop)
    scraper = Scraper(h)
    scraper.start()
    try:
        # Traffic on every worker, and one held (subscribed) client per
        # worker that the kill and the scale-down will cut.
        aloop.run(t.round({0, 1, 2}, "m:r1"))
        held = aloop.run(t.clients_covering({0, 1, 2}))
        for c in held:
            aloop.run(t.call(c, "subscribe", {"channel": "m:held"}))
        s1 = scrape(h)
        for name in ("herald_connections_accepted_total", "herald_messages_published_total",
                     "herald_messages_delivered_total", "herald_handshake_duration_seconds_count",
                     "herald_messages_received_total", "herald_redis_command_duration_seconds_count",
                     "herald_disconnects_total"):
            assert node_sum(s1[1], name) > 0, name
        for w in range(3):
            assert value(s1[1], "herald_connections_accepted_total", worker=str(w)) > 0, w
        assert node_sum(s1[1], "herald_connections_accepted_total") - acc0 == t.conns

        # 1. kill -9 of worker 1.
        old = h.worker_pids()
        os.kill(old[1], signal.SIGKILL)
        h.wait_workers({0: old[0], 1: None, 2: old[2]}, timeout=10, exclude=(old[1],))
        s2 = wait_metrics(h, lambda s: value(s, "herald_worker_restarts_total") == 1
                          and value(s, "herald_workers", state="running") == 3, 10,
                          "one restart and 3 running workers")
        assert not monotonic_problems(s1, (s0[0], s2), "before/after kill -9")
        aloop.close([c for c in held if c.worker == 1])
        held = [c for c in held if c.worker != 1]
        aloop.run(t.round({0, 1, 2}, "m:r2"))

        # 2. scale down 3 -> 2 (a planned exit: no restart counted).
        pids = h.worker_pids()
        h.config["workers"] = 2
        h.write_config()
        h.send_signal(signal.SIGHUP)
        h.wait_workers({0: pids[0], 1: pids[1]}, timeout=15)
        s3 = wait_metrics(h, lambda s: value(s, "herald_workers_expected") == 2
                          and value(s, "herald_workers", state="draining") == 0
                          and value(s, "herald_config_reloads_total", result="success") == 1
                          and value(s, "herald_connections", worker="2") is None, 15,
                          "2 expected workers, none draining, worker 2's gauges gone")
        for name in ("herald_redis_up", "herald_process_resident_memory_bytes",
                     "herald_subscriptions", "herald_channels"):
            assert not series(s3, name, worker="2"), "gauge %s of scaled-away worker 2 remains" % name
        for name in ("herald_connections_accepted_total", "herald_handshake_duration_seconds_count",
                     "herald_process_cpu_seconds_total"):
            assert series(s3, name, worker="2"), "counter %s of worker 2 dropped" % name
        assert value(s3, "herald_worker_restarts_total") == 1
        aloop.close(held)
        aloop.run(t.round({0, 1}, "m:r3"))

        # 3. scale up 2 -> 3.
        pids = h.worker_pids()
        h.config["workers"] = 3
        h.write_config()
        h.send_signal(signal.SIGHUP)
        h.wait_workers({0: pids[0], 1: pids[1], 2: None}, timeout=15)
        wait_metrics(h, lambda s: value(s, "herald_workers", state="running") == 3
                     and value(s, "herald_config_reloads_total", result="success") == 2, 15,
                     "3 running workers after scale-up")
        aloop.run(t.round({0, 1, 2}, "m:r4"))
        s4 = scrape(h)
    finally:
        scraper.stop()
    assert scraper.count >= 5, "only %d background scrapes" % scraper.count

    for a, b, what in ((s0, s1, "start -> traffic"), (s1, s4, "traffic -> end")):
        problems = monotonic_problems(a, b, what)
        assert not problems, "\n".join(problems[:30])
    samples = s4[1]
    assert value(samples, "herald_worker_restarts_total") == 1
    assert value(samples, "herald_config_reloads_total", result="failure") == 0
    # Not one accepted connection was lost or counted twice by the folds.
    assert node_sum(samples, "herald_connections_accepted_total") - acc0 == t.conns
    assert node_sum(samples, "herald_messages_published_total") == t.published
    assert node_sum(samples, "herald_messages_delivered_total") == t.received
    # The restarted worker 2 continues its series (it served traffic).
    assert value(samples, "herald_connections_accepted_total", worker="2") > \
        value(s3, "herald_connections_accepted_total", worker="2")
    promtool_check(scrape_text(h)[1])


def test_metrics_reload_counters(make_herald):
    h = make_herald()
    s = scrape(h)[1]
    assert value(s, "herald_config_reloads_total", result="success") == 0
    assert value(s, "herald_config_reloads_total", result="failure") == 0
    assert value(s, "herald_config_generation") == 0
    t0 = value(s, "herald_config_last_reload_success_timestamp_seconds")
    assert t0 == value(s, "herald_start_time_seconds")

    good = dict(h.config)
    h.write_config(text='{\n  "workers": 2,\n  "listen": {\n')      # broken JSON
    h.send_signal(signal.SIGHUP)
    s = wait_metrics(h, lambda s: value(s, "herald_config_reloads_total", result="failure") == 1,
                     10, "reloads_total{result=failure} == 1")
    assert value(s, "herald_config_reloads_total", result="success") == 0
    assert value(s, "herald_config_generation") == 0
    assert value(s, "herald_config_last_reload_success_timestamp_seconds") == t0

    good["log"] = dict(good["log"], level="info")
    h.write_config(good)
    h.send_signal(signal.SIGHUP)
    s = wait_metrics(h, lambda s: value(s, "herald_config_reloads_total", result="success") == 1,
                     10, "reloads_total{result=success} == 1")
    assert value(s, "herald_config_reloads_total", result="failure") == 1
    assert value(s, "herald_config_generation") == 1
    assert value(s, "herald_config_last_reload_success_timestamp_seconds") > t0
    assert value(s, "herald_worker_restarts_total") == 0


def test_metrics_worker_restarts_total(herald):
    s = scrape(herald)[1]
    assert value(s, "herald_worker_restarts_total") == 0
    old = herald.worker_pids()
    os.kill(old[0], signal.SIGKILL)
    herald.wait_workers({0: None, 1: old[1]}, timeout=10, exclude=(old[0],))
    s = wait_metrics(herald, lambda s: value(s, "herald_worker_restarts_total") == 1, 5 * SLACK,
                     "herald_worker_restarts_total == 1")
    # Stays 1: the respawn itself is not another restart.
    time.sleep(0.3)
    assert value(scrape(herald)[1], "herald_worker_restarts_total") == 1
