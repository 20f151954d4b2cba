"""History and recovery (issue 5): subscribe with recover (success, epoch
mismatch, a hole larger than the history, the recovery cap, namespaces
without history), the race between a full-speed publisher and subscribers
that keep reconnecting with recover, the history method, and new epochs
when Redis loses a channel's history or state.

See docs/protocol.md, "subscribe" (Recovery), "history" and "Pushes".
"""

import asyncio
import json
import os
import random

import pytest
import websockets

import harness

from harness import SUBPROTOCOL, Client, pubsub_config, redis_cli, run, token_for

# hist: history large enough for every test here; tiny: a history of 5;
# nohist: no history at all.
NAMESPACES = {
    "hist": {"publish": True, "history_size": 1000, "history_ttl_s": 600},
    "tiny": {"publish": True, "history_size": 5, "history_ttl_s": 600},
    "nohist": {"publish": True},
}
RECOVERY_CAP = 30

# A valid epoch that herald never draws (it draws 16 hex digits).
FOREIGN_EPOCH = "notTheEpoch0000"


def history_config(**over):
    cfg = dict(namespaces=NAMESPACES, limits={"recovery_max_publications": RECOVERY_CAP})
    cfg.update(over)
    return pubsub_config(**cfg)


@pytest.fixture
def hist_herald(make_herald):
    return make_herald(**history_config())


# --------------------------------------------------------------------------
# helpers (test_redis_failures imports these)

class TClient(Client):
    """A harness Client that also keeps every inbound message (replies and
    pushes) in one arrival-ordered list, so a test can tell whether a push
    came before or after a reply."""

    def __init__(self, ws):
        super().__init__(ws)
        self.timeline = []

    def _dispatch(self, frame):
        super()._dispatch(frame)
        for line in frame.split("\n"):
            if line.strip():
                self.timeline.append(json.loads(line))


async def open_tclient(url, token):
    ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL], open_timeout=20,
                                  close_timeout=5, ping_interval=None,
                                  max_size=64 * 1024 * 1024, max_queue=None)
    c = TClient(ws)
    r = await c.connect(token)
    assert "result" in r, "connect failed: %r" % (r,)
    return c


async def tclients_on_workers(url, token, slots=(0, 1), tries=60):
    """{slot: TClient}, one per wanted worker slot."""
    got, extra = {}, []
    try:
        for _ in range(tries):
            c = await open_tclient(url, token)
            if c.worker in slots and c.worker not in got:
                got[c.worker] = c
            else:
                extra.append(c)
            if len(got) == len(slots):
                return got
        raise AssertionError("no connection reached slots %r in %d tries" % (slots, tries))
    finally:
        for c in extra:
            await c.close()


async def publish_window(client, channel, datas, window=32, timeout=30, check=True):
    """Publish datas on channel keeping up to window commands in flight
    (as fast as the acks come back). Returns {offset: data} of the acked
    ones; with check, every publish must be acked."""
    acked, inflight = {}, []

    async def take():
        cmd_id, data = inflight.pop(0)
        r = await client.reply(cmd_id, timeout)
        if "result" in r:
            off = r["result"]["offset"]
            assert off not in acked, "offset %d acked twice (%r, %r)" % (off, acked[off], data)
            acked[off] = data
        else:
            assert not check, "publish of %r on %s failed: %r" % (data, channel, r)

    for data in datas:
        if len(inflight) >= window:
            await take()
        inflight.append((await client.send("publish", {"channel": channel, "data": data}), data))
    while inflight:
        await take()
    return acked


async def recover(client, channel, offset, epoch, timeout=15):
    """subscribe with recover; returns the result (fails on an error)."""
    r = await client.call("subscribe", {"channel": channel, "recover": True,
                                        "offset": offset, "epoch": epoch}, timeout)
    assert "result" in r, "recover on %s from %r/%r: %r" % (channel, offset, epoch, r)
    return r["result"]


async def subscribed(client, channel):
    r = await client.subscribe(channel)
    assert "result" in r, "subscribe %s: %r" % (channel, r)
    return r["result"]


def assert_pubs(pubs, acked, offsets, what):
    """pubs (dicts with offset and data) are exactly offsets, in order,
    each carrying the data acked for it."""
    got = [p["offset"] for p in pubs]
    assert got == list(offsets), "%s: offsets %r, expected %r" % (what, got, list(offsets))
    for p in pubs:
        assert p["data"] == acked[p["offset"]], (
            "%s: offset %d carried %r, acked with %r" % (what, p["offset"], p["data"], acked[p["offset"]]))


async def close_all(clients):
    await asyncio.gather(*(c.close() for c in clients))


# --------------------------------------------------------------------------
# recovery


def test_recover_success_exactly_the_missed_then_live(hist_herald):
    """Two subscribers (one per worker) remember offset/epoch, disconnect,
    20 publications are made, and they come back with recover: each gets
    recovered: true with exactly those 20, in order, then live pushes with
    no gap and no duplicate. Worker 0 keeps the channel subscribed through
    a witness; worker 1 must subscribe to it again."""
    h = hist_herald
    ch, n_missed = "hist:rec", 20

    async def go():
        tok = token_for(h)
        witness = (await tclients_on_workers(h.url, tok, slots=(0,)))[0]
        first = await tclients_on_workers(h.url, tok)
        pub = await open_tclient(h.url, tok)
        w0 = await subscribed(witness, ch)
        assert w0["offset"] == 0, w0
        epoch = w0["epoch"]
        for c in first.values():
            r = await subscribed(c, ch)
            assert r == {"offset": 0, "epoch": epoch}, r
        acked = await publish_window(pub, ch, [{"a": i} for i in range(3)])
        assert sorted(acked) == [1, 2, 3]
        for slot, c in first.items():
            got = await c.wait_pubs(ch, 3)
            assert_pubs(got, acked, [1, 2, 3], "first session, worker %d" % slot)
            assert {p["epoch"] for p in got} == {epoch}
        await close_all(first.values())

        acked.update(await publish_window(pub, ch, [{"b": i, "text": "ünï \"q\""} for i in range(n_missed)]))
        last = 3 + n_missed
        assert sorted(acked) == list(range(1, last + 1))

        again = await tclients_on_workers(h.url, tok)
        for slot, c in again.items():
            res = await recover(c, ch, 3, epoch)
            what = "recover on worker %d" % slot
            assert res["recovered"] is True, "%s: %r" % (what, res)
            assert res["offset"] == last and res["epoch"] == epoch, "%s: %r" % (what, res)
            assert_pubs(res["publications"], acked, range(4, last + 1), what)
            assert not c.pubs(ch) and not c.gaps(ch), "%s: pushes before any new publish: %r" % (what, c.pushes)

        more = await publish_window(pub, ch, [{"c": i} for i in range(5)])
        acked.update(more)
        for slot, c in again.items():
            got = await c.wait_pubs(ch, 5)
            await c.drain(0.3)
            assert_pubs(c.pubs(ch), acked, range(last + 1, last + 6), "live after recovery, worker %d" % slot)
            assert not c.gaps(ch), c.gaps(ch)
            assert {p["epoch"] for p in got} == {epoch}
        await witness.wait_pubs(ch, last + 5)
        assert_pubs(witness.pubs(ch), acked, range(1, last + 6), "witness")
        await close_all(list(again.values()) + [witness, pub])
    run(go())


def test_recover_epoch_mismatch(hist_herald):
    """recover with an epoch that is not the channel's: recovered false,
    the current offset and epoch, no publications; live from there."""
    h = hist_herald
    ch = "hist:epoch"

    async def go():
        tok = token_for(h)
        pub = await open_tclient(h.url, tok)
        acked = await publish_window(pub, ch, ["x%d" % i for i in range(3)])
        subs = await tclients_on_workers(h.url, tok)
        epoch = None
        for slot, c in subs.items():
            res = await recover(c, ch, 1, FOREIGN_EPOCH)
            what = "worker %d: %r" % (slot, res)
            assert res["recovered"] is False, what
            assert res["offset"] == 3, what
            assert res["epoch"] != FOREIGN_EPOCH and res["epoch"], what
            assert "publications" not in res, what
            epoch = epoch or res["epoch"]
            assert res["epoch"] == epoch, what
        acked.update(await publish_window(pub, ch, ["y"]))
        for slot, c in subs.items():
            await c.wait_pubs(ch, 1)
            await c.drain(0.3)
            assert_pubs(c.pubs(ch), acked, [4], "live after recovered=false, worker %d" % slot)
            assert c.pubs(ch)[0]["epoch"] == epoch
        await close_all(list(subs.values()) + [pub])
    run(go())


def test_recover_hole_larger_than_history(hist_herald):
    """history_size 5: a client that missed 8 is told recovered: false;
    one that missed exactly 5 gets them."""
    h = hist_herald
    ch = "tiny:hole"

    async def go():
        tok = token_for(h)
        pub = await open_tclient(h.url, tok)
        sub = await open_tclient(h.url, tok)
        epoch = (await subscribed(sub, ch))["epoch"]
        acked = await publish_window(pub, ch, ["m%d" % i for i in range(9)])
        assert sorted(acked) == list(range(1, 10))
        await sub.wait_pubs(ch, 9)
        await sub.close()

        c = await open_tclient(h.url, tok)
        res = await recover(c, ch, 1, epoch)      # missed 2..9: 8 > 5
        assert res["recovered"] is False, res
        assert res["offset"] == 9 and res["epoch"] == epoch, res
        assert "publications" not in res, res
        acked.update(await publish_window(pub, ch, ["after"]))
        await c.wait_pubs(ch, 1)
        await c.drain(0.2)
        assert_pubs(c.pubs(ch), acked, [10], "live after recovered=false")

        d = await open_tclient(h.url, tok)
        res = await recover(d, ch, 5, epoch)      # missed 6..10: exactly 5
        assert res["recovered"] is True, res
        assert res["offset"] == 10, res
        assert_pubs(res["publications"], acked, range(6, 11), "recover the last 5 of a history of 5")
        await close_all([pub, c, d])
    run(go())


def test_recover_cap_exceeded(hist_herald):
    """limits.recovery_max_publications = 30: missing 31 is recovered:
    false, missing exactly 30 is recovered: true."""
    h = hist_herald
    ch = "hist:cap"

    async def go():
        tok = token_for(h)
        pub = await open_tclient(h.url, tok)
        sub = await open_tclient(h.url, tok)
        epoch = (await subscribed(sub, ch))["epoch"]
        await sub.close()
        acked = await publish_window(pub, ch, [{"n": i} for i in range(RECOVERY_CAP + 1)])
        last = RECOVERY_CAP + 1

        c = await open_tclient(h.url, tok)
        res = await recover(c, ch, 0, epoch)
        assert res["recovered"] is False, "missed %d with a cap of %d: %r" % (last, RECOVERY_CAP, res)
        assert res["offset"] == last and res["epoch"] == epoch, res
        assert "publications" not in res, res

        d = await open_tclient(h.url, tok)
        res = await recover(d, ch, 1, epoch)
        assert res["recovered"] is True, "missed exactly the cap (%d): %r" % (RECOVERY_CAP, res)
        assert_pubs(res["publications"], acked, range(2, last + 1), "recover exactly the cap")
        await close_all([pub, c, d])
    run(go())


def test_recover_namespace_without_history(hist_herald):
    """No history: recovered: false when something was missed, true with
    an empty list when nothing was."""
    h = hist_herald
    ch = "nohist:rec"

    async def go():
        tok = token_for(h)
        pub = await open_tclient(h.url, tok)
        sub = await open_tclient(h.url, tok)
        r = await subscribed(sub, ch)
        assert r["offset"] == 0, r
        epoch = r["epoch"]
        await sub.close()
        acked = await publish_window(pub, ch, ["p", "q"])

        c = await open_tclient(h.url, tok)
        res = await recover(c, ch, 0, epoch)
        assert res["recovered"] is False, res
        assert res["offset"] == 2 and res["epoch"] == epoch, res
        assert "publications" not in res, res

        d = await open_tclient(h.url, tok)
        res = await recover(d, ch, 2, epoch)
        assert res == {"recovered": True, "offset": 2, "epoch": epoch, "publications": []}, res
        acked.update(await publish_window(pub, ch, ["r"]))
        for who, x in (("after false", c), ("after true", d)):
            await x.wait_pubs(ch, 1)
            await x.drain(0.2)
            assert_pubs(x.pubs(ch), acked, [3], "live " + who)
        await close_all([pub, c, d])
    run(go())


# --------------------------------------------------------------------------
# the race: a full-speed publisher, subscribers reconnecting with recover

RACE_N = 5000           # publications, over two publisher connections
RACE_SUBS = 4


class SubLife:
    """One subscriber's whole life over many connections: the offsets and
    data it got, from recovery replies and live pushes, in order."""

    def __init__(self, name):
        self.name = name
        self.epoch = None
        self.start = None       # offset of the first subscribe result
        self.last = None        # last offset received
        self.stream = []        # (offset, data, "rec"|"live")
        self.sessions = 0
        self.recovered_nonempty = 0
        self.live = 0

    def take(self, offset, data, how, where):
        assert offset == self.last + 1, (
            "%s: got offset %d (%s, %s) after %d: a gap or a duplicate; last 10 of its stream %r"
            % (self.name, offset, how, where, self.last, self.stream[-10:]))
        self.last = offset
        self.stream.append((offset, data, how))


async def race_session(url, tok, ch, life, dwell):
    """One connection: subscribe (recover after the first), take what the
    reply and the pushes carry in arrival order, stay for dwell seconds
    (or, when dwell is a coroutine function, until dwell(client, consume)
    returns), then close."""
    c = await open_tclient(url, tok)
    life.sessions += 1
    try:
        where = "session %d on worker %d" % (life.sessions, c.worker)
        if life.epoch is None:
            sub_id = await c.send("subscribe", {"channel": ch})
        else:
            sub_id = await c.send("subscribe", {"channel": ch, "recover": True,
                                                "offset": life.last, "epoch": life.epoch})
        r = await c.reply(sub_id, 20)
        assert "result" in r, "%s %s: subscribe failed: %r" % (life.name, where, r)
        res = r["result"]
        k = next(i for i, m in enumerate(c.timeline) if m.get("id") == sub_id)
        early = [m for m in c.timeline[:k] if "push" in m]
        assert not early, "%s %s: pushes before the subscribe result: %r" % (life.name, where, early)
        if life.epoch is None:
            life.epoch, life.start, life.last = res["epoch"], res["offset"], res["offset"]
        else:
            assert res.get("recovered") is True, (
                "%s %s: recover from %d failed although history and cap are large: %r"
                % (life.name, where, life.last, res))
            assert res["epoch"] == life.epoch, (life.name, where, res)
            for p in res["publications"]:
                life.take(p["offset"], p["data"], "rec", where)
            assert life.last == res["offset"], (
                "%s %s: publications end at %d, the result says offset %d"
                % (life.name, where, life.last, res["offset"]))
            if res["publications"]:
                life.recovered_nonempty += 1
        seen = k + 1

        def consume():
            nonlocal seen
            for m in c.timeline[seen:]:
                p = m.get("push")
                if p is None:
                    continue
                assert p.get("channel") == ch and "pub" in p, "%s %s: unexpected push %r" % (life.name, where, m)
                assert p["pub"]["epoch"] == life.epoch, (life.name, where, m)
                life.take(p["pub"]["offset"], p["pub"]["data"], "live", where)
                life.live += 1
            seen = len(c.timeline)

        consume()
        if callable(dwell):
            await dwell(c, consume)
        else:
            await c.drain(dwell)
            consume()
    finally:
        await c.close()


def test_recover_race_with_full_speed_publisher(make_herald):
    """Two pipelined publishers publish 5000 publications as fast as the
    acks come back while four subscribers keep disconnecting and
    reconnecting with recover. For each subscriber, what it got from
    recovery replies and live pushes over its whole life is exactly
    1..N, in order, with the published data: no gap, no duplicate, and
    never recovered: false (history and cap are large enough)."""
    big = {"hist": {"publish": True, "history_size": 100000, "history_ttl_s": 600}}
    h = make_herald(**pubsub_config(namespaces=big, limits={"recovery_max_publications": 100000,
                                                               "commands_per_second": 0}))
    ch = "hist:race"

    async def go():
        tok = token_for(h)
        pubs = await tclients_on_workers(h.url, tok)
        lives = [SubLife("subscriber%d" % i) for i in range(RACE_SUBS)]
        for life in lives:     # everyone starts at offset 0
            await race_session(h.url, tok, ch, life, 0)
        assert all(life.start == 0 for life in lives), [l.start for l in lives]
        done = asyncio.Event()
        rnd = random.Random(5)

        async def publisher(slot, c):
            datas = [{"w": slot, "i": i} for i in range(RACE_N // 2)]
            return await publish_window(c, ch, datas, window=32, timeout=30)

        async def churn(life):
            while not done.is_set():
                await race_session(h.url, tok, ch, life, rnd.choice([0, 0, 0.005, 0.01, 0.03, 0.08]))

        churners = [asyncio.ensure_future(churn(life)) for life in lives]
        try:
            results = await asyncio.gather(*(publisher(s, c) for s, c in pubs.items()))
        finally:
            done.set()
        await asyncio.gather(*churners)
        acked = {}
        for r in results:
            for off, data in r.items():
                assert off not in acked, "offset %d acked to both publishers" % off
                acked[off] = data
        assert sorted(acked) == list(range(1, RACE_N + 1)), "acked offsets are not 1..%d" % RACE_N

        # a last session each: recover and stay until the last offset
        for life in lives:
            async def until_end(c, consume, life=life):
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while True:
                    consume()
                    if life.last >= RACE_N:
                        break
                    assert loop.time() < deadline, "%s: stuck at offset %d of %d" % (
                        life.name, life.last, RACE_N)
                    await c.pump(deadline - loop.time())
                await c.drain(0.3)
                consume()
            await race_session(h.url, tok, ch, life, until_end)

        for life in lives:
            offs = [o for o, _, _ in life.stream]
            assert offs == list(range(1, RACE_N + 1)), "%s: stream is not 1..%d" % (life.name, RACE_N)
            bad = [(o, d) for o, d, _ in life.stream if acked[o] != d]
            assert not bad, "%s: data differs from what was acked: %r" % (life.name, bad[:5])
        # the test must have exercised what it claims to
        summary = [(l.name, l.sessions, l.recovered_nonempty, l.live) for l in lives]
        print("race summary (name, sessions, non-empty recoveries, live pushes): %r" % summary)
        assert all(l.sessions >= 5 for l in lives), "too few reconnects: %r" % summary
        assert sum(l.recovered_nonempty for l in lives) >= 4, "recovery never replayed anything: %r" % summary
        assert sum(l.live for l in lives) >= RACE_N // 10, "hardly any live delivery: %r" % summary
        await close_all(pubs.values())
    run(go())


# --------------------------------------------------------------------------
# the history method


def test_history_method(hist_herald):
    h = hist_herald
    ch = "hist:h"

    async def go():
        tok = token_for(h)
        c = await open_tclient(h.url, tok)
        r = await c.call("history", {"channel": ch})
        assert "result" in r, r
        assert r["result"]["offset"] == 0 and r["result"]["publications"] == [], r
        epoch = r["result"]["epoch"]
        datas = [{"i": i, "s": "é%d" % i, "l": [i, None, True]} for i in range(30)]
        acked = await publish_window(c, ch, datas)
        assert sorted(acked) == list(range(1, 31))

        r = await c.call("history", {"channel": ch, "limit": 10})
        res = r["result"]
        assert res["offset"] == 30 and res["epoch"] == epoch, res
        assert_pubs(res["publications"], acked, range(21, 31), "history limit 10")

        res = (await c.call("history", {"channel": ch}))["result"]
        assert_pubs(res["publications"], acked, range(1, 31), "history, default limit")

        res = (await c.call("history", {"channel": ch, "since": {"offset": 25, "epoch": epoch}}))["result"]
        assert res["offset"] == 30, res
        assert_pubs(res["publications"], acked, range(26, 31), "history since 25")

        res = (await c.call("history", {"channel": ch, "limit": 2,
                                        "since": {"offset": 25, "epoch": epoch}}))["result"]
        assert_pubs(res["publications"], acked, [26, 27], "history since 25, limit 2")

        res = (await c.call("history", {"channel": ch, "since": {"offset": 30, "epoch": epoch}}))["result"]
        assert res["publications"] == [], res

        r = await c.call("history", {"channel": ch, "since": {"offset": 3, "epoch": FOREIGN_EPOCH}})
        assert r.get("error", {}).get("code") == 410, "stale epoch: %r" % (r,)

        r = await c.call("history", {"channel": "nohist:h"})
        assert r.get("error", {}).get("code") == 403, "namespace without history: %r" % (r,)

        # a history of 5 keeps the latest 5
        small = await publish_window(c, "tiny:h", ["t%d" % i for i in range(8)])
        res = (await c.call("history", {"channel": "tiny:h"}))["result"]
        assert_pubs(res["publications"], small, range(4, 9), "history of a history_size 5 channel")
        r = await c.call("history", {"channel": "tiny:h", "limit": 6})
        assert len(r["result"]["publications"]) == 5, r
        # the subscribe result agrees with history on offset and epoch
        s = await open_tclient(h.url, tok)
        assert await subscribed(s, ch) == {"offset": 30, "epoch": epoch}
        await close_all([c, s])
    run(go())


def test_history_since_says_what_fell_out(hist_herald):
    """history_size 5, 8 publications, since offset 1: offsets 4-8 come
    back and the reply says that 2-3 are gone (a gap, as the gap push
    words it), never a silent hole; a limit over history_size is capped
    (issue 17 item 5)."""
    h = hist_herald
    ch = "tiny:holes"

    async def go():
        c = await open_tclient(h.url, token_for(h))
        acked = await publish_window(c, ch, ["t%d" % i for i in range(8)])
        res = (await c.call("history", {"channel": ch}))["result"]
        epoch = res["epoch"]
        assert "gap" not in res, res
        res = (await c.call("history", {"channel": ch, "since": {"offset": 1, "epoch": epoch}}))["result"]
        assert_pubs(res["publications"], acked, range(4, 9), "since 1 in a history of 5")
        assert res["gap"] == {"from": 2, "to": 3}, res
        # with a limit the gap is still the part before what is returned
        res = (await c.call("history", {"channel": ch, "limit": 2,
                                        "since": {"offset": 0, "epoch": epoch}}))["result"]
        assert_pubs(res["publications"], acked, [4, 5], "since 0, limit 2")
        assert res["gap"] == {"from": 1, "to": 3}, res
        # nothing fell out after 3 (offset 4 is the oldest kept): no gap
        res = (await c.call("history", {"channel": ch, "since": {"offset": 3, "epoch": epoch}}))["result"]
        assert_pubs(res["publications"], acked, range(4, 9), "since 3")
        assert "gap" not in res, res
        res = (await c.call("history", {"channel": ch, "since": {"offset": 8, "epoch": epoch}}))["result"]
        assert res["publications"] == [] and "gap" not in res, res
        # a limit above history_size is capped, not refused
        r = await c.call("history", {"channel": ch, "limit": 6})
        assert "result" in r, r
        assert_pubs(r["result"]["publications"], acked, range(4, 9), "limit 6 capped to 5")
        r = await c.call("history", {"channel": ch, "limit": 0})
        assert r["error"]["code"] == 400, r
        await close_all([c])
    run(go())


# --------------------------------------------------------------------------
# epochs


def test_new_epoch_when_history_stream_is_deleted(hist_herald, redis_server):
    """Deleting the channel's history stream in Redis gives the channel a
    new epoch: the next publication carries it, subscribe reports it,
    recovery with the old one fails, and history since the old one is 410."""
    h = hist_herald
    ch = "hist:del"

    async def go():
        tok = token_for(h)
        pub = await open_tclient(h.url, tok)
        sub = await open_tclient(h.url, tok)
        e1 = (await subscribed(sub, ch))["epoch"]
        await publish_window(pub, ch, ["a", "b", "c"])
        await sub.wait_pubs(ch, 3)
        key = "{herald||%s}:hist" % ch
        assert redis_cli(redis_server.port, "EXISTS", key).strip() == "1", "no stream at %s" % key
        assert redis_cli(redis_server.port, "DEL", key).strip() == "1"

        r = await pub.publish(ch, "d")
        assert "result" in r, r
        got = await sub.wait_pubs(ch, 4)
        e2 = got[3]["epoch"]
        assert e2 != e1, "the history was lost but the epoch stayed %s" % e1
        assert got[3]["data"] == "d"
        fresh = await open_tclient(h.url, tok)
        res = await subscribed(fresh, ch)
        assert res["epoch"] == e2, res
        c = await open_tclient(h.url, tok)
        res = await recover(c, ch, 2, e1)
        assert res["recovered"] is False and res["epoch"] == e2, res
        r = await c.call("history", {"channel": ch, "since": {"offset": 2, "epoch": e1}})
        assert r.get("error", {}).get("code") == 410, r
        await close_all([pub, sub, fresh, c])
    run(go())


@pytest.mark.parametrize("ch", ["hist:flush", "nohist:flush"])
def test_new_epoch_after_flushall_reaches_connected_subscriber(hist_herald, redis_server, ch):
    """FLUSHALL loses every channel's state: the next publish starts a new
    epoch at offset 1. A subscriber that stays connected must get the new
    epoch's publications (or a gap push for them), never silence; recovery
    with the old epoch is recovered: false."""
    h = hist_herald

    async def go():
        tok = token_for(h)
        pub = await open_tclient(h.url, tok)
        subs = await tclients_on_workers(h.url, tok)
        e1 = None
        for c in subs.values():
            e1 = (await subscribed(c, ch))["epoch"]
        await publish_window(pub, ch, ["a", "b", "c", "d"])
        for c in subs.values():
            await c.wait_pubs(ch, 4)
        assert redis_cli(redis_server.port, "FLUSHALL").strip() == "OK"

        acked = await publish_window(pub, ch, ["n1", "n2"])
        assert sorted(acked) == [1, 2], "after FLUSHALL offsets start again from 1: %r" % acked
        fresh = await open_tclient(h.url, tok)
        e2 = (await subscribed(fresh, ch))["epoch"]
        assert e2 != e1
        for slot, c in subs.items():
            def covered(c=c):
                live = {p["offset"] for p in c.pubs(ch) if p["epoch"] == e2}
                gap = {o for g in c.gaps(ch) if g["epoch"] == e2 for o in range(g["from"], g["to"] + 1)}
                return live | gap
            try:
                await c.until(lambda: covered() >= {1, 2}, 5, "offsets 1, 2 of the new epoch")
            except AssertionError:
                raise AssertionError(
                    "worker %d: after FLUSHALL the connected subscriber got neither the new epoch's "
                    "publications 1..2 (acked %r) nor a gap push; its pushes: %r"
                    % (slot, acked, c.pushes)) from None
            new = [p for p in c.pubs(ch) if p["epoch"] == e2]
            assert [p["offset"] for p in new] == sorted({p["offset"] for p in new}), new
        c = await open_tclient(h.url, tok)
        res = await recover(c, ch, 4, e1)
        assert res["recovered"] is False and res["epoch"] == e2, res
        await close_all(list(subs.values()) + [pub, fresh, c])
    run(go())


def test_new_epoch_when_meta_is_deleted_but_stream_survives(hist_herald, redis_server):
    """The meta hash can go while the stream stays (a volatile-* eviction
    policy picks keys one by one, or a DEL): the new epoch must start from
    an empty stream. Before, the new epoch numbered from 1 over the old
    stream: XADD refused every publish until the offset passed the old top
    id, and history/recovery served old-epoch entries under the new epoch."""
    h = hist_herald
    ch = "hist:meta"

    async def go():
        tok = token_for(h)
        pub = await open_tclient(h.url, tok)
        old = await publish_window(pub, ch, ["a", "b", "c", "d", "e"])
        assert sorted(old) == [1, 2, 3, 4, 5]
        e1 = (await pub.call("history", {"channel": ch}))["result"]["epoch"]
        meta = "{herald||%s}:meta" % ch
        assert redis_cli(redis_server.port, "DEL", meta).strip() == "1", "no meta hash at %s" % meta

        r = await pub.publish(ch, "n1")
        assert "result" in r, "the first publish of the new epoch failed: %r" % (r,)
        assert r["result"]["offset"] == 1, r
        r = await pub.publish(ch, "n2")
        assert "result" in r and r["result"]["offset"] == 2, r

        res = (await pub.call("history", {"channel": ch}))["result"]
        e2 = res["epoch"]
        assert e2 != e1
        assert res["offset"] == 2, res
        assert [(p["offset"], p["data"]) for p in res["publications"]] == [(1, "n1"), (2, "n2")], res

        c = await open_tclient(h.url, tok)
        rec = await recover(c, ch, 0, e2)
        assert rec["recovered"] is True and rec["epoch"] == e2, rec
        assert [(p["offset"], p["data"]) for p in rec["publications"]] == [(1, "n1"), (2, "n2")], rec
        c2 = await open_tclient(h.url, tok)
        rec = await recover(c2, ch, 3, e1)
        assert rec["recovered"] is False and rec["epoch"] == e2, rec
        await close_all([pub, c, c2])
    run(go())


def test_recover_reply_matched_by_subscription_not_id(hist_herald):
    """Recovery replies are matched to the subscription, not to the
    command id alone (issue 16 item 6): subscribe A with recover (id 5),
    unsubscribe A, subscribe B with recover reusing id 5, all before Redis
    answers. The one reply for id 5 must be B's, and B's later
    publications must arrive. Before, A's recovery (its offset, epoch and
    publications) was applied to B, whose pushes up to A's offset were
    then dropped."""
    h = hist_herald
    a, b = "hist:idA", "hist:idB"

    async def go():
        tok = token_for(h)
        pub = await open_tclient(h.url, tok)
        acked_a = await publish_window(pub, a, ["a%d" % i for i in range(10)])
        acked_b = await publish_window(pub, b, ["b%d" % i for i in range(3)])
        ea = (await pub.call("history", {"channel": a, "limit": 1}))["result"]["epoch"]
        eb = (await pub.call("history", {"channel": b, "limit": 1}))["result"]["epoch"]
        assert ea != eb

        ws = await websockets.connect(h.url, subprotocols=[SUBPROTOCOL], open_timeout=20,
                                      close_timeout=5, ping_interval=None)
        await ws.send(json.dumps({"id": 1, "method": "connect", "params": {"token": tok}}))
        info = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert "result" in info, info
        # a witness keeps A live on this worker, so A's recovery read goes
        # out at once, while B must first be subscribed on Redis
        slot = info["result"]["worker"]
        witness = (await tclients_on_workers(h.url, tok, slots=(slot,)))[slot]
        await subscribed(witness, a)
        await ws.send("\n".join(json.dumps(m) for m in (
            {"id": 5, "method": "subscribe", "params": {"channel": a, "recover": True, "offset": 0, "epoch": ea}},
            {"id": 6, "method": "unsubscribe", "params": {"channel": a}},
            {"id": 5, "method": "subscribe", "params": {"channel": b, "recover": True, "offset": 1, "epoch": eb}},
        )))
        msgs = []

        async def until(pred, what):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not pred():
                left = deadline - loop.time()
                assert left > 0, "timed out waiting for %s: %r" % (what, msgs)
                try:
                    frame = await asyncio.wait_for(ws.recv(), left)
                except asyncio.TimeoutError:
                    continue
                msgs.extend(json.loads(line) for line in frame.split("\n") if line.strip())

        def results5():
            return [m for m in msgs if m.get("id") == 5 and "result" in m]
        await until(lambda: results5() and any(m.get("id") == 6 for m in msgs), "the replies")
        await asyncio.sleep(0.3)
        await until(lambda: True, "more")
        r5 = results5()
        assert len(r5) == 1, "replies for id 5: %r" % msgs
        res = r5[0]["result"]
        assert res["epoch"] == eb and res["offset"] == 3 and res["recovered"] is True, \
            "the reply for id 5 is not channel B's recovery: %r" % res
        assert [(p["offset"], p["data"]) for p in res["publications"]] == [(2, "b1"), (3, "b2")], res

        r = await pub.publish(b, "b-live")
        assert r["result"]["offset"] == 4, r
        await until(lambda: any(m.get("push", {}).get("channel") == b for m in msgs), "B's push")
        pushes = [m["push"] for m in msgs if "push" in m]
        assert [p["pub"]["offset"] for p in pushes if p.get("channel") == b and "pub" in p] == [4], pushes
        assert not [p for p in pushes if p.get("channel") == a], pushes
        await ws.close()
        await close_all([pub, witness])
        assert sorted(acked_a) == list(range(1, 11)) and sorted(acked_b) == [1, 2, 3]
    run(go())


def vm_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for %d" % (field, pid))


def test_large_replies_count_against_the_queue_cap(make_herald, monkeypatch):
    """History (and recovery) replies count against
    limits.outbound_queue_bytes like pushes (issue 16 item 1): a client
    that stops reading and keeps asking for 100 x 60 KB of history is
    closed as a slow consumer (4000), and its worker's memory (peak RSS
    from /proc) grows by no more than the cap plus one reply (plus the
    transient copies of building that reply). Before, every history reply
    was queued whatever the queue held: 25 requests held ~150 MB."""
    # Under ASan freed memory sits in a quarantine (256 MB by default) and
    # RSS grows with every free: turn it off so RSS means something there
    # too (a no-op for the normal build).
    opts = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1:halt_on_error=1")
    monkeypatch.setenv("ASAN_OPTIONS", opts + ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
    cap = 1 << 20
    ns = {"big": {"publish": True, "history_size": 100, "history_ttl_s": 600}}
    h = make_herald(**history_config(namespaces=ns, workers=1,
                                     redis={"command_timeout_ms": 60000},
                                     limits={"outbound_queue_bytes": cap,
                                             "commands_per_second": 1000,
                                             "commands_burst": 1000}))
    ch = "big:h"
    item = "x" * 60000
    one_reply = 100 * 60000

    async def go():
        tok = token_for(h)
        pub = await open_tclient(h.url, tok)
        await publish_window(pub, ch, [item] * 100, window=16)
        await close_all([pub])

    run(go())
    (pid,) = h.worker_pids().values()
    from test_hostile import RawWS
    ws = RawWS.open(h.port, rcvbuf=4096)
    r = ws.call(1, "connect", {"token": token_for(h)})
    assert "result" in r, r
    hwm0 = vm_kb(pid, "VmHWM")
    # never read again; 25 requests for the whole history
    ws.send_frame(1, "\n".join(json.dumps({"id": 10 + i, "method": "history",
                                           "params": {"channel": ch, "limit": 100}})
                               for i in range(25)))
    # not reading, the client may never see the close frame: the server's
    # count of 4000 closes says it was closed as a slow consumer
    from test_hostile import metric_sum
    try:
        harness.wait_until(lambda: metric_sum(h, "herald_disconnects_total", code="4000") == 1,
                           30, interval=0.2, what='herald_disconnects_total{code="4000"}')
    except AssertionError:
        raise AssertionError("not closed as a slow consumer; worker peak RSS grew by %.1f MB"
                             % ((vm_kb(pid, "VmHWM") - hwm0) / 1e3)) from None
    grown = (vm_kb(pid, "VmHWM") - hwm0) * 1024
    # cap + one reply queued, and what building that one reply holds for
    # a moment: hiredis' input buffer and its parsed reply, and the text
    # the queued message is copied from (before, it grew without bound)
    bound = cap + one_reply + 3 * one_reply
    assert grown <= bound, "worker peak RSS grew by %.1f MB (bound %.1f MB)" % (
        grown / 1e6, bound / 1e6)
    ws.close()


def test_large_recoveries_count_against_the_queue_cap(make_herald):
    """The same for recovery replies: a client that does not read and
    subscribes with recover to channels of 100 x 60 KB each gets the first
    recovery queued past the cap, and is closed as a slow consumer (4000)
    at the next one instead of queueing them all."""
    ns = {"big": {"publish": True, "history_size": 100, "history_ttl_s": 600}}
    h = make_herald(**history_config(namespaces=ns, workers=1,
                                     redis={"command_timeout_ms": 60000},
                                     limits={"outbound_queue_bytes": 1 << 20,
                                             "recovery_max_publications": 100,
                                             "commands_per_second": 1000,
                                             "commands_burst": 1000}))
    chans = ["big:r%d" % i for i in range(3)]
    epochs = {}

    async def go():
        tok = token_for(h)
        pub = await open_tclient(h.url, tok)
        for ch in chans:
            await publish_window(pub, ch, ["y" * 60000] * 100, window=16)
            epochs[ch] = (await pub.call("history", {"channel": ch, "limit": 1}))["result"]["epoch"]
        await close_all([pub])

    run(go())
    from test_hostile import RawWS, metric_sum
    ws = RawWS.open(h.port, rcvbuf=4096)
    assert "result" in ws.call(1, "connect", {"token": token_for(h)})
    ws.send_frame(1, "\n".join(json.dumps({"id": 10 + i, "method": "subscribe",
                                           "params": {"channel": ch, "recover": True,
                                                      "offset": 0, "epoch": epochs[ch]}})
                               for i, ch in enumerate(chans)))
    harness.wait_until(lambda: metric_sum(h, "herald_disconnects_total", code="4000") == 1,
                       30, interval=0.2, what='herald_disconnects_total{code="4000"}')
    ws.close()
