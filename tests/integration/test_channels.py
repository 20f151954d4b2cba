"""Channels (issue 4): names, namespaces and their publish flag, the
subscription limit, double subscribe, tenant isolation."""

import asyncio
import json

from harness import (api_request, open_client, pubsub_config, run,
                     token_for)


def code_of(reply):
    return "result" if "result" in reply else reply.get("error", {}).get("code")


def test_publish_needs_namespace_publish_flag(pubsub_herald):
    h = pubsub_herald

    async def go():
        c = await open_client(h.url, token_for(h))
        assert "result" in await c.subscribe("ro:feed")     # subscribing is fine
        r = await c.publish("ro:feed", "client")
        assert code_of(r) == 403, r
        # the HTTP API may publish on every namespace; the refused publish
        # was not delivered and did not take an offset
        st, body = api_request(h.port, "/api/publish", {"channel": "ro:feed", "data": "api"})
        assert st == 200 and body["result"]["offset"] == 1, (st, body)
        pubs = await c.wait_pubs("ro:feed", 1)
        await c.drain(0.3)
        assert [(p["offset"], p["data"]) for p in c.pubs("ro:feed")] == [(1, "api")], c.pushes
        assert pubs[0]["offset"] == 1
        await c.close()
    run(go())


def test_unknown_namespace_403(pubsub_herald):
    h = pubsub_herald

    async def go():
        c = await open_client(h.url, token_for(h))
        # ":x" is in the namespace "" (the part before the first ':'),
        # which cannot be configured; it is not "default"
        for ch in ("nope:x", "Chat:x", ":x", "chat2:x"):
            for method in ("subscribe", "publish"):
                params = {"channel": ch, "data": 1}
                r = await c.call(method, params)
                assert code_of(r) == 403, (method, ch, r)
        await c.close()
    run(go())


def test_channel_without_default_namespace_403(make_herald):
    """Names without ':' are in "default"; with no "default" configured
    they are refused."""
    cfg = pubsub_config()
    cfg["namespaces"] = {"chat": {"publish": True}}
    h = make_herald(**cfg)

    async def go():
        c = await open_client(h.url, token_for(h))
        r = await c.subscribe("plain")
        assert code_of(r) == 403, r
        r = await c.subscribe("chat:ok")
        assert code_of(r) == "result", r
        await c.close()
    run(go())


def test_channel_name_validation(pubsub_herald):
    h = pubsub_herald
    ok_255 = "chat:" + "n" * 250
    bad = ["", "chat:a b", "chat:a/b", "chat:a*", "chat:a#b", "chat:a|b", "chat:a\nb",
           "chat:\u00e9", "chat:" + "n" * 251, "x" * 300]
    assert len(ok_255) == 255 and len(("chat:" + "n" * 251).encode()) == 256

    async def go():
        c = await open_client(h.url, token_for(h))
        problems = []
        for ch in bad:
            for method in ("subscribe", "publish", "unsubscribe"):
                r = await c.call(method, {"channel": ch, "data": 1})
                if code_of(r) != 400:
                    problems.append("%s %r: expected 400, got %r" % (method, ch, r))
        for params in ({}, {"channel": 5}, {"channel": None}, {"channel": ["chat:a"]}):
            for method in ("subscribe", "publish"):
                r = await c.call(method, dict(params, data=1))
                if code_of(r) != 400:
                    problems.append("%s %r: expected 400, got %r" % (method, params, r))
        assert not problems, "\n".join(problems)
        # 255 bytes, and every allowed character, work end to end
        for ch in (ok_255, "chat:AZaz09_.:@-"):
            assert code_of(await c.subscribe(ch)) == "result", ch
            r = await c.publish(ch, {"n": ch})
            assert code_of(r) == "result", r
            pubs = await c.wait_pubs(ch, 1)
            assert pubs[0]["data"] == {"n": ch}
        # and through a tenant of 64 bytes (the longest Redis key)
        t = await open_client(h.url, token_for(h, tenant="T" * 64))
        assert code_of(await t.subscribe(ok_255)) == "result"
        assert code_of(await t.publish(ok_255, "t")) == "result"
        pubs = await t.wait_pubs(ok_255, 1)
        assert pubs[0]["data"] == "t" and pubs[0]["offset"] == 1, pubs
        await c.drain(0.2)
        assert len(c.pubs(ok_255)) == 1, c.pushes           # other tenant
        await c.close()
        await t.close()
    run(go())


def test_publish_needs_data(pubsub_herald):
    h = pubsub_herald

    async def go():
        c = await open_client(h.url, token_for(h))
        r = await c.call("publish", {"channel": "chat:d"})
        assert code_of(r) == 400, r
        # null is data like any other JSON value
        for data in (None, 0, "", [], {}, [1, {"a": "\u00e9\n"}]):
            assert code_of(await c.subscribe("chat:d%d" % len(json.dumps(data)))) in ("result", 409)
            r = await c.publish("chat:d%d" % len(json.dumps(data)), data)
            assert code_of(r) == "result", (data, r)
        await c.close()
    run(go())


def test_subscription_limit_429(make_herald):
    h = make_herald(**pubsub_config(limits={"subscriptions_per_connection": 3}))

    async def go():
        c = await open_client(h.url, token_for(h))
        for i in range(3):
            assert code_of(await c.subscribe("chat:l%d" % i)) == "result"
        r = await c.subscribe("chat:l3")
        assert code_of(r) == 429, r
        # the limit is per connection, and freeing a slot allows one more
        other = await open_client(h.url, token_for(h))
        assert code_of(await other.subscribe("chat:l3")) == "result"
        assert code_of(await c.unsubscribe("chat:l0")) == "result"
        assert code_of(await c.subscribe("chat:l3")) == "result"
        assert code_of(await c.subscribe("chat:l4")) == 429
        # the refused subscription delivers nothing
        st, _ = api_request(h.port, "/api/publish", {"channel": "chat:l4", "data": 1})
        assert st == 200
        st, _ = api_request(h.port, "/api/publish", {"channel": "chat:l3", "data": 2})
        assert st == 200
        await c.wait_pubs("chat:l3", 1)
        await c.drain(0.3)
        assert not c.pubs("chat:l4"), c.pushes
        await c.close()
        await other.close()
    run(go())


def test_already_subscribed_409(pubsub_herald):
    h = pubsub_herald

    async def go():
        c = await open_client(h.url, token_for(h))
        assert code_of(await c.subscribe("chat:twice")) == "result"
        r = await c.subscribe("chat:twice")
        assert code_of(r) == 409, r
        # two subscribes in one frame: one result, one 409
        ids = []
        lines = []
        for _ in range(2):
            ids.append(c.next_id)
            lines.append(json.dumps({"id": c.next_id, "method": "subscribe",
                                     "params": {"channel": "chat:burst"}}))
            c.next_id += 1
        await c.ws.send("\n".join(lines))
        codes = sorted([code_of(await c.reply(i)) for i in ids], key=str)
        assert codes == [409, "result"], codes
        # still one subscription: each publication arrives once
        for ch in ("chat:twice", "chat:burst"):
            st, _ = api_request(h.port, "/api/publish", {"channel": ch, "data": ch})
            assert st == 200
            await c.wait_pubs(ch, 1)
        await c.drain(0.3)
        assert len(c.pushes) == 2, c.pushes
        await c.close()
    run(go())


def test_tenant_isolation(pubsub_herald):
    h = pubsub_herald
    ch = "chat:room"

    async def go():
        a = await open_client(h.url, token_for(h, sub="u", tenant="acme"))
        a2 = await open_client(h.url, token_for(h, sub="v", tenant="acme"))
        b = await open_client(h.url, token_for(h, sub="u", tenant="globex"))
        n = await open_client(h.url, token_for(h, sub="u"))        # no tenant
        everyone = {"a": a, "a2": a2, "b": b, "n": n}
        for c in everyone.values():
            r = await c.subscribe(ch)
            assert r["result"]["offset"] == 0, r
        # each tenant's channel numbers its publications on its own
        r = await b.publish(ch, "b-ws")
        assert r["result"]["offset"] == 1, r
        st, body = api_request(h.port, "/api/publish", {"channel": ch, "data": "acme-api", "tenant": "acme"})
        assert st == 200 and body["result"]["offset"] == 1, body
        st, body = api_request(h.port, "/api/publish", {"channel": ch, "data": "none-api"})
        assert st == 200 and body["result"]["offset"] == 1, body
        r = await a.publish(ch, "acme-ws")
        assert r["result"]["offset"] == 2, r
        st, body = api_request(h.port, "/api/broadcast",
                               {"channels": [ch], "data": "globex-bc", "tenant": "globex"})
        assert st == 200 and body["result"]["offsets"] == [2], body
        r = await n.publish(ch, "none-ws")
        assert r["result"]["offset"] == 2, r
        # a tenant named like a channel prefix does not reach into others
        st, body = api_request(h.port, "/api/publish", {"channel": ch, "data": "x-api", "tenant": "x"})
        assert st == 200 and body["result"]["offset"] == 1, body
        want = {"a": ["acme-api", "acme-ws"], "a2": ["acme-api", "acme-ws"],
                "b": ["b-ws", "globex-bc"], "n": ["none-api", "none-ws"]}
        for name, c in everyone.items():
            await c.wait_pubs(ch, 2)
        await asyncio.gather(*(c.drain(0.4) for c in everyone.values()))
        for name, c in everyone.items():
            got = [(p["offset"], p["data"]) for p in c.pubs(ch)]
            assert got == list(enumerate(want[name], 1)), "%s got %r" % (name, got)
            assert all(p["channel"] == ch for p in c.pushes), c.pushes
        for c in everyone.values():
            await c.close()
    run(go())
