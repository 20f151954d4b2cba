"""Presence and join/leave across two herald nodes on one Redis (issue
14): who is subscribed (client methods and the HTTP API), join/leave
pushes exactly once per event, entries removed at once on unsubscribe and
disconnect, a killed node's entries gone within the bound, tenant
isolation."""

import asyncio
import os
import signal
import time

from harness import (api_request, open_client, pubsub_config, redis_cli, run, token_for,
                     wait_until)

CLUSTER = {"heartbeat_ms": 200, "node_ttl_ms": 1500, "call_timeout_ms": 1500}
NAMESPACES = {
    "pres": {"presence": True, "join_leave": True},
    "ponly": {"presence": True},
    "jl": {"join_leave": True},
}


def two_nodes(make_herald):
    cfg = pubsub_config(cluster=dict(CLUSTER))
    cfg["namespaces"].update(NAMESPACES)
    a = make_herald(**cfg)
    b = make_herald(**cfg)

    def nodes():
        st, body = api_request(a.port, "/api/info", {})
        return body["result"]["nodes"] if st == 200 else []
    wait_until(lambda: len(nodes()) == 2 and all(n["workers"] == 2 for n in nodes()), 15,
               what="both nodes registered")
    return a, b


def events(c, ch):
    return [(k, p[k]["client"]) for p in c.pushes if p.get("channel") == ch
            for k in ("join", "leave") if k in p]


async def presence_ids(c, ch):
    r = await c.call("presence", {"channel": ch})
    assert "result" in r, r
    return sorted(e["client"] for e in r["result"]["clients"])


def api_presence_ids(h, ch, **extra):
    st, body = api_request(h.port, "/api/presence", dict(channel=ch, **extra))
    assert st == 200, body
    return sorted(e["client"] for e in body["result"]["clients"])


def test_presence_across_nodes_and_tenants(make_herald):
    a, b = two_nodes(make_herald)
    ch = "ponly:room"

    async def go():
        x = await open_client(a.url, token_for(a, sub="xavier", info={"name": "Xavier", "n": [1]}))
        y1 = await open_client(b.url, token_for(b, sub="yara", info={"big": "z" * 2000}))
        y2 = await open_client(b.url, token_for(b, sub="yara"))
        t = await open_client(b.url, token_for(b, sub="xavier", tenant="acme"))
        for c in (x, y1, y2, t):
            assert "result" in await c.subscribe(ch)
        want = sorted(c.info["client"] for c in (x, y1, y2))
        # written before each subscribe reply, but through each worker's
        # own Redis connection: another node may read a moment earlier
        await wait_until_async(lambda: api_presence_ids(a, ch) == want, "presence", timeout=5)
        assert await presence_ids(x, ch) == want
        assert await presence_ids(y1, ch) == want
        r = await y2.call("presence_stats", {"channel": ch})
        assert r["result"] == {"clients": 3, "users": 2}, r
        st, body = api_request(b.port, "/api/presence_stats", {"channel": ch})
        assert body == {"result": {"clients": 3, "users": 2}}, body
        entries = {e["client"]: e for e in (await x.call("presence", {"channel": ch}))["result"]["clients"]}
        assert entries[x.info["client"]] == {"client": x.info["client"], "user": "xavier",
                                             "info": {"name": "Xavier", "n": [1]}}, entries
        # an info claim over limits.presence_info_bytes is left out
        assert entries[y1.info["client"]] == {"client": y1.info["client"], "user": "yara"}, entries
        # tenant isolation, both ways
        assert await presence_ids(t, ch) == [t.info["client"]]
        assert api_presence_ids(a, ch, tenant="acme") == [t.info["client"]]
        st, body = api_request(a.port, "/api/presence_stats", {"channel": ch, "tenant": "acme"})
        assert body["result"] == {"clients": 1, "users": 1}
        # limit
        r = await x.call("presence", {"channel": ch, "limit": 2})
        assert len(r["result"]["clients"]) == 2 and r["result"]["total"] == 3
        assert r["result"]["truncated"] is True
        # gone at once: unsubscribe, disconnect
        # (the removal is sent before the reply, on the worker's own Redis
        # connection: another node's read may still be a moment ahead)
        assert "result" in await y1.unsubscribe(ch)
        await wait_until_async(
            lambda: api_presence_ids(a, ch) == sorted([x.info["client"], y2.info["client"]]),
            "the unsubscribed entry to go", timeout=2)
        await y2.close()
        await wait_until_async(lambda: api_presence_ids(a, ch) == [x.info["client"]],
                               "the closed client's entry to go", timeout=2)
        # a namespace without presence
        r = await x.call("presence", {"channel": "chat:room"})
        assert r["error"]["code"] == 403, r
        st, body = api_request(a.port, "/api/presence", {"channel": "chat:room"})
        assert st == 400, body
        st, body = api_request(a.port, "/api/presence", {"channel": "nope:room"})
        assert st == 400 and "namespace" in body["error"]["message"], body
        st, body = api_request(a.port, "/api/presence", {"channel": ch, "limit": 0})
        assert st == 400, body
        r = await x.call("presence", {"channel": ch, "limit": "x"})
        assert r["error"]["code"] == 400, r
        for c in (x, y1, t):
            await c.close()
    run(go())


async def wait_until_async(pred, what, timeout=10):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        await asyncio.sleep(0.05)


def test_join_leave_exactly_once_across_nodes(make_herald):
    a, b = two_nodes(make_herald)
    ch = "pres:lobby"

    async def go():
        w = await open_client(a.url, token_for(a, sub="watcher"))
        assert "result" in await w.subscribe(ch)
        quiet = await open_client(a.url, token_for(a, sub="quiet"))
        assert "result" in await quiet.call("subscribe", {"channel": ch, "join_leave": False})
        x = await open_client(b.url, token_for(b, sub="xena"))
        assert "result" in await x.subscribe(ch)
        y = await open_client(a.url, token_for(a, sub="yuri"))
        assert "result" in await y.subscribe(ch)
        assert "result" in await x.unsubscribe(ch)
        await y.close()
        xid, yid, qid = x.info["client"], y.info["client"], quiet.info["client"]
        want = [("join", qid), ("join", xid), ("join", yid), ("leave", xid), ("leave", yid)]
        await w.until(lambda: len(events(w, ch)) >= len(want), what="join/leave pushes")
        await w.drain(0.5)
        assert sorted(events(w, ch)) == sorted(want), events(w, ch)
        # per client in order: join before leave
        assert events(w, ch).index(("join", xid)) < events(w, ch).index(("leave", xid))
        push = [p for p in w.pushes if "join" in p and p["join"]["client"] == xid][0]
        assert push == {"channel": ch, "join": {"client": xid, "user": "xena"}}, push
        # x saw nobody join but itself was not announced to itself
        assert ("join", xid) not in events(x, ch)
        # the opted-out subscriber got none
        await quiet.drain(0.2)
        assert events(quiet, ch) == [], events(quiet, ch)
        # join/leave took no offsets: a publication still gets offset 1
        st, body = api_request(a.port, "/api/publish", {"channel": ch, "data": "hi"})
        assert body == {"result": {"offset": 1}}, body
        await w.wait_pubs(ch, 1)
        assert w.pubs(ch)[0]["offset"] == 1
        # bad opt-out value
        z = await open_client(b.url, token_for(b, sub="z"))
        r = await z.call("subscribe", {"channel": ch, "join_leave": "no"})
        assert r["error"]["code"] == 400, r
        for c in (w, quiet, x, z):
            await c.close()
    run(go())


def test_presence_agrees_under_churn(make_herald):
    a, b = two_nodes(make_herald)
    ch = "pres:churn"

    async def go():
        w = await open_client(b.url, token_for(b, sub="w"))
        assert "result" in await w.subscribe(ch)
        clients = []
        for i in range(12):
            h = (a, b)[i % 2]
            clients.append(await open_client(h.url, token_for(h, sub="u%d" % (i % 5))))

        def stays(i):
            return i % 3 != 0

        async def churn(c, i):
            for k in range(3):
                assert "result" in await c.subscribe(ch)
                if k < 2 or not stays(i):
                    assert "result" in await c.unsubscribe(ch)
        await asyncio.gather(*(churn(c, i) for i, c in enumerate(clients)))
        for c in clients[:3]:
            await c.close()
        stay = [c for i, c in enumerate(clients) if i >= 3 and stays(i)]
        want = sorted([w.info["client"]] + [c.info["client"] for c in stay])
        await wait_until_async(lambda: api_presence_ids(a, ch) == want, "presence to settle")
        assert api_presence_ids(b, ch) == want
        assert await presence_ids(w, ch) == want
        st, body = api_request(b.port, "/api/presence_stats", {"channel": ch})
        users = {"w"} | {"u%d" % (i % 5) for i, c in enumerate(clients) if c in stay}
        assert body["result"] == {"clients": len(want), "users": len(users)}, body
        # join/leave balance for every client the watcher saw
        await w.drain(0.5)
        ev = events(w, ch)
        for c in clients:
            cid = c.info["client"]
            joins = ev.count(("join", cid))
            leaves = ev.count(("leave", cid))
            assert joins - leaves == (1 if c in stay else 0), (cid, joins, leaves)
            assert joins == 3, (cid, joins)
        for c in [w] + clients[3:]:
            await c.close()
    run(go())


def test_presence_scripts_never_retried_out_of_order(make_herald, redis_server):
    """Every script is loaded on each command connection before use, so
    Redis never answers NOSCRIPT: a NOSCRIPT retry goes out behind the
    commands sent meanwhile, and an add retried behind its own remove left
    a stale entry and lost a join/leave pair (seen in the churn test)."""
    a, b = two_nodes(make_herald)
    ch = "pres:order"

    async def go():
        w = await open_client(b.url, token_for(b, sub="w"))
        assert "result" in await w.subscribe(ch)
        c = await open_client(a.url, token_for(a, sub="c"))
        for _ in range(3):
            assert "result" in await c.subscribe(ch)
            assert "result" in await c.unsubscribe(ch)
        await wait_until_async(lambda: api_presence_ids(a, ch) == [w.info["client"]],
                               "the churned client gone from presence")
        await w.drain(0.5)
        ev = events(w, ch)
        cid = c.info["client"]
        assert ev.count(("join", cid)) == 3 and ev.count(("leave", cid)) == 3, ev
        await c.close()
        await w.close()
    run(go())
    stats = redis_cli(redis_server.port, "INFO", "errorstats")
    assert "errorstat_NOSCRIPT" not in stats, stats


def test_killed_node_presence_vanishes_with_leaves(make_herald):
    a, b = two_nodes(make_herald)
    ch = "pres:crash"

    async def go():
        w = await open_client(a.url, token_for(a, sub="w"))
        assert "result" in await w.subscribe(ch)
        doomed = [await open_client(b.url, token_for(b, sub="d%d" % i)) for i in range(3)]
        for d in doomed:
            assert "result" in await d.subscribe(ch)
        ids = sorted(d.info["client"] for d in doomed)
        await wait_until_async(lambda: api_presence_ids(a, ch) == sorted(ids + [w.info["client"]]),
                               "presence", timeout=5)
        b.expect_clean_exit = False
        os.killpg(b.pid, signal.SIGKILL)
        b.proc.wait(10)
        t0 = time.monotonic()
        await wait_until_async(lambda: api_presence_ids(a, ch) == [w.info["client"]],
                               "the dead node's entries to vanish", timeout=20)
        took = time.monotonic() - t0
        assert took <= (CLUSTER["node_ttl_ms"] + CLUSTER["heartbeat_ms"]) / 1000.0 + 5, took
        # each of them left exactly once
        await w.until(lambda: len([e for e in events(w, ch) if e[0] == "leave"]) >= 3,
                      what="leaves for the dead node's clients")
        await w.drain(0.5)
        assert sorted(c for k, c in events(w, ch) if k == "leave") == ids, events(w, ch)
        await w.close()
    run(go())


def test_many_members_cost_nothing_to_a_subscriber(make_herald):
    """Subscribing to a presence channel with many members sends nobody the
    member list: the new subscriber gets its reply only, the watchers one
    join each."""
    a, b = two_nodes(make_herald)
    ch = "pres:big"

    async def go():
        members = []
        for i in range(60):
            h = (a, b)[i % 2]
            c = await open_client(h.url, token_for(h, sub="m%d" % i))
            assert "result" in await c.call("subscribe", {"channel": ch, "join_leave": False})
            members.append(c)
        newc = await open_client(a.url, token_for(a, sub="new"))
        frames = newc.frames
        r = await newc.subscribe(ch)
        assert set(r["result"]) == {"offset", "epoch"}, r
        await newc.drain(0.3)
        assert newc.pushes == [] and newc.frames - frames <= 1
        await wait_until_async(
            lambda: api_request(a.port, "/api/presence_stats", {"channel": ch})[1]["result"]
            == {"clients": 61, "users": 61}, "61 members", timeout=5)
        for c in members + [newc]:
            await c.close()
    run(go())


def test_presence_restored_after_a_node_was_taken_for_dead(make_herald):
    """A node stopped past the ttl is swept (its clients' leaves go out);
    when it comes back with its clients still connected, their entries
    come back, with a join each."""
    a, b = two_nodes(make_herald)
    ch = "pres:stall"

    async def go():
        w = await open_client(a.url, token_for(a, sub="w"))
        assert "result" in await w.subscribe(ch)
        s = await open_client(b.url, token_for(b, sub="sleeper"))
        assert "result" in await s.subscribe(ch)
        sid = s.info["client"]
        await w.until(lambda: ("join", sid) in events(w, ch), what="the join")
        pids = list(b.worker_pids().values())
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        try:
            await wait_until_async(lambda: api_presence_ids(a, ch) == [w.info["client"]],
                                   "the stopped node's entry to go", timeout=20)
            await w.until(lambda: ("leave", sid) in events(w, ch), what="the leave")
        finally:
            for p in pids:
                os.kill(p, signal.SIGCONT)
        await wait_until_async(lambda: api_presence_ids(a, ch) == sorted([w.info["client"], sid]),
                               "the entry to come back", timeout=20)
        await w.until(lambda: events(w, ch).count(("join", sid)) == 2, what="a second join")
        assert events(w, ch) == [("join", sid), ("leave", sid), ("join", sid)], events(w, ch)
        # Redis losing the hash: the members put their entries back
        from harness import redis_cli
        redis_cli_port = int(a.config["redis"]["url"].rsplit(":", 1)[1].split("/")[0])
        redis_cli(redis_cli_port, "DEL", "{herald||%s}:pres" % ch)
        assert api_presence_ids(a, ch) == []
        await wait_until_async(lambda: api_presence_ids(a, ch) == sorted([w.info["client"], sid]),
                               "the lost hash to be refilled", timeout=20)
        await w.close()
        await s.close()
    run(go())
