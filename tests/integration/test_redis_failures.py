"""Redis failures (issue 5): redis-server stopped and restarted empty while
publishers and subscribers run, the subscriber connections killed with
CLIENT KILL TYPE pubsub, and a stopped worker whose subscriber connection
Redis drops for passing the pub/sub output-buffer limit.

What must hold (docs/protocol.md "Pushes", docs/metrics.md "/health"):
every publish gets an ack or an error; a subscriber that stays connected
gets every acknowledged publication once, in order, or a gap push that
names it (or, when the epoch changed, a gap push of the new epoch); on
channels with history the worker fills the hole itself from history.
"""

import asyncio
import json
import os
import signal

from harness import (SLACK, admin_request, api_request, parse_metrics,
                     pubsub_config, redis_cli, redis_pubsub_channels,
                     redis_restart_same_port, run, token_for)
from test_history import (close_all, open_tclient, publish_window, subscribed,
                          tclients_on_workers)

NAMESPACES = {
    "hist": {"publish": True, "history_size": 100000, "history_ttl_s": 600},
    "nohist": {"publish": True},
}


def failure_config(**over):
    base = dict(namespaces=NAMESPACES,
                limits={"commands_per_second": 0, "recovery_max_publications": 100000})
    base.update(over)
    return pubsub_config(**base)


# --------------------------------------------------------------------------
# helpers

def health(h):
    """(HTTP status, parsed body) of GET /health."""
    status, _, body = admin_request(h.admin_port, "/health", timeout=5)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def reconnects(h):
    """{worker: herald_redis_reconnects_total}."""
    status, _, body = admin_request(h.admin_port, "/metrics", timeout=5)
    assert status == 200, (status, body[:200])
    _, samples = parse_metrics(body)
    out = {}
    for (name, labels), v in samples.items():
        if name == "herald_redis_reconnects_total":
            d = dict(labels)
            out[int(d["worker"])] = out.get(int(d["worker"]), 0) + v
    return out


def pubsub_clients(port):
    """How many pub/sub connections Redis has."""
    return len([l for l in redis_cli(port, "CLIENT", "LIST", "TYPE", "pubsub").splitlines() if l.strip()])


async def reader(c, stop):
    """Keep reading c until stop is set (so its queue never backs up)."""
    while not stop.is_set():
        await c.pump(0.05)


def events(c, ch):
    """The pubs and gaps pushed on ch, in arrival order: ("pub", epoch,
    offset, data) and ("gap", epoch, from, to)."""
    out = []
    for p in c.pushes:
        if p.get("channel") != ch:
            continue
        if "pub" in p:
            out.append(("pub", p["pub"]["epoch"], p["pub"]["offset"], p["pub"]["data"]))
        elif "gap" in p:
            out.append(("gap", p["gap"]["epoch"], p["gap"]["from"], p["gap"]["to"]))
        else:
            raise AssertionError("push on %s is neither pub nor gap: %r" % (ch, p))
    return out


def summarize(evs):
    """evs with runs of consecutive pubs folded into ranges, for messages."""
    out, run_ = [], None
    for ev in evs:
        if ev[0] == "pub" and run_ and run_[1] == ev[1] and run_[3] == ev[2] - 1:
            run_[3] = ev[2]
            continue
        if run_:
            out.append("pub %s %d..%d" % (run_[1], run_[2], run_[3]))
            run_ = None
        if ev[0] == "pub":
            run_ = ["pub", ev[1], ev[2], ev[2]]
        else:
            out.append("GAP %s %d..%d" % (ev[1], ev[2], ev[3]))
    if run_:
        out.append("pub %s %d..%d" % (run_[1], run_[2], run_[3]))
    return ", ".join(out)


def check_order(evs, what):
    """Within an epoch every pub and gap comes after what came before it
    (no duplicate, nothing out of order, no overlap of a gap with a
    delivered offset); once an epoch is left it never comes back."""
    cursor, order = {}, []
    for ev in evs:
        kind, epoch = ev[0], ev[1]
        lo, hi = (ev[2], ev[2]) if kind == "pub" else (ev[2], ev[3])
        # a gap into a NEW epoch may be (1, 0): "the old numbering is gone,
        # nothing of the new one was missed" (docs/protocol.md, gap push)
        empty_restart = (kind == "gap" and lo == 1 and hi == 0
                         and order and order[-1] != epoch)
        assert (lo <= hi and lo >= 1) or empty_restart, "%s: bad %r" % (what, ev)
        if empty_restart:
            order.append(epoch)
            cursor[epoch] = 0
            continue
        if not order or order[-1] != epoch:
            assert epoch not in order, "%s: epoch %s came back after %s: %r" % (what, epoch, order[-1], evs)
            order.append(epoch)
        assert lo > cursor.get(epoch, 0), (
            "%s: %r is not after offset %d of epoch %s (duplicate or out of order); all: %r"
            % (what, ev, cursor.get(epoch, 0), epoch, evs))
        cursor[epoch] = hi
    return cursor


def check_coverage(evs, acked, what, strict_epochs=()):
    """Every acked (epoch, offset) was delivered (with its data) or named by
    a gap push of that epoch. For an epoch not in strict_epochs, an offset
    past the last one delivered may instead be covered by a later gap push
    of another epoch (the epoch changed: "everything since is lost").
    Returns (delivered, gapped) sets of (epoch, offset)."""
    delivered = {(e, o): d for k, e, o, d in ((x[0], x[1], x[2], x[3]) for x in evs) if k == "pub"}
    gapped = set()
    for ev in evs:
        if ev[0] == "gap":
            gapped.update((ev[1], o) for o in range(ev[2], ev[3] + 1))
    missing = []
    for (e, o), data in sorted(acked.items()):
        if (e, o) in delivered:
            assert delivered[(e, o)] == data, "%s: %s/%d carried %r, acked %r" % (what, e, o, delivered[(e, o)], data)
            continue
        if (e, o) in gapped:
            continue
        if e not in strict_epochs:
            pos = [i for i, x in enumerate(evs) if x[1] == e]
            last = pos[-1] if pos else -1
            last_off = max([x[2] for x in evs if x[1] == e and x[0] == "pub"], default=0)
            if o > last_off and any(x[0] == "gap" and x[1] != e for x in evs[last + 1:]):
                continue
        missing.append((e, o))
    if missing:
        spans, lo = [], None
        for i, (e, o) in enumerate(missing):
            if lo is None:
                lo = (e, o)
            nxt = missing[i + 1] if i + 1 < len(missing) else None
            if nxt != (e, o + 1):
                spans.append("%s %d..%d" % (e, lo[1], o))
                lo = None
        raise AssertionError("%s: acked but neither delivered nor announced by a gap push: %s\n"
                             "what it got: %s" % (what, ", ".join(spans), summarize(evs)))
    return delivered, gapped


async def clients_on_slot(url, tok, slot, n, tries=80):
    """n TClients on worker slot."""
    got, extra = [], []
    try:
        for _ in range(tries):
            c = await open_tclient(url, tok)
            (got if c.worker == slot and len(got) < n else extra).append(c)
            if len(got) == n:
                return got
        raise AssertionError("could not get %d connections on worker %d" % (n, slot))
    finally:
        for c in extra:
            await c.close()


# --------------------------------------------------------------------------


def test_redis_restart_while_publishing_and_subscribing(make_herald, redis_server):
    """redis-server stops for 5 s and comes back empty on the same port
    while two publishers (one per worker) publish on a channel with
    history and one without, and subscribers on both workers stay
    connected. /health is 503 within 2 s of the stop and 200 within 5 s
    of the restart; every publish gets an ack or an error (503 while Redis
    is down); each subscriber gets every acked publication once, in order
    per epoch, or a gap push for it; the channels get a new epoch."""
    # A reconnect ceiling of 2 s: with the default of 5 s a worker may
    # still be sleeping in its backoff 5 s after the restart.
    h = make_herald(**failure_config(redis={"reconnect_min_ms": 100, "reconnect_max_ms": 2000}))
    chans = ["hist:rr", "nohist:rr"]
    pids = h.worker_pids()

    async def go():
        loop = asyncio.get_running_loop()
        tok = token_for(h)
        subs = await tclients_on_workers(h.url, tok)
        pubs = await tclients_on_workers(h.url, tok)
        e1 = {}
        for c in subs.values():
            for ch in chans:
                e1[ch] = (await subscribed(c, ch))["epoch"]
        stop_read = asyncio.Event()
        readers = [asyncio.ensure_future(reader(c, stop_read)) for c in subs.values()]
        stop_pub = asyncio.Event()
        log = []        # (t_sent, channel, data, reply)
        marks = {}

        async def publisher(slot, c):
            k = 0
            while not stop_pub.is_set():
                for ch in chans:
                    data = {"w": slot, "k": k}
                    t = loop.time()
                    try:
                        r = await c.publish(ch, data, timeout=15)
                    except AssertionError:
                        raise AssertionError("publish %r on %s (worker %d) got no reply within 15 s"
                                             % (data, ch, slot)) from None
                    log.append((t, ch, data, r))
                k += 1
                await asyncio.sleep(0.01)

        pub_tasks = [asyncio.ensure_future(publisher(s, c)) for s, c in pubs.items()]
        try:
            await asyncio.sleep(1.0)
            st, body = await asyncio.to_thread(health, h)
            assert st == 200, "health before the outage: %d %r" % (st, body)

            marks["stop"] = loop.time()
            await asyncio.to_thread(redis_server.stop)
            marks["stopped"] = loop.time()
            while True:
                st, body = await asyncio.to_thread(health, h)
                if st == 503:
                    break
                assert loop.time() - marks["stop"] < 2.0 * SLACK, (
                    "/health still %d %r %.1f s after redis-server was stopped"
                    % (st, body, loop.time() - marks["stop"]))
                await asyncio.sleep(0.05)
            degraded_after = loop.time() - marks["stop"]
            assert body.get("status") == "degraded", body
            assert not all(r["up"] for r in body["redis"]), body
            assert degraded_after <= 2.0, "/health degraded only %.2f s after the stop" % degraded_after

            await asyncio.sleep(max(0.0, marks["stop"] + 5.0 - loop.time()))
            marks["restart"] = loop.time()
            await asyncio.to_thread(redis_restart_same_port, redis_server)
            marks["restarted"] = loop.time()
            while True:
                st, body = await asyncio.to_thread(health, h)
                if st == 200:
                    break
                assert loop.time() - marks["restart"] < 5.0 * SLACK, (
                    "/health still %d %r %.1f s after redis-server was restarted"
                    % (st, body, loop.time() - marks["restart"]))
                await asyncio.sleep(0.05)
            ok_after = loop.time() - marks["restart"]
            assert body.get("status") == "ok", body
            assert ok_after <= 5.0, "/health ok only %.2f s after the restart" % ok_after
            await asyncio.sleep(1.5)
        finally:
            stop_pub.set()
            await asyncio.gather(*pub_tasks, return_exceptions=True)
        for t in pub_tasks:
            t.result()      # a publisher's failure is the test's

        # the epochs now, from a fresh subscriber
        fresh = await open_tclient(h.url, tok)
        e2 = {ch: (await subscribed(fresh, ch))["epoch"] for ch in chans}
        for ch in chans:
            assert e2[ch] != e1[ch], "%s: Redis restarted empty but the epoch stayed %s" % (ch, e1[ch])

        # acks: made on the old Redis when sent before the restart began,
        # on the new one otherwise; nothing is acked while Redis is down
        acked = {ch: {} for ch in chans}
        errors = []
        for t, ch, data, r in log:
            if "result" in r:
                assert not (marks["stopped"] < t < marks["restart"]), (
                    "publish %r on %s sent while redis-server was down was acked: %r" % (data, ch, r))
                epoch = e1[ch] if t < marks["restart"] else e2[ch]
                key = (epoch, r["result"]["offset"])
                assert key not in acked[ch], "%s: %r acked twice" % (ch, key)
                acked[ch][key] = data
            else:
                assert r["error"]["code"] == 503, "publish %r on %s: %r" % (data, ch, r)
                errors.append((t, ch, data))
        down = [e for e in errors if marks["stopped"] < e[0] < marks["restart"]]
        assert down, "no publish was refused while redis-server was down"
        for ch in chans:
            new = sorted(o for (e, o) in acked[ch] if e == e2[ch])
            assert new and new == list(range(1, len(new) + 1)), (
                "%s: offsets acked after the restart are not 1..n: %r" % (ch, new))
            old = sorted(o for (e, o) in acked[ch] if e == e1[ch])
            assert old == list(range(1, len(old) + 1)), "%s: offsets before the stop %r" % (ch, old)

        # every subscriber reaches the last acked offset of the new epoch
        stop_read.set()
        await asyncio.gather(*readers)
        last = {ch: max(o for (e, o) in acked[ch] if e == e2[ch]) for ch in chans}

        def reached(c, ch):
            return any(ev[1] == e2[ch] and (ev[2] if ev[0] == "pub" else ev[3]) >= last[ch]
                       for ev in events(c, ch))

        async def catch_up(c):
            try:
                await c.until(lambda: all(reached(c, ch) for ch in chans), 15, "the last offsets")
            except AssertionError:
                pass
            await c.drain(0.3)
        await asyncio.gather(*(catch_up(c) for c in subs.values()))
        stuck = ["worker %d, %s: never reached offset %d of the new epoch %s (old %s); its pushes: %s"
                 % (slot, ch, last[ch], e2[ch], e1[ch], summarize(events(c, ch)))
                 for slot, c in subs.items() for ch in chans if not reached(c, ch)]
        assert not stuck, "\n".join(stuck)

        known = {}
        for t, ch, data, r in log:
            known.setdefault(ch, []).append(data)
        for slot, c in subs.items():
            for ch in chans:
                what = "worker %d, %s" % (slot, ch)
                evs = events(c, ch)
                check_order(evs, what)
                delivered, gapped = check_coverage(evs, acked[ch], what, strict_epochs=(e2[ch],))
                for (e, o), d in delivered.items():
                    assert e in (e1[ch], e2[ch]), "%s: unknown epoch %s" % (what, e)
                    assert d in known[ch], "%s: delivered %r that nobody published" % (what, d)
                # the outage happened with traffic on both sides: what was
                # made on the new Redis before the worker subscribed again
                # is covered by a gap push of the new epoch, or delivered
                assert any(ev[1] == e2[ch] for ev in evs), what
        await close_all(list(subs.values()) + list(pubs.values()) + [fresh])
    run(go())
    assert h.alive() and h.worker_pids() == pids, "herald or a worker died during the Redis outage"


def test_client_kill_pubsub_recovers_from_history_or_gap(make_herald, redis_server):
    """CLIENT KILL TYPE pubsub drops every worker's subscriber connection
    while the command connections stay up; publications made through the
    HTTP API meanwhile reach the history channel's subscribers from
    history (in order, no gap push) and the other channel's subscribers
    as a gap push. Both workers resubscribe and deliver within 5 s and
    count the reconnect in herald_redis_reconnects_total."""
    # the subscriber reconnects after 0.5-1 s: the API publishes below
    # (a few ms) surely fall into the outage
    h = make_herald(**failure_config(redis={"reconnect_min_ms": 1000, "reconnect_max_ms": 2000}))
    hch, nch = "hist:ck", "nohist:ck"
    n_down = 6

    async def go():
        loop = asyncio.get_running_loop()
        tok = token_for(h)
        subs = await tclients_on_workers(h.url, tok)
        for c in subs.values():
            for ch in (hch, nch):
                assert (await subscribed(c, ch))["offset"] == 0
        acked = {hch: {}, nch: {}}

        def api_pub(ch, data):
            st, body = api_request(h.port, "/api/publish", {"channel": ch, "data": data})
            assert st == 200, "API publish %r on %s: %d %r" % (data, ch, st, body)
            off = body["result"]["offset"]
            assert off not in acked[ch]
            acked[ch][off] = data

        for i in range(3):
            for ch in (hch, nch):
                await asyncio.to_thread(api_pub, ch, "before%d" % i)
        for c in subs.values():
            for ch in (hch, nch):
                await c.wait_pubs(ch, 3)
        before = await asyncio.to_thread(reconnects, h)
        assert set(before) >= {0, 1}, before

        t_kill = loop.time()
        killed = redis_cli(redis_server.port, "CLIENT", "KILL", "TYPE", "pubsub").strip()
        assert killed.isdigit() and int(killed) >= 2, "CLIENT KILL said %r" % killed
        for i in range(n_down):
            for ch in (hch, nch):
                await asyncio.to_thread(api_pub, ch, "down%d" % i)
        during = await asyncio.to_thread(reconnects, h)
        assert during == before, (
            "a worker reconnected before the publications were made (%r -> %r): "
            "the test could not tell recovery from live delivery" % (before, during))

        # resubscribed and delivering: a probe published now arrives live
        k = 0
        while True:
            got = all(any(p["data"] == "probe%d" % j for j in range(k) for p in c.pubs(ch))
                      for c in subs.values() for ch in (hch, nch))
            if got:
                break
            assert loop.time() - t_kill < 5.0 * SLACK, (
                "no live delivery %.1f s after CLIENT KILL" % (loop.time() - t_kill))
            for ch in (hch, nch):
                await asyncio.to_thread(api_pub, ch, "probe%d" % k)
            k += 1
            await asyncio.gather(*(c.drain(0.1) for c in subs.values()))
        live_after = loop.time() - t_kill
        assert live_after <= 5.0, "live delivery only %.2f s after CLIENT KILL" % live_after
        after = await asyncio.to_thread(reconnects, h)
        for w in (0, 1):
            assert after.get(w, 0) >= before[w] + 1, (
                "herald_redis_reconnects_total{worker=%d}: %r -> %r" % (w, before, after))
        await asyncio.gather(*(c.drain(0.3) for c in subs.values()))
        assert "herald||" + hch in redis_pubsub_channels(redis_server.port)

        for slot, c in subs.items():
            # history: the worker refilled the hole itself
            what = "worker %d, %s" % (slot, hch)
            assert not c.gaps(hch), "%s: gap push on a channel with history: %r" % (what, c.gaps(hch))
            offs = [p["offset"] for p in c.pubs(hch)]
            assert offs == sorted(acked[hch]), "%s: offsets %r, acked %r" % (what, offs, sorted(acked[hch]))
            for p in c.pubs(hch):
                assert p["data"] == acked[hch][p["offset"]], (what, p)
            # no history: a gap push names what could not be delivered
            what = "worker %d, %s" % (slot, nch)
            evs = events(c, nch)
            check_order(evs, what)
            epoch = evs[0][1]
            check_coverage(evs, {(epoch, o): d for o, d in acked[nch].items()}, what, strict_epochs=(epoch,))
            gapped = {o for ev in evs if ev[0] == "gap" for o in range(ev[2], ev[3] + 1)}
            down_offs = {o for o, d in acked[nch].items() if str(d).startswith("down")}
            delivered = {ev[2] for ev in evs if ev[0] == "pub"}
            assert down_offs <= gapped | delivered, what
            assert down_offs & gapped, (
                "%s: the publications made while the subscriber was down were not announced "
                "by a gap push: %r" % (what, evs))
        await close_all(subs.values())
    run(go())


def test_stopped_worker_dropped_by_redis_output_limit(make_herald, redis_server):
    """Worker 0 is stopped (SIGSTOP) while its channels are flooded through
    worker 1 until Redis drops worker 0's subscriber connection for passing
    client-output-buffer-limit pubsub 64kb. After SIGCONT it reconnects
    (herald_redis_reconnects_total grows), its subscriber on the channel
    with history gets every publication once and in order, and its
    subscriber on the channel without history gets a gap push for what
    was lost. Worker 1's subscriber gets everything."""
    # catching up means pushing megabytes at once to the stopped worker's
    # subscribers: the outbound queue limit is not what this test is about
    h = make_herald(**failure_config(limits={"commands_per_second": 0,
                                             "recovery_max_publications": 100000,
                                             "outbound_queue_bytes": 256 * 1024 * 1024}))
    hch, nch = "hist:flood", "nohist:flood"
    pids = h.worker_pids()
    stopped = pids[0]
    assert redis_cli(redis_server.port, "CONFIG", "SET", "client-output-buffer-limit",
                     "pubsub 64kb 32kb 1").strip() == "OK"
    filler = "f" * 1000

    async def go():
        loop = asyncio.get_running_loop()
        tok = token_for(h)
        sx_h, sx_n = await clients_on_slot(h.url, tok, 0, 2)
        sy = (await clients_on_slot(h.url, tok, 1, 1))[0]
        pubs = await clients_on_slot(h.url, tok, 1, 2)
        await subscribed(sx_h, hch)
        await subscribed(sx_n, nch)
        for ch in (hch, nch):
            await subscribed(sy, ch)
        acked = {hch: {}, nch: {}}
        for ch in (hch, nch):
            acked[ch].update(await publish_window(pubs[0], ch, ["warm%d" % i for i in range(2)]))
        for c, ch in ((sx_h, hch), (sx_n, nch), (sy, hch), (sy, nch)):
            await c.wait_pubs(ch, 2)
        assert await asyncio.to_thread(pubsub_clients, redis_server.port) == 2
        before = await asyncio.to_thread(reconnects, h)

        stop_read = asyncio.Event()
        ry = asyncio.ensure_future(reader(sy, stop_read))
        os.kill(stopped, signal.SIGSTOP)
        try:
            flooded, k = 0, 0
            while True:
                batch = {hch: [], nch: []}
                for i in range(100):
                    batch[hch].append({"k": k, "f": filler})
                    batch[nch].append({"k": k, "f": filler})
                    k += 1
                res = await asyncio.gather(publish_window(pubs[0], hch, batch[hch], window=64),
                                           publish_window(pubs[1], nch, batch[nch], window=64))
                acked[hch].update(res[0])
                acked[nch].update(res[1])
                flooded += 200
                if await asyncio.to_thread(pubsub_clients, redis_server.port) == 1:
                    break
                assert flooded < 20000, (
                    "Redis kept the stopped worker's subscriber connection after %d publications "
                    "of 1 KB" % flooded)
            print("flood: %d publications of 1 KB until Redis dropped worker 0's subscriber" % flooded)
            # a few more after the drop: only history (or a gap) can bring them
            for ch in (hch, nch):
                acked[ch].update(await publish_window(pubs[0], ch, [{"k": "late%d" % i} for i in range(5)]))
        finally:
            os.kill(stopped, signal.SIGCONT)

        deadline = loop.time() + 15
        while True:
            now = await asyncio.to_thread(reconnects, h)
            if now.get(0, 0) >= before.get(0, 0) + 1:
                break
            assert loop.time() < deadline, "worker 0 did not reconnect: %r -> %r" % (before, now)
            await asyncio.gather(sx_h.drain(0.1), sx_n.drain(0.1))
        # live again on worker 0
        k = 0
        while not (any(p["data"] == "probe%d" % j for j in range(k) for p in sx_h.pubs(hch))
                   and any(p["data"] == "probe%d" % j for j in range(k) for p in sx_n.pubs(nch))):
            assert loop.time() < deadline, "no live delivery on worker 0 after SIGCONT"
            for ch in (hch, nch):
                acked[ch].update(await publish_window(pubs[0], ch, ["probe%d" % k]))
            k += 1
            await asyncio.gather(sx_h.drain(0.2), sx_n.drain(0.2))
        await asyncio.gather(sx_h.drain(0.3), sx_n.drain(0.3))
        stop_read.set()
        await ry
        await sy.until(lambda: len(sy.pubs(hch)) >= len(acked[hch]) and len(sy.pubs(nch)) >= len(acked[nch]),
                       15, "worker 1's subscriber to get everything")

        offs = [p["offset"] for p in sx_h.pubs(hch)]
        assert not sx_h.gaps(hch), "gap push on a channel with history: %r" % sx_h.gaps(hch)
        assert offs == sorted(acked[hch]), (
            "stopped worker, %s: %d offsets received, %d acked; first differences: %r"
            % (hch, len(offs), len(acked[hch]),
               [(a, b) for a, b in zip(offs, sorted(acked[hch])) if a != b][:5]))
        for p in sx_h.pubs(hch):
            assert p["data"] == acked[hch][p["offset"]], p["offset"]

        evs = events(sx_n, nch)
        check_order(evs, "stopped worker, " + nch)
        epoch = evs[0][1]
        check_coverage(evs, {(epoch, o): d for o, d in acked[nch].items()}, "stopped worker, " + nch,
                       strict_epochs=(epoch,))
        assert sx_n.gaps(nch), "Redis dropped output for the stopped worker but no gap push came"

        for ch in (hch, nch):
            assert [p["offset"] for p in sy.pubs(ch)] == sorted(acked[ch]), "worker 1, %s" % ch
            assert not sy.gaps(ch), sy.gaps(ch)
        assert h.worker_pids() == pids, "a worker was replaced"
        await close_all([sx_h, sx_n, sy] + pubs)
    try:
        run(go())
    finally:
        try:
            os.kill(stopped, signal.SIGCONT)
        except ProcessLookupError:
            pass


def redis_errors(h):
    """{kind: herald_redis_errors_total summed over workers}."""
    status, _, body = admin_request(h.admin_port, "/metrics", timeout=5)
    assert status == 200, (status, body[:200])
    _, samples = parse_metrics(body)
    out = {}
    for (name, labels), v in samples.items():
        if name == "herald_redis_errors_total":
            kind = dict(labels)["kind"]
            out[kind] = out.get(kind, 0) + v
    return out


def test_redis_refusing_writes_is_named(make_herald, redis_server):
    """Redis at maxmemory with noeviction refuses the publish script: the
    WebSocket and HTTP replies and the log name the Redis error (not "redis
    unavailable"), herald_redis_errors_total{kind="oom"} counts it, and
    /health shows a Redis that is up but refuses writes until it takes
    writes again (issue 17 item 10)."""
    from harness import wait_until
    h = make_herald(**failure_config())
    port = redis_server.port
    tok = token_for(h)

    async def go():
        c = await open_tclient(h.url, tok)
        assert "result" in await c.subscribe("nohist:w")   # meta exists already
        redis_cli(port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
        redis_cli(port, "CONFIG", "SET", "maxmemory", "1")
        try:
            r = await c.publish("nohist:w", {"x": 1})
            assert r["error"]["code"] == 503, r
            assert "OOM" in r["error"]["message"], r
            assert "unavailable" not in r["error"]["message"], r
            st, body = api_request(h.port, "/api/publish", {"channel": "nohist:w", "data": 1})
            assert st == 503, (st, body)
            msg = body["error"]["message"]
            assert "OOM" in msg and "see result" not in msg, body
            assert "result" not in body, body
            errs = redis_errors(h)
            assert errs.get("oom", 0) >= 2, errs
            st, hb = health(h)
            assert st == 503 and hb["status"] == "degraded", (st, hb)
            assert all(w["up"] for w in hb["redis"]), hb
            assert any(w.get("writable") is False for w in hb["redis"]), hb
            h.find_log(lambda l: l.get("role") == "worker" and "OOM" in l.get("msg", ""),
                       what="a worker log line naming OOM")
        finally:
            redis_cli(port, "CONFIG", "SET", "maxmemory", "0")
        # Redis takes writes again: /health recovers without a publish
        wait_until(lambda: health(h)[0] == 200, 10 * SLACK, what="/health 200 again")
        st, hb = health(h)
        assert all(w.get("writable") is True for w in hb["redis"]), hb
        r = await c.publish("nohist:w", {"x": 2})
        assert "result" in r, r
        await close_all([c])
    run(go())
