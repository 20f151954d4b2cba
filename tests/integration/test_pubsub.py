"""Pub/sub data plane (issue 4): fan-out across workers and nodes, order and
exactly-once delivery, a 1,000-subscriber burst, unsubscribe, Redis
subscription bookkeeping, publishing while Redis is down, gap pushes."""

import asyncio
import collections
import json
import resource
import time

import pytest

from harness import (API_KEY, PUBSUB_CONFIG, api_request, clients_on_workers,
                     open_client, pubsub_config, redis_cli,
                     redis_pubsub_channels, redis_restart_same_port, run,
                     token_for, wait_until)


def check_stream(pubs, acked, what):
    """pubs: the "pub" objects a subscriber got on one channel. acked:
    {offset: data} of every publication made. The subscriber must have
    exactly those offsets, each once, in increasing order, with the data
    that was published under it."""
    offsets = [p["offset"] for p in pubs]
    assert offsets == sorted(acked), (
        "%s: offsets received %r, expected exactly %r in order"
        % (what, offsets, sorted(acked)))
    for p in pubs:
        assert p["data"] == acked[p["offset"]], (
            "%s: offset %d carried %r, the publisher was acked %r for it"
            % (what, p["offset"], p["data"], acked[p["offset"]]))
    assert len({p["epoch"] for p in pubs}) <= 1, "%s: epoch changed: %r" % (what, pubs)


async def publish_many(client, items, per_frame=50, timeout=30):
    """Send publish commands for items, (channel, data) pairs, several per
    frame, then collect the replies. Returns {channel: {offset: data}};
    every publish must succeed."""
    ids = []
    for i in range(0, len(items), per_frame):
        lines = []
        for ch, data in items[i:i + per_frame]:
            cmd_id = client.next_id
            client.next_id += 1
            ids.append((cmd_id, ch, data))
            lines.append(json.dumps({"id": cmd_id, "method": "publish",
                                     "params": {"channel": ch, "data": data}}))
        await client.ws.send("\n".join(lines))
    acked = {}
    for cmd_id, ch, data in ids:
        r = await client.reply(cmd_id, timeout)
        assert "result" in r, "publish of %r on %s failed: %r" % (data, ch, r)
        off = r["result"]["offset"]
        got = acked.setdefault(ch, {})
        assert off not in got, "offset %d acked twice on %s (%r, %r)" % (off, ch, got[off], data)
        got[off] = data
    return acked


async def publish_burst(client, channel, datas, per_frame=50, timeout=30):
    """publish_many on one channel; returns {offset: data}."""
    acked = await publish_many(client, [(channel, d) for d in datas], per_frame, timeout)
    return acked.get(channel, {})


async def close_all(clients):
    await asyncio.gather(*(c.close() for c in clients))


# --------------------------------------------------------------------------


def test_cross_worker_delivery_exactly_once_in_order(pubsub_herald):
    h = pubsub_herald
    chans = ["chat:xw", "plain-xw"]          # a namespace and "default"
    n = 60

    async def go():
        tok = token_for(h, sub="u1")
        subs = await clients_on_workers(h.url, tok)
        pubs = await clients_on_workers(h.url, tok)
        for s in subs.values():
            for ch in chans:
                r = await s.subscribe(ch)
                assert r["result"]["offset"] == 0 and r["result"]["epoch"], r
        # both publishers, on both workers, on both channels at once
        jobs = [publish_many(p, [(ch, {"w": slot, "ch": ch, "i": i}) for i in range(n) for ch in chans],
                             per_frame=7)
                for slot, p in pubs.items()]
        acked = {ch: {} for ch in chans}
        for res in await asyncio.gather(*jobs):
            for ch in chans:
                assert not set(acked[ch]) & set(res[ch]), "offsets acked twice"
                acked[ch].update(res[ch])
        for ch in chans:
            assert sorted(acked[ch]) == list(range(1, 2 * n + 1)), (ch, sorted(acked[ch]))
        for slot, s in subs.items():
            for ch in chans:
                await s.wait_pubs(ch, 2 * n, timeout=20)
        # nothing more (a duplicate would show up here)
        await asyncio.gather(*(s.drain(0.5) for s in subs.values()))
        for slot, s in subs.items():
            for ch in chans:
                check_stream(s.pubs(ch), acked[ch], "subscriber on worker %d, %s" % (slot, ch))
            assert not s.noid and not s.replies, (s.noid, s.replies)
        await close_all(list(subs.values()) + list(pubs.values()))
    run(go())


def test_two_nodes_share_redis(pubsub_herald, make_herald):
    h1 = pubsub_herald
    h2 = make_herald(**PUBSUB_CONFIG)        # same redis-server, other ports
    assert h1.port != h2.port
    ch, n = "chat:nodes", 80

    async def go():
        tok = token_for(h1, sub="u2")        # same secret on both nodes
        subs = {}
        for name, h in (("a", h1), ("b", h2)):
            for slot, c in (await clients_on_workers(h.url, tok)).items():
                subs["%s%d" % (name, slot)] = c
        for s in subs.values():
            r = await s.subscribe(ch)
            assert r["result"]["offset"] == 0, r
        pa = await open_client(h1.url, tok)
        pb = await open_client(h2.url, tok)
        ra, rb = await asyncio.gather(
            publish_burst(pa, ch, [{"node": "a", "i": i} for i in range(n)], per_frame=9),
            publish_burst(pb, ch, [{"node": "b", "i": i} for i in range(n)], per_frame=9))
        assert not set(ra) & set(rb), "both nodes got the same offsets: %r" % (set(ra) & set(rb))
        acked = dict(ra)
        acked.update(rb)
        assert sorted(acked) == list(range(1, 2 * n + 1))
        # an HTTP API publish on node b reaches node a's subscribers too
        st, body = api_request(h2.port, "/api/publish", {"channel": ch, "data": "api"})
        assert st == 200, (st, body)
        acked[body["result"]["offset"]] = "api"
        for name, s in subs.items():
            await s.wait_pubs(ch, 2 * n + 1, timeout=20)
        await asyncio.gather(*(s.drain(0.5) for s in subs.values()))
        for name, s in subs.items():
            check_stream(s.pubs(ch), acked, "subscriber %s" % name)
        await close_all(list(subs.values()) + [pa, pb])
    run(go())


def test_1000_subscribers_get_500_messages_batched(make_herald):
    # one publisher sends the whole burst: no per-connection command rate
    # 1,001 connections from 127.0.0.1: above the default per-IP limit
    h = make_herald(**pubsub_config(limits={"commands_per_second": 0,
                                            "connections_per_ip": 0}))
    nsub, nmsg, ch = 1000, 500, "chat:big"
    # 1,000 client sockets in this process (and as many in herald)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    async def go():
        t0 = time.monotonic()
        tok = token_for(h, sub="many")
        sem = asyncio.Semaphore(50)

        async def one():
            async with sem:
                c = await open_client(h.url, tok, open_timeout=60)
                r = await c.subscribe(ch, timeout=60)
                assert r.get("result", {}).get("offset") == 0, r
                return c
        clients = await asyncio.gather(*(one() for _ in range(nsub)))
        per_worker = collections.Counter(c.worker for c in clients)
        assert set(per_worker) == {0, 1}, per_worker
        t1 = time.monotonic()
        frames_before = [c.frames for c in clients]
        msgs_before = [c.msgs for c in clients]

        pub = await open_client(h.url, tok)
        acked = await publish_burst(pub, ch, [{"i": i, "pad": "x" * (i % 17)} for i in range(nmsg)],
                                    per_frame=50, timeout=60)
        assert sorted(acked) == list(range(1, nmsg + 1))

        # a handful of tasks, each reading its share of the connections
        async def reader(group):
            for c in group:
                await c.wait_pubs(ch, nmsg, timeout=90)
        await asyncio.gather(*(reader(clients[i::8]) for i in range(8)))
        t2 = time.monotonic()
        await asyncio.gather(*(c.drain(0.2) for c in clients[:20]))

        for i, c in enumerate(clients):
            check_stream(c.pubs(ch), acked, "subscriber %d (worker %d)" % (i, c.worker))
            for p in c.pushes:
                assert set(p) == {"channel", "pub"} and set(p["pub"]) == {"offset", "epoch", "data"}, p
        # the burst came batched: fewer frames than messages
        frames = [c.frames - f for c, f in zip(clients, frames_before)]
        msgs = [c.msgs - m for c, m in zip(clients, msgs_before)]
        assert msgs[0] == nmsg, msgs[0]
        assert frames[0] < msgs[0], "subscriber 0 got %d messages in %d frames" % (msgs[0], frames[0])
        assert sum(frames) < sum(msgs) // 2, (sum(frames), sum(msgs))
        print("1000x500: connect+subscribe %.1f s, publish+deliver %.1f s, %d frames for %d messages"
              % (t1 - t0, t2 - t1, sum(frames), sum(msgs)))
        sem2 = asyncio.Semaphore(100)

        async def close(c):
            async with sem2:
                await c.close()
        await asyncio.gather(*(close(c) for c in clients + [pub]))
    run(go())


def test_unsubscribe_stops_delivery(pubsub_herald):
    h = pubsub_herald
    ch = "chat:unsub"

    async def go():
        tok = token_for(h)
        subs = await clients_on_workers(h.url, tok)
        pub = await open_client(h.url, tok)
        for s in subs.values():
            assert "result" in await s.subscribe(ch)
        assert (await pub.publish(ch, "m1"))["result"]["offset"] == 1
        for s in subs.values():
            await s.wait_pubs(ch, 1)
        r = await subs[0].unsubscribe(ch)
        assert r == {"id": r["id"], "result": {}}, r
        # unsubscribing again, or from a channel never subscribed: not an error
        r = await subs[0].unsubscribe(ch)
        assert r.get("result") == {}, r
        r = await subs[0].unsubscribe("chat:never")
        assert r.get("result") == {}, r
        assert (await pub.publish(ch, "m2"))["result"]["offset"] == 2
        await subs[1].wait_pubs(ch, 2)
        await subs[0].drain(0.5)
        assert [p["data"] for p in subs[0].pubs(ch)] == ["m1"], subs[0].pushes
        # subscribing again gives the current offset and only what follows
        r = await subs[0].subscribe(ch)
        assert r["result"]["offset"] == 2, r
        assert (await pub.publish(ch, "m3"))["result"]["offset"] == 3
        await subs[0].wait_pubs(ch, 2)
        await subs[1].wait_pubs(ch, 3)
        await subs[0].drain(0.3)
        assert [(p["offset"], p["data"]) for p in subs[0].pubs(ch)] == [(1, "m1"), (3, "m3")]
        assert [(p["offset"], p["data"]) for p in subs[1].pubs(ch)] == [(1, "m1"), (2, "m2"), (3, "m3")]
        await close_all(list(subs.values()) + [pub])
    run(go())


def test_redis_subscription_follows_local_subscribers(pubsub_herald, redis_server):
    """Each worker holds one Redis subscription per channel while it has a
    local subscriber, and drops it after the last one leaves (unsubscribe
    or disconnect)."""
    h = pubsub_herald
    port = redis_server.port
    key = "herald|acme|chat:r"              # tenant acme, channel chat:r

    def numsub():
        out = redis_cli(port, "PUBSUB", "NUMSUB", key).split()
        assert len(out) == 2 and out[0] == key, out
        return int(out[1])

    def wait_numsub(n, what):
        wait_until(lambda: numsub() == n, 10, what="%s (PUBSUB NUMSUB %s == %d, now %d)"
                   % (what, key, n, numsub()))

    async def go():
        tok = token_for(h, tenant="acme")
        c = await clients_on_workers(h.url, tok)
        c0b = None
        while c0b is None:                  # a second client on worker 0
            x = await open_client(h.url, tok)
            if x.worker == 0:
                c0b = x
            else:
                await x.close()
        assert key not in redis_pubsub_channels(port)
        assert "result" in await c[0].subscribe("chat:r")
        # the result is sent once the subscription is live in Redis
        assert key in redis_pubsub_channels(port), redis_pubsub_channels(port)
        assert numsub() == 1
        assert "result" in await c0b.subscribe("chat:r")
        assert numsub() == 1                # one Redis subscription per worker
        assert "result" in await c[1].subscribe("chat:r")
        assert numsub() == 2
        # first of two local subscribers on worker 0 leaves: worker 0 stays
        assert "result" in await c[0].unsubscribe("chat:r")
        await asyncio.sleep(0.3)
        assert numsub() == 2
        # last local subscriber on worker 1 leaves: worker 1 unsubscribes
        assert "result" in await c[1].unsubscribe("chat:r")
        wait_numsub(1, "worker 1 to unsubscribe")
        assert key in redis_pubsub_channels(port)
        # the last subscriber of the node disconnects
        await c0b.close()
        wait_numsub(0, "worker 0 to unsubscribe after its last subscriber disconnected")
        wait_until(lambda: key not in redis_pubsub_channels(port), 10,
                   what="%s to leave PUBSUB CHANNELS" % key)
        # and it comes back, and delivers, on the next subscribe
        assert "result" in await c[1].subscribe("chat:r")
        assert key in redis_pubsub_channels(port)
        st, body = api_request(h.port, "/api/publish", {"channel": "chat:r", "data": 1, "tenant": "acme"})
        assert st == 200, body
        await c[1].wait_pubs("chat:r", 1)
        await close_all(list(c.values()))
        wait_until(lambda: key not in redis_pubsub_channels(port), 10,
                   what="%s to leave PUBSUB CHANNELS after the disconnect" % key)
    run(go())


def test_subscribe_unsubscribe_churn_in_one_frame(pubsub_herald, redis_server):
    """subscribe/unsubscribe/subscribe in one frame, before Redis answered:
    the first subscribe is cancelled (409), the second is live."""
    h = pubsub_herald
    ch = "chat:churn"

    async def go():
        tok = token_for(h)
        c = await open_client(h.url, tok)
        lines = []
        for i, m in enumerate(("subscribe", "unsubscribe", "subscribe", "unsubscribe", "subscribe")):
            lines.append(json.dumps({"id": 100 + i, "method": m, "params": {"channel": ch}}))
        await c.ws.send("\n".join(lines))
        replies = [await c.reply(100 + i) for i in range(5)]
        assert replies[1].get("result") == {} and replies[3].get("result") == {}, replies
        for r in (replies[0], replies[2]):
            # cancelled by the unsubscribe (or, had it been live already, a result)
            assert r.get("error", {}).get("code") == 409 or "result" in r, replies
        assert "result" in replies[4], replies
        assert "herald||" + ch in redis_pubsub_channels(redis_server.port)
        st, body = api_request(h.port, "/api/publish", {"channel": ch, "data": "x"})
        assert st == 200
        pubs = await c.wait_pubs(ch, 1)
        await c.drain(0.3)
        assert [p["data"] for p in c.pubs(ch)] == ["x"], c.pushes
        assert pubs[0]["offset"] == body["result"]["offset"]
        await c.close()
        wait_until(lambda: "herald||" + ch not in redis_pubsub_channels(redis_server.port), 10,
                   what="the channel to leave PUBSUB CHANNELS")
    run(go())


def test_publish_while_redis_down_is_refused_and_never_delivered(make_herald, redis_server):
    """Redis stops: publishes get 503 (WebSocket and HTTP API), nothing
    refused is ever delivered, herald keeps running; Redis comes back on
    the same port (empty: a new epoch): publishing works again and the
    subscribers that stayed connected get live pushes again (each acked
    publication delivered or covered by a gap push). Two outages: each
    worker's two Redis connections come back in either order."""
    h = make_herald(**pubsub_config(redis={"reconnect_min_ms": 50, "reconnect_max_ms": 400}))
    ch = "chat:down"
    pids = h.worker_pids()

    async def outage(subs, pubs, refused, cycle):
        redis_server.stop()
        for k in range(3):
            for slot, p in pubs.items():
                data = {"n": "down", "c": cycle, "k": k, "w": slot}
                r = await p.publish(ch, data, timeout=15)
                assert r.get("error", {}).get("code") == 503, (
                    "publish while Redis is stopped: expected error 503, got %r" % (r,))
                refused.append(data)
        st, body = api_request(h.port, "/api/publish", {"channel": ch, "data": {"n": "down-api", "c": cycle}})
        assert st == 503 and body["error"]["code"] == 503, (st, body)
        refused.append({"n": "down-api", "c": cycle})
        r = await pubs[1].subscribe("chat:other%d" % cycle)
        assert r.get("error", {}).get("code") == 503, r

        redis_restart_same_port(redis_server)
        # publish until the subscribers get live pushes again; a refusal in
        # the meantime must be a 503 and is never delivered either
        acked = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        k = 0
        while True:
            for slot, p in pubs.items():
                data = {"n": "after", "c": cycle, "k": k, "w": slot}
                k += 1
                r = await p.publish(ch, data, timeout=15)
                if "result" in r:
                    acked[r["result"]["offset"]] = data
                else:
                    assert r["error"]["code"] == 503, r
                    refused.append(data)
            if acked and all(any(p["data"] in acked.values() for p in s.pubs(ch)) for s in subs.values()):
                break
            assert loop.time() < deadline, (
                "outage %d: publications made after Redis came back (%d acked, offsets %d..%d) did not "
                "reach every subscriber within 20 s; Redis PUBSUB NUMSUB %s; pushes per subscriber: %s"
                % (cycle, len(acked), min(acked, default=0), max(acked, default=0),
                   redis_cli(redis_server.port, "PUBSUB", "NUMSUB", "herald||" + ch).split(),
                   {slot: s.pushes[-12:] for slot, s in subs.items()}))
            await asyncio.gather(*(s.drain(0.2) for s in subs.values()))
        return acked

    async def go():
        tok = token_for(h)
        subs = await clients_on_workers(h.url, tok)
        pubs = await clients_on_workers(h.url, tok)
        for s in subs.values():
            assert "result" in await s.subscribe(ch)
        r = await pubs[0].publish(ch, {"n": "before"})
        assert r["result"]["offset"] == 1, r
        for s in subs.values():
            await s.wait_pubs(ch, 1)
        epochs = [subs[0].pubs(ch)[0]["epoch"]]
        refused = []
        for cycle in range(2):
            acked = await outage(subs, pubs, refused, cycle)
            # a client that subscribes now sees only what is published from now on
            fresh = await open_client(h.url, tok)
            r = await fresh.subscribe(ch)
            assert r["result"]["offset"] == max(acked), (r, acked)
            new_epoch = r["result"]["epoch"]
            assert new_epoch not in epochs, "Redis lost the channel: the epoch must change"
            epochs.append(new_epoch)
            last = {"n": "last", "c": cycle}
            r = await pubs[0].publish(ch, last)
            acked[r["result"]["offset"]] = last
            await fresh.wait_pubs(ch, 1)
            for s in subs.values():
                await s.until(lambda s=s: any(p["data"] == last for p in s.pubs(ch)), 10, "the last message")
            await asyncio.gather(*(s.drain(0.3) for s in list(subs.values()) + [fresh]))
            assert [p["data"] for p in fresh.pubs(ch)] == [last], fresh.pushes
            await fresh.close()
            for name, s in subs.items():
                seen = [p["data"] for p in s.pubs(ch)]
                bad = [d for d in seen if d in refused]
                assert not bad, "subscriber %s got publications that were refused: %r" % (name, bad)
                new = [p for p in s.pubs(ch) if p["epoch"] == new_epoch]
                offs = [p["offset"] for p in new]
                assert offs == sorted(set(offs)), "subscriber %s: offsets %r" % (name, offs)
                for p in new:
                    assert acked.get(p["offset"]) == p["data"], (name, p, acked)
                # each acked publication: delivered, or announced in a gap
                gaps = {o for g in s.gaps(ch) if g["epoch"] == new_epoch
                        for o in range(g["from"], g["to"] + 1)}
                missing = set(acked) - set(offs) - gaps
                assert not missing, "subscriber %s: offsets %r neither delivered nor in a gap (%r)" % (
                    name, sorted(missing), s.pushes)
                assert not set(offs) & gaps, (name, s.pushes)
        await close_all(list(subs.values()) + list(pubs.values()))
    run(go())
    assert h.alive() and h.worker_pids() == pids, "herald or a worker died during the Redis outages"


def test_gap_push_covers_what_the_subscriber_missed(make_herald, redis_server):
    """Redis drops herald's subscriber connections (CLIENT KILL TYPE pubsub)
    while publishing goes on through the command connections: every
    subscriber gets each offset either live or inside a gap push, never
    both, never neither."""
    # a slow reconnect (1-2 s) so that the publications surely happen
    # while the subscriber connections are down
    h = make_herald(**pubsub_config(redis={"reconnect_min_ms": 2000, "reconnect_max_ms": 4000}))
    ch, n_before, n_down = "chat:gap", 2, 5

    async def go():
        tok = token_for(h)
        subs = await clients_on_workers(h.url, tok)
        pub = await open_client(h.url, tok)
        for s in subs.values():
            assert "result" in await s.subscribe(ch)
        acked = await publish_burst(pub, ch, ["before%d" % i for i in range(n_before)])
        for s in subs.values():
            await s.wait_pubs(ch, n_before)
        killed = redis_cli(redis_server.port, "CLIENT", "KILL", "TYPE", "pubsub").strip()
        assert killed.isdigit() and int(killed) >= 2, "CLIENT KILL said %r" % killed
        acked.update(await publish_burst(pub, ch, ["down%d" % i for i in range(n_down)]))
        total = n_before + n_down
        assert sorted(acked) == list(range(1, total + 1))

        def covered(s):
            live = [p["offset"] for p in s.pubs(ch)]
            gaps = [o for g in s.gaps(ch) for o in range(g["from"], g["to"] + 1)]
            return live, gaps
        for slot, s in subs.items():
            await s.until(lambda s=s: set(range(1, total + 1)) <= set(sum(covered(s), [])), 20,
                          "offsets 1..%d received or announced as a gap (worker %d)" % (total, slot))
        # live again: a publication now arrives as a push
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not all(any(p["data"] == "probe" for p in s.pubs(ch)) for s in subs.values()):
            assert loop.time() < deadline, "no live delivery after the subscriber reconnected"
            r = await pub.publish(ch, "probe")
            acked[r["result"]["offset"]] = "probe"
            await asyncio.gather(*(s.drain(0.3) for s in subs.values()))
        await asyncio.gather(*(s.drain(0.3) for s in subs.values()))
        last = max(acked)
        for slot, s in subs.items():
            live, gaps = covered(s)
            what = "worker %d: live %r, gaps %r" % (slot, live, s.gaps(ch))
            assert live == sorted(set(live)), what
            assert len(gaps) == len(set(gaps)), what
            assert not set(live) & set(gaps), "offsets both delivered and announced missing: " + what
            assert set(live) | set(gaps) >= set(range(1, last + 1)), what
            assert set(gaps) <= set(range(1, last + 1)), what
            # the reconnect took >= 1 s, the publications a few ms: the
            # missed ones cannot have been delivered live
            assert s.gaps(ch), "no gap push: " + what
            epoch = s.pubs(ch)[0]["epoch"]
            for g in s.gaps(ch):
                assert g["epoch"] == epoch, what
            for p in s.pubs(ch):
                assert p["data"] == acked[p["offset"]], what
        await close_all(list(subs.values()) + [pub])
    run(go())


def test_idempotency_key_across_workers_and_nodes(make_herald):
    """A publish that repeats an idempotency key on the same channel within
    limits.idempotency_window_s, from any worker of any node, over
    WebSocket or HTTP, returns the first publication's offset and publishes
    nothing (issue 17 item 2). Another key, another channel or another
    tenant publishes; after the window the key publishes again."""
    cfg = pubsub_config(limits={"idempotency_window_s": 2})
    h1 = make_herald(**cfg)
    h2 = make_herald(**cfg)                  # same redis-server: another node
    ch = "chat:idem"

    async def go():
        tok = token_for(h1, sub="u-idem")
        sub = await open_client(h1.url, tok)
        assert "result" in await sub.subscribe(ch)
        pubs = {}
        for name, h in (("a", h1), ("b", h2)):
            for slot, c in (await clients_on_workers(h.url, tok)).items():
                pubs["%s%d" % (name, slot)] = c
        first = pubs["a0"]
        r = await first.call("publish", {"channel": ch, "data": "one", "idempotency_key": "k-1"})
        assert r["result"] == {"offset": 1}, r
        # the same key from the other worker and both workers of node b
        for name in ("a1", "b0", "b1"):
            r = await pubs[name].call("publish", {"channel": ch, "data": "again",
                                                 "idempotency_key": "k-1"})
            assert r["result"] == {"offset": 1, "duplicate": True}, (name, r)
        # and over HTTP on both nodes
        for h in (h1, h2):
            st, body = api_request(h.port, "/api/publish",
                                   {"channel": ch, "data": "http", "idempotency_key": "k-1"})
            assert st == 200 and body == {"result": {"offset": 1, "duplicate": True}}, (st, body)
        # another key publishes; so does the same key on another channel
        st, body = api_request(h2.port, "/api/publish",
                               {"channel": ch, "data": "two", "idempotency_key": "k-2"})
        assert st == 200 and body == {"result": {"offset": 2}}, (st, body)
        r = await pubs["b1"].call("publish", {"channel": ch, "data": "dup2", "idempotency_key": "k-2"})
        assert r["result"] == {"offset": 2, "duplicate": True}, r
        r = await first.call("publish", {"channel": "chat:idem-other", "data": "x",
                                         "idempotency_key": "k-1"})
        assert r["result"] == {"offset": 1}, r
        # a key that is not one is refused, nothing published
        for bad in ("", 7, "has space", "k" * 129):
            r = await first.call("publish", {"channel": ch, "data": "bad", "idempotency_key": bad})
            assert r["error"]["code"] == 400, (bad, r)
        await sub.wait_pubs(ch, 2)
        await sub.drain(0.5)
        assert [(p["offset"], p["data"]) for p in sub.pubs(ch)] == [(1, "one"), (2, "two")], sub.pubs(ch)
        # after the window the key is free again
        await asyncio.sleep(2.5)
        r = await pubs["b0"].call("publish", {"channel": ch, "data": "three", "idempotency_key": "k-1"})
        assert r["result"] == {"offset": 3}, r
        await close_all(list(pubs.values()) + [sub])
    run(go())
