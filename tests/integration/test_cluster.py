"""Two herald nodes on one Redis (issue 14): the node registry, client ids
that embed the node id, and the cluster-wide server API over the control
channel (disconnect, connections, channels, info), with partial replies
when a node does not answer and tenant isolation for every method."""

import json
import os
import signal
import subprocess
import time

from harness import (API_KEY, api_request, admin_request, open_client,
                     parse_metrics, pubsub_config, redis_cli, run, token_for,
                     wait_until)

# Short beats so that the dead-node bounds are quick to observe; the
# call timeout stays well above a loaded box's round trip through Redis.
CLUSTER = {"heartbeat_ms": 200, "node_ttl_ms": 1500, "call_timeout_ms": 1500}


def two_nodes(make_herald, **over):
    cfg = pubsub_config(cluster=dict(CLUSTER), **over)
    a = make_herald(**cfg)
    b = make_herald(**cfg)
    # both nodes (2 workers each) registered
    wait_until(lambda: len(nodes_of(a)) == 2 and all(n["workers"] == 2 for n in nodes_of(a)),
               15, what="two nodes with two workers each in /api/info")
    return a, b


def nodes_of(h):
    st, body = api_request(h.port, "/api/info", {})
    assert st == 200, (st, body)
    return body["result"]["nodes"]


def node_of_client(client_id):
    return client_id.split("-", 1)[0]


def test_registry_info_and_client_ids(make_herald):
    a, b = two_nodes(make_herald)

    async def go():
        ca = await open_client(a.url, token_for(a, sub="ann"))
        cb = await open_client(b.url, token_for(b, sub="ben"))
        ids = {node_of_client(ca.info["client"]), node_of_client(cb.info["client"])}
        assert len(ids) == 2, (ca.info, cb.info)
        # the ids the clients see are the ids /api/info lists
        def conns():
            return {n["id"]: n["connections"] for n in nodes_of(b)}
        wait_until(lambda: all(conns().get(i, 0) >= 1 for i in ids), 10,
                   what="connections counted per node in /api/info")
        for n in nodes_of(a):
            assert n["workers"] == 2 and n["version"] and n["uptime_s"] >= 0, n
        await ca.close()
        await cb.close()
    run(go())


def test_disconnect_user_on_other_node(make_herald):
    a, b = two_nodes(make_herald)

    async def go():
        bob1 = await open_client(b.url, token_for(b, sub="bob"))
        bob2 = await open_client(b.url, token_for(b, sub="bob"))
        bob_acme = await open_client(b.url, token_for(b, sub="bob", tenant="acme"))
        eve = await open_client(b.url, token_for(b, sub="eve"))
        # one client by id, with a reconnect-is-fine code
        st, body = api_request(a.port, "/api/disconnect",
                               {"user": "bob", "client": bob1.info["client"], "code": 4010})
        assert st == 200 and body["result"]["closed"] == 1, (st, body)
        assert body["result"]["partial"] is False and body["result"]["missing"] == []
        assert await bob1.wait_closed() == 4010
        # the rest of bob's tenant-less connections, default code
        st, body = api_request(a.port, "/api/disconnect", {"user": "bob", "reason": "banned"})
        assert st == 200 and body["result"] == {"closed": 1, "partial": False, "missing": []}, body
        assert await bob2.wait_closed() == 4504
        # tenant isolation: acme's bob and eve are still there
        r = await bob_acme.call("ping")
        assert "result" in r
        assert "result" in await eve.call("ping")
        st, body = api_request(a.port, "/api/disconnect", {"user": "bob", "tenant": "acme"})
        assert st == 200 and body["result"]["closed"] == 1, body
        assert await bob_acme.wait_closed() == 4504
        # nothing left to close
        st, body = api_request(a.port, "/api/disconnect", {"user": "bob"})
        assert st == 200 and body["result"]["closed"] == 0, body
        await eve.close()
    run(go())


def test_connections_and_channels_cluster_wide(make_herald):
    a, b = two_nodes(make_herald)

    async def go():
        c1 = await open_client(a.url, token_for(a, sub="u1"))
        c2 = await open_client(b.url, token_for(b, sub="u2"))
        t1 = await open_client(b.url, token_for(b, sub="u1", tenant="acme"))
        for c in (c1, c2):
            assert "result" in await c.subscribe("chat:room")
        assert "result" in await c1.subscribe("news:x")
        assert "result" in await t1.subscribe("chat:secret")

        st, body = api_request(a.port, "/api/connections", {})
        assert st == 200, body
        res = body["result"]
        assert res["partial"] is False and res["total"] == 2 and not res["truncated"], res
        rows = {r["client"]: r for r in res["connections"]}
        assert set(rows) == {c1.info["client"], c2.info["client"]}
        r1 = rows[c1.info["client"]]
        assert r1["user"] == "u1" and sorted(r1["subscriptions"]) == ["chat:room", "news:x"], r1
        assert r1["node"] == node_of_client(c1.info["client"]) and "ip" not in r1
        assert r1["connected_at"] <= time.time() + 1 and r1["queued_bytes"] >= 0
        # filter by user; tenant isolation
        st, body = api_request(b.port, "/api/connections", {"user": "u1"})
        assert [r["client"] for r in body["result"]["connections"]] == [c1.info["client"]]
        st, body = api_request(b.port, "/api/connections", {"tenant": "acme"})
        assert [r["client"] for r in body["result"]["connections"]] == [t1.info["client"]]
        assert body["result"]["connections"][0]["tenant"] == "acme"
        st, body = api_request(b.port, "/api/connections", {"limit": 1})
        assert body["result"]["total"] == 2 and len(body["result"]["connections"]) == 1
        assert body["result"]["truncated"] is True

        st, body = api_request(b.port, "/api/channels", {})
        assert st == 200, body
        got = {r["channel"]: r["subscribers"] for r in body["result"]["channels"]}
        assert got == {"chat:room": 2, "news:x": 1}, got
        st, body = api_request(a.port, "/api/channels", {"pattern": "chat:*"})
        assert {r["channel"] for r in body["result"]["channels"]} == {"chat:room"}
        st, body = api_request(a.port, "/api/channels", {"tenant": "acme"})
        got = {r["channel"]: r["subscribers"] for r in body["result"]["channels"]}
        assert got == {"chat:secret": 1}, got
        for c in (c1, c2, t1):
            await c.close()
    run(go())


def test_channels_paged_and_bounded_per_worker(make_herald, redis_server):
    """/api/channels with more channels than api.list_max: each worker
    answers at most `limit` of them (read off the control channel's
    replies in Redis), pages come in name order with a cursor, and the
    pages together hold every channel once with its subscribers summed
    over both workers."""
    h = make_herald(**pubsub_config(api={"list_max": 5}))
    names = ["chat:c%02d" % i for i in range(12)]
    shared = {"chat:c03", "chat:c07", "chat:c10"}
    spy = subprocess.Popen(["redis-cli", "-p", str(redis_server.port),
                            "PSUBSCRIBE", "herald#rep#*"],
                           stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    wait_until(lambda: redis_cli(redis_server.port, "PUBSUB", "NUMPAT").strip() == "1",
               10, what="the reply spy subscribed")

    async def go():
        # two clients on two different workers
        clients = []
        while len({c.worker for c in clients}) < 2:
            assert len(clients) < 40, "one worker took every connection"
            clients.append(await open_client(h.url, token_for(h, sub="u")))
        a = clients[0]
        b = next(c for c in clients if c.worker != a.worker)
        for n in names:
            assert "result" in await a.subscribe(n)
        for n in sorted(shared):
            assert "result" in await b.subscribe(n)

        pages, cursor = [], None
        while True:
            req = {} if cursor is None else {"cursor": cursor}
            st, body = api_request(h.port, "/api/channels", req)
            assert st == 200, body
            res = body["result"]
            pages.append(res)
            if not res["truncated"]:
                assert "cursor" not in res, res
                break
            cursor = res["cursor"]
            assert cursor == res["channels"][-1]["channel"], res
            assert len(pages) < 5, pages
        got = [(r["channel"], r["subscribers"]) for p in pages for r in p["channels"]]
        assert [len(p["channels"]) for p in pages] == [5, 5, 2], pages
        assert got == [(n, 2 if n in shared else 1) for n in names], got
        assert pages[0]["total"] >= 12 and pages[0]["partial"] is False, pages[0]

        # a page of one, and everything after the last name
        st, body = api_request(h.port, "/api/channels",
                               {"limit": 1, "cursor": "chat:c03"})
        assert [r["channel"] for r in body["result"]["channels"]] == ["chat:c04"]
        st, body = api_request(h.port, "/api/channels", {"cursor": "chat:c11"})
        assert body["result"]["channels"] == [] and not body["result"]["truncated"]
        for bad in ({"limit": 6}, {"limit": 0}, {"cursor": 3}, {"cursor": ""}):
            st, body = api_request(h.port, "/api/channels", bad)
            assert st == 400, (bad, st, body)
        for c in clients:
            await c.close()
    try:
        run(go())
    finally:
        spy.terminate()
        out, _ = spy.communicate(timeout=10)
    # what each worker sent back: never more than a page
    replies = [json.loads(line) for line in out.decode().splitlines()
               if line.startswith("{") and '"channels"' in line]
    assert len(replies) >= 2 * 5, replies
    for r in replies:
        assert len(r["result"]["channels"]) <= 5, r


def test_partial_reply_when_a_node_is_stopped(make_herald):
    a, b = two_nodes(make_herald)
    b_node = nodes_of(b)
    pids = list(b.worker_pids().values())

    async def go():
        bob = await open_client(a.url, token_for(a, sub="bob"))
        b_id = {n["id"] for n in nodes_of(a)} - {node_of_client(bob.info["client"])}
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            st, body = api_request(a.port, "/api/disconnect", {"user": "bob"})
            took = time.monotonic() - t0
        finally:
            for p in pids:
                os.kill(p, signal.SIGCONT)
        assert st == 200, body
        res = body["result"]
        assert res["partial"] is True and res["missing"] == sorted(b_id), (res, b_id)
        assert res["closed"] == 1
        assert took >= CLUSTER["call_timeout_ms"] / 1000.0 * 0.9
        assert await bob.wait_closed() == 4504
        # back: complete again
        st, body = api_request(a.port, "/api/connections", {})
        assert body["result"]["partial"] is False, body
    assert b_node
    run(go())


def test_killed_node_leaves_the_registry(make_herald):
    a, b = two_nodes(make_herald)
    b.expect_clean_exit = False
    os.killpg(b.pid, signal.SIGKILL)
    b.proc.wait(10)
    t0 = time.monotonic()
    wait_until(lambda: len(nodes_of(a)) == 1, 15, what="the killed node to leave /api/info")
    took = time.monotonic() - t0
    # bound: node_ttl_ms plus one heartbeat (plus slack for a loaded box)
    assert took <= (CLUSTER["node_ttl_ms"] + CLUSTER["heartbeat_ms"]) / 1000.0 + 5, took
    st, body = api_request(a.port, "/api/connections", {})
    assert st == 200 and body["result"]["partial"] is False, body


def test_graceful_stop_leaves_at_once(make_herald):
    a, b = two_nodes(make_herald)
    b.send_signal(signal.SIGTERM)
    assert b.wait_exit(30) == 0
    # gone well before the ttl would have expired it
    wait_until(lambda: len(nodes_of(a)) == 1, CLUSTER["node_ttl_ms"] / 1000.0,
               what="a stopped node to leave the registry")


def test_api_errors_and_metrics(make_herald):
    a = make_herald(**pubsub_config(cluster=dict(CLUSTER)))
    cases = [
        ("/api/disconnect", {}, 400),
        ("/api/disconnect", {"user": ""}, 400),
        ("/api/disconnect", {"user": 5}, 400),
        ("/api/disconnect", {"user": "x", "code": 1000}, 400),
        ("/api/disconnect", {"user": "x", "code": 5000}, 400),
        ("/api/disconnect", {"user": "x", "code": "4504"}, 400),
        ("/api/disconnect", {"user": "x", "reason": "r" * 64}, 400),
        ("/api/disconnect", {"user": "x", "tenant": "bad tenant"}, 400),
        ("/api/connections", {"limit": 0}, 400),
        ("/api/connections", {"user": ["x"]}, 400),
        ("/api/channels", {"pattern": 3}, 400),
        ("/api/channels", {"limit": 10 ** 9}, 400),
        ("/api/info", "[]", 400),
    ]
    for path, body, want in cases:
        st, got = api_request(a.port, path, body)
        assert st == want and got["error"]["code"] == want and got["error"]["message"], (path, body, st, got)
    st, got = api_request(a.port, "/api/disconnect", {"user": "x"}, key="wrong-key-0123456789")
    assert st == 401, got
    st, got = api_request(a.port, "/api/info", {}, key=None)
    assert st == 401, got
    st, got = api_request(a.port, "/api/info", {})
    assert st == 200
    _, _, text = admin_request(a.admin_port, "/metrics")
    _, samples = parse_metrics(text)

    def total(method, result):
        return sum(v for (n, labels), v in samples.items()
                   if n == "herald_api_requests_total"
                   and dict(labels)["method"] == method and dict(labels)["result"] == result)
    assert total("disconnect", "bad_request") == 8
    assert total("disconnect", "unauthorized") == 1
    assert total("info", "unauthorized") == 1
    assert total("info", "ok") >= 1
    assert total("connections", "bad_request") == 2
    assert total("channels", "bad_request") == 2


def test_server_side_subscribe_and_unsubscribe(make_herald):
    a, b = two_nodes(make_herald)
    ch = "chat:srv"

    async def go():
        bob1 = await open_client(b.url, token_for(b, sub="bob"))
        bob2 = await open_client(a.url, token_for(a, sub="bob"))
        acme = await open_client(b.url, token_for(b, sub="bob", tenant="acme"))
        st, body = api_request(a.port, "/api/subscribe", {"user": "bob", "channel": ch})
        assert st == 200 and body["result"] == {"subscribed": 2, "partial": False, "missing": []}, body
        for c in (bob1, bob2):
            await c.until(lambda c=c: any("subscribe" in p for p in c.pushes), what="subscribe push")
            p = [p for p in c.pushes if "subscribe" in p][0]
            assert p["channel"] == ch and p["subscribe"]["offset"] == 0 and p["subscribe"]["epoch"], p
        # already subscribed: nothing more
        st, body = api_request(b.port, "/api/subscribe", {"user": "bob", "channel": ch})
        assert body["result"]["subscribed"] == 0, body
        st, body = api_request(a.port, "/api/publish", {"channel": ch, "data": 1})
        assert body == {"result": {"offset": 1}}
        await bob1.wait_pubs(ch, 1)
        await bob2.wait_pubs(ch, 1)
        # the client unsubscribes normally from a server-made subscription
        assert "result" in await bob2.unsubscribe(ch)
        # server-side unsubscribe of one client
        st, body = api_request(a.port, "/api/unsubscribe",
                               {"user": "bob", "channel": ch, "client": bob1.info["client"]})
        assert body["result"] == {"unsubscribed": 1, "partial": False, "missing": []}, body
        await bob1.until(lambda: any("unsubscribe" in p for p in bob1.pushes), what="unsubscribe push")
        assert [p for p in bob1.pushes if "unsubscribe" in p][0] == {"channel": ch, "unsubscribe": {"server": True}}
        st, body = api_request(a.port, "/api/publish", {"channel": ch, "data": 2})
        await bob1.drain(0.3)
        assert [p["offset"] for p in bob1.pubs(ch)] == [1]
        # tenant isolation: acme's bob was never touched, and only acme reaches it
        await acme.drain(0.1)
        assert acme.pushes == []
        st, body = api_request(a.port, "/api/subscribe", {"user": "bob", "channel": ch, "tenant": "acme"})
        assert body["result"]["subscribed"] == 1, body
        await acme.until(lambda: any("subscribe" in p for p in acme.pushes), what="acme subscribe push")
        st, body = api_request(a.port, "/api/publish", {"channel": ch, "data": "acme", "tenant": "acme"})
        await acme.wait_pubs(ch, 1)
        assert acme.pubs(ch)[0]["data"] == "acme"
        # errors
        for path in ("/api/subscribe", "/api/unsubscribe"):
            for bad in ({"channel": ch}, {"user": "bob"}, {"user": "bob", "channel": "nope:x"},
                        {"user": "bob", "channel": "bad channel"}, {"user": "bob", "channel": ch, "client": 3}):
                st, body = api_request(a.port, path, bad)
                assert st == 400 and body["error"]["code"] == 400, (path, bad, body)
        for c in (bob1, bob2, acme):
            await c.close()
    run(go())


def test_history_and_history_remove_api(make_herald):
    cfg = pubsub_config(cluster=dict(CLUSTER))
    cfg["namespaces"]["hist"] = {"history_size": 10, "history_ttl_s": 60}
    a = make_herald(**cfg)
    ch = "hist:h"
    for i in range(3):
        st, body = api_request(a.port, "/api/publish", {"channel": ch, "data": {"n": i}})
        assert st == 200, body
    st, body = api_request(a.port, "/api/publish", {"channel": ch, "data": "other", "tenant": "acme"})
    st, body = api_request(a.port, "/api/history", {"channel": ch})
    assert st == 200, body
    res = body["result"]
    assert res["offset"] == 3 and [(p["offset"], p["data"]) for p in res["publications"]] == \
        [(1, {"n": 0}), (2, {"n": 1}), (3, {"n": 2})], res
    epoch = res["epoch"]
    st, body = api_request(a.port, "/api/history", {"channel": ch, "limit": 2})
    assert [p["offset"] for p in body["result"]["publications"]] == [2, 3], body
    st, body = api_request(a.port, "/api/history", {"channel": ch, "since": {"offset": 2, "epoch": epoch}})
    assert [p["offset"] for p in body["result"]["publications"]] == [3], body
    st, body = api_request(a.port, "/api/history", {"channel": ch, "since": {"offset": 1, "epoch": "0" * 16}})
    assert st == 410, body
    st, body = api_request(a.port, "/api/history", {"channel": ch, "tenant": "acme"})
    assert [p["data"] for p in body["result"]["publications"]] == ["other"], body
    st, body = api_request(a.port, "/api/history_remove", {"channel": ch})
    assert body == {"result": {"removed": 3}}, body
    st, body = api_request(a.port, "/api/history", {"channel": ch})
    assert body["result"]["publications"] == [] and body["result"]["epoch"] == epoch, body
    # the numbering goes on; a recovery from before the removal cannot recover

    async def go():
        c = await open_client(a.url, token_for(a, sub="r"))
        r = await c.call("subscribe", {"channel": ch, "recover": True, "offset": 1, "epoch": epoch})
        assert r["result"]["recovered"] is False and r["result"]["offset"] == 3, r
        await c.close()
    run(go())
    st, body = api_request(a.port, "/api/publish", {"channel": ch, "data": "after"})
    assert body == {"result": {"offset": 4}}, body
    # acme's history untouched
    st, body = api_request(a.port, "/api/history", {"channel": ch, "tenant": "acme"})
    assert len(body["result"]["publications"]) == 1
    for path in ("/api/history", "/api/history_remove"):
        for bad in ({}, {"channel": "chat:nohist"}, {"channel": "nope:x"}):
            st, body = api_request(a.port, path, bad)
            assert st == 400, (path, bad, body)
    st, body = api_request(a.port, "/api/history", {"channel": ch, "limit": 0})
    assert st == 400
    st, body = api_request(a.port, "/api/history", {"channel": ch, "since": {"offset": 1}})
    assert st == 400


def test_api_answers_503_without_redis(make_herald, redis_server):
    cfg = pubsub_config(cluster=dict(CLUSTER))
    cfg["namespaces"]["pres"] = {"presence": True}
    cfg["namespaces"]["hist"] = {"history_size": 10, "history_ttl_s": 60}
    a = make_herald(**cfg)
    redis_server.stop()
    wait_until(lambda: api_request(a.port, "/api/info", {})[0] == 503, 15,
               what="the API to notice Redis is gone")
    for path, body in (("/api/disconnect", {"user": "x"}), ("/api/connections", {}),
                       ("/api/channels", {}), ("/api/subscribe", {"user": "x", "channel": "chat:a"}),
                       ("/api/unsubscribe", {"user": "x", "channel": "chat:a"}),
                       ("/api/presence", {"channel": "pres:a"}),
                       ("/api/presence_stats", {"channel": "pres:a"}),
                       ("/api/history", {"channel": "hist:a"}),
                       ("/api/history_remove", {"channel": "hist:a"}), ("/api/info", {})):
        st, got = api_request(a.port, path, body)
        assert st == 503 and got["error"]["code"] == 503 and got["error"]["message"], (path, st, got)
