"""The master's admin server (docs/metrics.md): /health through a Redis
outage and a kill -9, /stats against /metrics, admin.token, 404 and 405."""

import asyncio
import json
import os
import signal
import threading
import time

import pytest

from harness import (SLACK, admin_request, open_client, parse_metrics,
                     redis_restart_same_port, wait_until)

NAMESPACES = {"m": {"publish": True, "anonymous": True}}
TOKEN = "admin-token-0123456789-abcdefghij"


def get(h, path, method="GET", headers=None):
    return admin_request(h.admin_port, path, method=method, headers=headers)


def health(h):
    """(HTTP status, parsed body) of GET /health."""
    status, hdrs, body = get(h, "/health")
    assert hdrs.get("content-type", "").startswith("application/json"), hdrs
    return status, json.loads(body)


def metrics(h, headers=None):
    status, _, body = get(h, "/metrics", headers=headers)
    assert status == 200, (status, body[:300])
    return parse_metrics(body)[1]


def stats(h):
    status, hdrs, body = get(h, "/stats")
    assert status == 200, (status, body[:300])
    assert hdrs.get("content-type", "").startswith("application/json"), hdrs
    return json.loads(body)


def redis_up(samples):
    return {int(dict(k[1])["worker"]): v for k, v in samples.items() if k[0] == "herald_redis_up"}


def wait_health(h, pred, timeout, what):
    last = [None]

    def check():
        last[0] = health(h)
        return last[0] if pred(*last[0]) else None
    try:
        return wait_until(check, timeout, interval=0.05, what=what)
    except AssertionError as e:
        raise AssertionError("%s; last /health: %r\n%s" % (e, last[0], h.diag())) from None


def health_ok_after_start(h):
    """/health once every worker's Redis connections are up: a worker may
    report READY before them (after 1 s without Redis), so a loaded machine
    can see 'degraded' for a moment right after start."""
    return wait_health(h, lambda s, b: s == 200, 10.0 * SLACK, "/health 200 after start")


def assert_health_ok(status, body, workers):
    assert status == 200, (status, body)
    assert body["status"] == "ok", body
    assert body["workers"] == {"alive": workers, "expected": workers}, body
    assert sorted(r["worker"] for r in body["redis"]) == list(range(workers)), body
    assert all(r["up"] is True for r in body["redis"]), body


# --------------------------------------------------------------------------
# /health

def test_admin_health_ok(make_herald):
    h = make_herald(workers=3)
    status, hdrs, body = get(h, "/health")
    assert hdrs.get("cache-control") == "no-store", hdrs
    b = json.loads(body)
    assert_health_ok(status, b, 3)
    assert b["generation"] == 0
    assert isinstance(b["uptime_seconds"], (int, float)) and b["uptime_seconds"] >= 0
    # HEAD: the same status and headers, no body.
    status, hdrs, body = get(h, "/health", method="HEAD")
    assert status == 200 and body == "", (status, body)
    assert hdrs.get("content-type", "").startswith("application/json"), hdrs
    # A query string is ignored.
    status, _, body = get(h, "/health?verbose=1")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_admin_health_redis_outage(make_herald, redis_server):
    h = make_herald()
    assert_health_ok(*health_ok_after_start(h), 2)
    reconnects0 = sum(v for k, v in metrics(h).items() if k[0] == "herald_redis_reconnects_total")

    redis_server.stop()
    t0 = time.monotonic()
    status, body = wait_health(h, lambda s, b: s == 503, 5.0 * SLACK, "/health 503 with Redis down")
    took = time.monotonic() - t0
    # Workers still run: degraded, not failing.
    assert body["status"] == "degraded", body
    assert body["workers"] == {"alive": 2, "expected": 2}, body
    wait_health(h, lambda s, b: all(r["up"] is False for r in b["redis"]) and len(b["redis"]) == 2,
                5.0 * SLACK, "every worker's Redis reported down")
    wait_until(lambda: redis_up(metrics(h)) == {0: 0, 1: 0}, 5.0 * SLACK, 0.05,
               "herald_redis_up 0 on both workers")
    assert took < 5.0 * SLACK, "degraded after %.1f s" % took
    # While Redis stays down (long enough for the reconnect backoff to grow
    # through several steps), /health stays 503 and never flaps to ok.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        status, body = health(h)
        assert status == 503 and body["status"] == "degraded", (status, body)
        time.sleep(0.1)
    assert redis_up(metrics(h)) == {0: 0, 1: 0}

    redis_restart_same_port(redis_server)
    t0 = time.monotonic()
    # reconnect_max_ms is 5000 by default; the jittered backoff may just
    # have reached it.
    status, body = wait_health(h, lambda s, b: s == 200, 5.0 + 3.0 * SLACK,
                               "/health 200 after Redis came back")
    assert_health_ok(status, body, 2)
    s = metrics(h)
    assert redis_up(s) == {0: 1, 1: 1}, redis_up(s)
    # Re-established connections count, failed attempts do not: each
    # worker lost and regained its two connections once.
    reconnects = {int(dict(k[1])["worker"]): v for k, v in s.items()
                  if k[0] == "herald_redis_reconnects_total"}
    assert reconnects0 == 0
    assert sorted(reconnects) == [0, 1] and all(1 <= v <= 2 for v in reconnects.values()), reconnects


def test_admin_health_during_kill9(herald):
    h = herald
    assert_health_ok(*health_ok_after_start(h), 2)
    results, errors = [], []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                results.append(health(h))
            except Exception as e:   # noqa: BLE001 - asserted below
                errors.append(repr(e))
            stop.wait(0.005)
    th = threading.Thread(target=hammer, daemon=True)
    th.start()
    try:
        wait_until(lambda: len(results) >= 3, 10, what="/health answers before the kill")
        old = h.worker_pids()
        t0 = time.monotonic()
        os.kill(old[0], signal.SIGKILL)
        n0 = len(results)
        # Recovered: the slot has a new process and /health says so.
        new = h.wait_workers({0: None, 1: old[1]}, timeout=10, exclude=(old[0],))
        wait_health(h, lambda s, b: s == 200 and b["workers"]["alive"] == 2, 10,
                    "/health ok with 2 alive after the kill")
        took = time.monotonic() - t0
        wait_until(lambda: len(results) >= n0 + 3, 10, what="/health answers after the kill")
    finally:
        stop.set()
        th.join(10)
    assert not errors, "/health failed during the kill: %r" % errors[:5]
    for status, body in results:
        assert status in (200, 503), (status, body)
        assert body["workers"]["expected"] == 2, body
        assert (status == 200) == (body["status"] == "ok"), (status, body)
    assert new[0] != old[0]
    assert took <= 1.0 * SLACK, "alive back to 2 after %.2f s" % took


# --------------------------------------------------------------------------
# /stats

STATS_KEYS = {"version", "uptime_seconds", "generation", "worker_restarts",
              "retired_cpu_seconds", "workers", "connections", "messages",
              "disconnects", "latency", "per_worker", "reloads", "processes"}
REJECT_REASONS = {"node_limit", "ip_limit", "user_limit", "tenant_limit", "auth",
                  "handshake", "draining", "overload", "proxy_protocol", "total"}
MESSAGE_KEYS = {"received", "published", "delivered", "bytes_received", "bytes_sent",
                "command_errors", "redis_reconnects"}
LATENCY_KEYS = {"count", "sum", "p50", "p95", "p99", "max"}


def wsum(samples, name, **labels):
    want = set(labels.items())
    return sum(v for k, v in samples.items() if k[0] == name and want <= set(k[1]))


def wval(samples, name, worker, **labels):
    return wsum(samples, name, worker=str(worker), **labels)


def test_admin_stats_matches_metrics(make_herald):
    h = make_herald(namespaces=NAMESPACES)

    clients = []

    async def setup():
        while len(clients) < 7 or {c.worker for c in clients} != {0, 1}:
            assert len(clients) < 80, "7 clients did not reach both workers"
            clients.append(await open_client(h.url))
        for c in clients:
            r = await c.subscribe("m:stats")
            assert "result" in r, r
        r = await clients[0].publish("m:stats", {"x": 1})
        assert "result" in r, r
        for c in clients:
            await c.wait_pubs("m:stats", 1)
        # one disconnect (1000), of a client whose worker keeps others:
        # the last one opened may be the only one on its worker (the loop
        # above stops when both have one), and every worker must keep the
        # channel for the per-worker checks below
        victim = next(c for c in reversed(clients)
                      if sum(1 for d in clients if d.worker == c.worker) >= 2)
        clients.remove(victim)
        await victim.close()

    async def teardown(clients):
        await asyncio.gather(*(c.close() for c in clients))

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(setup())
        per = {w: sum(1 for c in clients if c.worker == w) for w in (0, 1)}
        # Quiet now: wait until the gauges show the 6 open clients, then
        # read /stats between two identical /metrics scrapes.
        wait_until(lambda: {w: wval(metrics(h), "herald_connections", w) for w in (0, 1)} == per,
                   10, 0.05, "herald_connections == %r" % per)
        for _ in range(50):
            m1, st, m2 = metrics(h), stats(h), metrics(h)
            stable = {k: v for k, v in m1.items() if "redis_command" not in k[0]
                      and not k[0].startswith("herald_process_")}
            if all(m2.get(k) == v for k, v in stable.items()):
                break
        else:
            pytest.fail("/metrics never stable between two scrapes")
    finally:
        loop.run_until_complete(teardown(clients))
        loop.close()
    m = m1

    assert STATS_KEYS <= set(st), STATS_KEYS - set(st)
    assert st["version"] == dict(next(k for k in m if k[0] == "herald_build_info")[1])["version"]
    assert st["generation"] == m[("herald_config_generation", ())] == 0
    assert st["worker_restarts"] == m[("herald_worker_restarts_total", ())] == 0
    assert st["uptime_seconds"] > 0
    assert st["workers"] == {"expected": 2, "starting": 0, "running": 2, "draining": 0}, st["workers"]
    for state in ("starting", "running", "draining"):
        assert st["workers"][state] == m[("herald_workers", (("state", state),))]

    conn = st["connections"]
    assert set(conn) >= {"active", "peak", "accepted", "rejected"}, conn
    assert conn["active"] == wsum(m, "herald_connections") == 6
    # The node peak is sampled (every second and per request), so only
    # what was open at a request is sure to be in it; per worker it is exact.
    assert conn["peak"] >= conn["active"], conn
    assert conn["accepted"] == wsum(m, "herald_connections_accepted_total") >= 7
    assert set(conn["rejected"]) == REJECT_REASONS, conn["rejected"]
    for reason in REJECT_REASONS - {"total"}:
        assert conn["rejected"][reason] == wsum(m, "herald_connections_rejected_total", reason=reason)
    assert conn["rejected"]["total"] == wsum(m, "herald_connections_rejected_total")

    msgs = st["messages"]
    assert set(msgs) == MESSAGE_KEYS, msgs
    for key, name in (("received", "herald_messages_received_total"),
                      ("published", "herald_messages_published_total"),
                      ("delivered", "herald_messages_delivered_total"),
                      ("bytes_received", "herald_bytes_received_total"),
                      ("bytes_sent", "herald_bytes_sent_total"),
                      ("command_errors", "herald_command_errors_total"),
                      ("redis_reconnects", "herald_redis_reconnects_total")):
        assert msgs[key] == wsum(m, name), (key, msgs[key], wsum(m, name))
    assert msgs["published"] == 1 and msgs["delivered"] == 7, msgs

    assert st["disconnects"].get("1000", 0) == wsum(m, "herald_disconnects_total", code="1000") >= 1
    for code, n in st["disconnects"].items():
        assert n > 0 and n == wsum(m, "herald_disconnects_total", code=code), (code, n)

    assert set(st["latency"]) == {"handshake", "delivery", "redis_command"}, st["latency"]
    for key, fam in (("handshake", "herald_handshake_duration_seconds"),
                     ("delivery", "herald_delivery_latency_seconds")):
        lat = st["latency"][key]
        assert set(lat) == LATENCY_KEYS, lat
        assert lat["count"] == wsum(m, fam + "_count") > 0, (key, lat)
        assert lat["sum"] == pytest.approx(wsum(m, fam + "_sum"), rel=1e-6), (key, lat)
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], (key, lat)

    pw = {w["worker"]: w for w in st["per_worker"]}
    assert sorted(pw) == [0, 1], st["per_worker"]
    for w, entry in pw.items():
        assert entry["processes"] == 1 and entry["running"] == 1, entry
        assert entry["connections"]["active"] == wval(m, "herald_connections", w) == per[w], entry
        assert entry["connections"]["accepted"] == wval(m, "herald_connections_accepted_total", w)
        assert entry["connections"]["peak"] >= per[w]
        assert entry["subscriptions"] == wval(m, "herald_subscriptions", w) == per[w], entry
        assert entry["channels"] == wval(m, "herald_channels", w) == 1, entry
        assert entry["redis_up"] is True and wval(m, "herald_redis_up", w) == 1
        assert entry["messages"]["delivered"] == wval(m, "herald_messages_delivered_total", w)
        assert entry["latency"]["handshake"]["count"] == \
            wval(m, "herald_handshake_duration_seconds_count", w)
    assert sum(e["connections"]["peak"] for e in pw.values()) >= 7, st["per_worker"]
    assert conn["peak"] <= sum(e["connections"]["peak"] for e in pw.values()), conn

    assert st["reloads"]["success"] == m[("herald_config_reloads_total", (("result", "success"),))]
    assert st["reloads"]["failure"] == m[("herald_config_reloads_total", (("result", "failure"),))]
    assert st["reloads"]["last_success_timestamp"] == pytest.approx(
        m[("herald_config_last_reload_success_timestamp_seconds", ())], abs=0.01)

    procs = st["processes"]
    pids = {p["pid"] for p in procs}
    assert pids == {h.pid} | set(h.worker_pids().values()), (procs, h.worker_pids())
    for p in procs:
        assert {"pid", "rss_bytes", "cpu_seconds", "open_fds"} <= set(p), p
        assert p["rss_bytes"] > 0 and p["open_fds"] > 0, p
        if p["pid"] != h.pid:
            assert h.worker_pids()[p["worker"]] == p["pid"], p
            assert p["state"] == "running" and p["generation"] == 0, p


# --------------------------------------------------------------------------
# access, paths, methods

def test_admin_token(make_herald):
    h = make_herald(admin={"token": TOKEN})
    good = {"Authorization": "Bearer " + TOKEN}
    for path in ("/metrics", "/health", "/stats", "/events", "/nope"):
        for hdrs in (None, {"Authorization": "Bearer " + TOKEN[:-1] + "x"},
                     {"Authorization": "Bearer " + TOKEN + "x"},
                     {"Authorization": "Bearer"},
                     {"Authorization": "Basic " + TOKEN},
                     {"Authorization": TOKEN}):
            status, rh, body = get(h, path, headers=hdrs)
            assert status == 401, (path, hdrs, status, body[:200])
            assert rh.get("www-authenticate") == 'Bearer realm="herald"', (path, rh)
            assert TOKEN not in body
    for path in ("/metrics", "/health", "/stats", "/events"):
        status, _, body = get(h, path, headers=good)
        assert status == 200, (path, status, body[:200])
        # The scheme is case-insensitive.
        status, _, _ = get(h, path, headers={"Authorization": "bearer " + TOKEN})
        assert status == 200, path
    assert "herald_connections" in get(h, "/metrics", headers=good)[2]
    status, _, _ = get(h, "/nope", headers=good)
    assert status == 404
    status, rh, _ = get(h, "/metrics", method="POST", headers=good)
    assert status == 405 and rh.get("allow") == "GET, HEAD", (status, rh)
    # Without the token a POST is refused before anything else.
    assert get(h, "/metrics", method="POST")[0] == 401

    # A reload applies a new token at once.
    new = TOKEN[::-1]
    h.config["admin"]["token"] = new
    h.write_config()
    h.send_signal(signal.SIGHUP)
    wait_until(lambda: get(h, "/health", headers={"Authorization": "Bearer " + new})[0] == 200,
               10, 0.05, "the new admin.token to apply")
    assert get(h, "/health", headers=good)[0] == 401


def test_admin_paths_and_methods(herald):
    h = herald
    for path in ("/metric", "/metrics/x", "/healthz", "/stats.json", "/events/x"):
        status, rh, _ = get(h, path)
        assert status == 404, (path, status)
        assert rh.get("cache-control") == "no-store", (path, rh)
    # the monitor page (test_monitor.py)
    status, rh, body = get(h, "/")
    assert status == 200 and rh["content-type"] == "text/html; charset=utf-8"
    assert "<title>herald monitor</title>" in body
    for path in ("/metrics", "/health", "/stats", "/events", "/"):
        for method in ("POST", "PUT", "DELETE"):
            status, rh, _ = get(h, path, method=method)
            assert status == 405, (path, method, status)
            assert rh.get("allow") == "GET, HEAD", (path, method, rh)
        status, rh, body = get(h, path, method="HEAD")
        assert status == 200 and body == "", (path, status, body[:100])
        assert rh.get("cache-control") == "no-store", rh
        # No token configured: no authentication.
        assert get(h, path)[0] == 200


def test_admin_health_ok_across_replacing_reloads(make_herald):
    """A reload that replaces workers must not flip /health: the draining
    worker closes its Redis connection while its replacement already
    serves, and only serving workers count (issue 17 item 4)."""
    h = make_herald(workers=2, log={"level": "info"})
    assert_health_ok(*health_ok_after_start(h), 2)
    bad = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            status, body = health(h)
            if status != 200:
                bad.append((status, body))
            time.sleep(0.005)

    t = threading.Thread(target=poll)
    t.start()
    try:
        for i in range(4):
            old = set(h.worker_pids().values())
            h.config["timeouts"]["connect_ms"] = 12345 + i  # a worker-level key
            h.write_config()
            h.send_signal(signal.SIGHUP)
            h.wait_workers({0: None, 1: None}, timeout=15 + h.shutdown_s,
                           what="two new workers", exclude=old)
            # the old ones are gone: their drain (and Redis close) happened
            time.sleep(0.3)
    finally:
        stop.set()
        t.join()
    assert not bad, bad[:3]
