"""redis.wait_replicas and what subscribers see (issue 18): a publication
goes live only once WAIT is met, so a subscriber never holds an offset
that a failover can hand out again; reads (subscribe, history) are
answered only once a WAIT after them is met; live publications that cross
(two workers' WAITs) or leave a hole (a WAIT that failed) reach
subscribers in order, the hole filled from history or told as a gap.

The replicas are cut off with REPLICAOF to a port where nothing listens,
not with SIGSTOP: the kernel would still take the replication stream into
a stopped replica's socket buffer, and the replica would apply it when
continued.
"""

import asyncio

from harness import free_port, redis_cli, run, token_for, wait_until
from test_history import (close_all, open_tclient, publish_window, subscribed,
                          tclients_on_workers)
from test_redis_scale import (Redis, health, herald_without_url,  # noqa: F401
                              scale_config, sentinel_group)

WAIT = {"wait_replicas": 1, "wait_timeout_ms": 300}


def link_up(replica):
    return "master_link_status:up" in redis_cli(replica.port, "INFO", "replication")


def detach(primary_port, replicas):
    """The replicas stop receiving the primary's writes (they keep their
    data and their replication state)."""
    dead = free_port()
    for r in replicas:
        redis_cli(r.port, "REPLICAOF", "127.0.0.1", str(dead))
    wait_until(lambda: "connected_slaves:0" in redis_cli(primary_port, "INFO", "replication"),
               10, what="the primary without replicas")


def attach(primary_port, replicas):
    for r in replicas:
        redis_cli(r.port, "REPLICAOF", "127.0.0.1", str(primary_port))
    for r in replicas:
        wait_until(lambda: link_up(r), 15, what="replica in sync")


def meta_offset(port, ch):
    out = redis_cli(port, "HGET", "{herald||%s}:meta" % ch, "o").strip()
    return int(out) if out else 0


def offsets(pubs):
    return [p["offset"] for p in pubs]


def with_replica(make_herald, redis_server, tmp_path, wait_timeout_ms=300):
    # a full sync at once, not after the default 5 s wait for more replicas
    redis_cli(redis_server.port, "CONFIG", "SET", "repl-diskless-sync-delay", "0")
    replica = Redis(tmp_path / "replica").start()
    attach(redis_server.port, [replica])
    h = make_herald(**scale_config(redis={"wait_replicas": 1,
                                          "wait_timeout_ms": wait_timeout_ms}))
    return replica, h


def test_unconfirmed_publication_never_goes_live_then_fills_in(make_herald, redis_server,
                                                               tmp_path):
    """WAIT unmet: 503, nothing live, subscribe and history refused. Once
    the replica is back, the next publication brings it (history) or a
    gap for it (no history); nothing twice, nothing out of order."""
    replica, h = with_replica(make_herald, redis_server, tmp_path)
    tok = token_for(h, sub="u1")
    hist, nohist = "hist:w1", "nohist:w1"

    async def go():
        sub = await open_tclient(h.url, tok)
        pub = await open_tclient(h.url, tok)
        other = await open_tclient(h.url, tok)
        for ch in (hist, nohist):
            assert (await subscribed(sub, ch))["offset"] == 0
            for i in (1, 2):
                r = await pub.publish(ch, "a%d" % i)
                assert r["result"]["offset"] == i, r
        await sub.until(lambda: len(sub.pubs(hist)) == 2 and len(sub.pubs(nohist)) == 2,
                        what="the first publications")

        detach(redis_server.port, [replica])
        for ch in (hist, nohist):
            r = await pub.publish(ch, "refused")
            assert r["error"]["code"] == 503, r
            assert meta_offset(redis_server.port, ch) == 3  # stored, not acked
        # reads that would tell offset 3 wait for the replicas too
        r = await other.subscribe(hist)
        assert r["error"]["code"] == 503, r
        r = await other.call("history", {"channel": hist, "limit": 10})
        assert r["error"]["code"] == 503, r
        await sub.drain(0.5)
        assert offsets(sub.pubs(hist)) == [1, 2] and offsets(sub.pubs(nohist)) == [1, 2]

        attach(redis_server.port, [replica])
        for ch in (hist, nohist):
            r = await pub.publish(ch, "a4")
            assert r["result"]["offset"] == 4, r
        await sub.until(lambda: len(sub.pubs(hist)) == 4 and 4 in offsets(sub.pubs(nohist)),
                        what="the publications after the replica came back")
        await sub.drain(0.3)
        # history: the refused one came from history, in order, once
        assert [(p["offset"], p["data"]) for p in sub.pubs(hist)] == \
            [(1, "a1"), (2, "a2"), (3, "refused"), (4, "a4")]
        assert sub.gaps(hist) == []
        # no history: it is told as missed, never skipped silently
        assert offsets(sub.pubs(nohist)) == [1, 2, 4]
        assert [(g["from"], g["to"]) for g in sub.gaps(nohist)] == [(3, 3)]
        r = await other.subscribe(hist)
        assert r["result"]["offset"] == 4, r
        await close_all([sub, pub, other])

    run(go())


def test_crossing_publications_reach_subscribers_in_order(make_herald, redis_server, tmp_path):
    """Two workers publish on one channel at full speed: their WAITs finish
    in any order, and so do their PUBLISHes. Every subscriber gets every
    offset once, in order, without a gap."""
    # a WAIT that times out on a loaded machine would refuse a publish
    replica, h = with_replica(make_herald, redis_server, tmp_path, wait_timeout_ms=1500)
    tok = token_for(h, sub="u1")
    ch = "hist:cross"

    async def go():
        pubs = await tclients_on_workers(h.url, tok)
        subs = await tclients_on_workers(h.url, tok)
        for s in subs.values():
            await subscribed(s, ch)
        acked = await asyncio.gather(
            *(publish_window(c, ch, ["w%d-%d" % (slot, i) for i in range(150)], window=16)
              for slot, c in pubs.items()))
        total = {}
        for a in acked:
            total.update(a)
        assert sorted(total) == list(range(1, 301)), sorted(total)[:5]
        for s in subs.values():
            await s.wait_pubs(ch, 300, timeout=30)
            await s.drain(0.2)
            got = s.pubs(ch)
            assert offsets(got) == list(range(1, 301)), offsets(got)[:20]
            assert all(p["data"] == total[p["offset"]] for p in got)
            assert s.gaps(ch) == []
        await close_all(list(pubs.values()) + list(subs.values()))

    run(go())


def test_sentinel_failover_takes_back_no_offset_a_subscriber_holds(make_herald,
                                                                   sentinel_group):
    """The primary stores a publication that no replica gets (503), then
    dies; the promoted replica hands its offset out again. The subscriber
    never saw the first one, so it gets the second: every acknowledged
    publication, none dropped as a duplicate, no gap needed."""
    master, replicas, sen = sentinel_group
    redis = {"sentinel": {"master_name": "mymaster",
                          "addresses": ["127.0.0.1:%d" % sen.port]},
             "reconnect_max_ms": 500}
    redis.update(WAIT)
    h = herald_without_url(make_herald, **scale_config(redis=redis))
    tok = token_for(h, sub="u1")
    ch = "hist:fo"

    async def go():
        sub = await open_tclient(h.url, tok)
        pub = await open_tclient(h.url, tok)
        await subscribed(sub, ch)
        acked = []
        for i in (1, 2, 3):
            r = await pub.publish(ch, "before%d" % i)
            acked.append((r["result"]["offset"], "before%d" % i))
        await sub.wait_pubs(ch, 3)

        detach(master.port, replicas)
        r = await pub.publish(ch, "lost")
        assert r["error"]["code"] == 503, r
        assert meta_offset(master.port, ch) == 4
        master.kill9()
        # Sentinel promotes one replica and points the other at it; publish
        # once that one is in sync (WAIT 1 can be met again)
        def promoted():
            port = int(sen.cli("SENTINEL", "get-master-addr-by-name", "mymaster").split()[1])
            return port != master.port and port
        wait_until(promoted, 15, what="Sentinel promotes a replica")
        new = promoted()
        wait_until(lambda: "state=online" in redis_cli(new, "INFO", "replication"), 15,
                   what="the other replica in sync with the new primary")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            r = await pub.call("publish", {"channel": ch, "data": "after"}, timeout=15)
            if "result" in r:
                break
            # herald not yet on the new primary: nothing was stored
            assert r["error"]["code"] == 503, r
            assert meta_offset(new, ch) == 3
            assert loop.time() < deadline, "publishing did not resume"
            await asyncio.sleep(0.1)
        # the new primary never had offset 4: it was handed out again
        assert r["result"]["offset"] == 4, r
        acked.append((4, "after"))
        for i in range(5, 8):
            r = await pub.publish(ch, "more%d" % i)
            assert r["result"]["offset"] == i, r
            acked.append((i, "more%d" % i))
        await sub.wait_pubs(ch, 7, timeout=15)
        await sub.drain(0.3)
        assert [(p["offset"], p["data"]) for p in sub.pubs(ch)] == acked
        assert sub.gaps(ch) == []
        assert len({p["epoch"] for p in sub.pubs(ch)}) == 1
        await close_all([sub, pub])

    run(go())
    st, body = health(h)
    assert st == 200, body
