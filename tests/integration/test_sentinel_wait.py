"""redis.wait_replicas and what subscribers see (issue 18): a publication
goes live only once WAIT is met, so a subscriber never holds an offset
that a failover can hand out again; reads (subscribe, history) are
answered only once a WAIT after them is met; publications whose WAITs
cross (two workers) or fail are released in offset order by the next
confirmed one, so subscribers get them in order, none missing.

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


def with_replica(make_herald, redis_server, tmp_path, wait_timeout_ms=1000):
    # wait_timeout_ms: long enough that a loaded machine (CI, ASan) meets
    # WAIT whenever the replica is attached; every refusal costs that much
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
    the replica is back, the next confirmed publication releases it ahead
    of itself, with or without history: nothing twice, nothing out of
    order, no gap."""
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
        await sub.until(lambda: len(sub.pubs(hist)) == 4 and len(sub.pubs(nohist)) == 4,
                        what="the publications after the replica came back")
        await sub.drain(0.3)
        # the refused one was released by the next confirmed one, ahead of
        # it: in order, once, with or without history
        for ch in (hist, nohist):
            assert [(p["offset"], p["data"]) for p in sub.pubs(ch)] == \
                [(1, "a1"), (2, "a2"), (3, "refused"), (4, "a4")], ch
            assert sub.gaps(ch) == [], ch
        r = await other.subscribe(hist)
        assert r["result"]["offset"] == 4, r
        await close_all([sub, pub, other])

    run(go())


def test_crossing_publications_reach_subscribers_in_order(make_herald, redis_server, tmp_path):
    """Two workers publish on one channel at full speed: their WAITs finish
    in any order, but publications are released in offset order. Every
    subscriber gets every offset once, in order, without a gap, on a
    channel with history and on one without."""
    # a WAIT that times out on a loaded machine would refuse a publish
    replica, h = with_replica(make_herald, redis_server, tmp_path, wait_timeout_ms=1500)
    tok = token_for(h, sub="u1")
    async def go(ch):
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

    # with history and without: no channel may need a fill (without
    # history a fill could only tell a gap)
    run(go("hist:cross"))
    run(go("nohist:cross"))


def test_unreleased_publications_are_bounded(make_herald, redis_server, tmp_path):
    """Publications waiting for their release are kept in Redis until a
    later one is confirmed: at most 10,000 per channel, so a replica that
    stays away cannot grow Redis without bound. At the bound a publish
    stores nothing and gets 503, but its WAIT still releases what the
    replicas have confirmed, so the channel goes on by itself once they are
    back (nothing done by hand)."""
    replica, h = with_replica(make_herald, redis_server, tmp_path)
    tok = token_for(h, sub="u1")
    ch = "nohist:cap"
    key = "{herald||%s}:meta" % ch

    async def go():
        pub = await open_tclient(h.url, tok)
        r = await pub.publish(ch, "first")
        assert r["result"]["offset"] == 1, r
        # as if 10,000 more had been stored while the replica was away and
        # refused: the top is 10,000 offsets past the last published (1)
        redis_cli(redis_server.port, "HSET", key, "o", "10001")
        r = await pub.publish(ch, "over")
        assert r["error"]["code"] == 503, r
        assert "wait for redis replicas" in r["error"]["message"], r
        assert meta_offset(redis_server.port, ch) == 10001   # nothing stored
        # ... but what the replica confirmed was released
        assert redis_cli(redis_server.port, "HGET", key, "p").strip() == "10001"
        r = await pub.publish(ch, "goes on")
        assert r["result"]["offset"] == 10002, r
        await close_all([pub])

    run(go())


def test_release_after_the_numbering_restarted_is_refused(make_herald, redis_server,
                                                          tmp_path):
    """A publication refused (WAIT unmet) whose channel then loses its meta
    (evicted, deleted) is gone with it: a retry with its idempotency key
    must not be told it was published."""
    replica, h = with_replica(make_herald, redis_server, tmp_path)
    tok = token_for(h, sub="u1")
    ch = "nohist:reset"

    async def go():
        pub = await open_tclient(h.url, tok)
        detach(redis_server.port, [replica])
        r = await pub.call("publish", {"channel": ch, "data": "x", "idempotency_key": "k1"})
        assert r["error"]["code"] == 503, r
        redis_cli(redis_server.port, "DEL", "{herald||%s}:meta" % ch)
        attach(redis_server.port, [replica])
        r = await pub.call("publish", {"channel": ch, "data": "x", "idempotency_key": "k1"})
        assert "error" in r and r["error"]["code"] == 503, r
        await close_all([pub])

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
