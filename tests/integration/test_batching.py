"""Outbound batching (issue 4): batch.flush_delay_ms holds pushes and
coalesces them, a reply is never held behind the delay (and takes the
pushes queued before it along, in order), and batch.max_messages 1 writes
one message per frame."""

import asyncio
import time

from harness import open_client, pubsub_config, run, token_for
from test_pubsub import check_stream, publish_burst


def delayed_herald(make_herald, delay_ms, **over):
    cfg = pubsub_config(workers=1, limits={"commands_per_second": 0},
                        batch={"flush_delay_ms": delay_ms})
    cfg.update(over)
    return make_herald(**cfg)


def test_flush_delay_holds_pushes_and_coalesces(make_herald):
    delay = 0.4
    h = delayed_herald(make_herald, int(delay * 1000))
    ch, n = "chat:delay", 20

    async def go():
        tok = token_for(h, sub="u")
        sub = await open_client(h.url, tok)
        assert "result" in await sub.subscribe(ch)
        pub = await open_client(h.url, tok)
        frames0, msgs0 = sub.frames, sub.msgs
        t0 = time.monotonic()
        acked = await publish_burst(pub, ch, [{"i": i} for i in range(n)])
        # nothing may arrive before the delay has passed since the first
        # push was queued (which is after t0)
        while time.monotonic() - t0 < delay - 0.05:
            got = await sub.pump(delay - 0.05 - (time.monotonic() - t0))
            assert not got, "a frame arrived %.3f s after the publish, inside the %.1f s " \
                "flush delay: %r" % (time.monotonic() - t0, delay, sub.pushes)
        pubs = await sub.wait_pubs(ch, n, timeout=10)
        check_stream(pubs, acked, "delayed subscriber")
        frames = sub.frames - frames0
        assert sub.msgs - msgs0 == n
        # the burst took a few ms to publish; the delay is 400 ms
        assert frames <= 3, "%d publications came in %d frames" % (n, frames)
        await sub.close()
        await pub.close()
    run(go())


def test_flush_delay_reply_is_not_held(make_herald):
    delay = 1.0                 # the most batch.flush_delay_ms allows
    h = delayed_herald(make_herald, int(delay * 1000))
    ch = "chat:reply"

    async def go():
        tok = token_for(h, sub="u")
        sub = await open_client(h.url, tok)
        assert "result" in await sub.subscribe(ch)
        pub = await open_client(h.url, tok)
        r = await pub.publish(ch, {"first": True})
        assert "result" in r, r
        # the push reaches the worker within a moment of the ack and is
        # held there for the delay
        assert not await sub.pump(0.25), "a frame came inside the flush delay: %r" % sub.pushes
        # a command's reply goes out at once, and takes the held push
        # along, ahead of itself (queue order)
        t0 = time.monotonic()
        pong = await sub.call("ping", timeout=delay)
        took = time.monotonic() - t0
        assert "result" in pong, pong
        assert took < 0.5, "the reply took %.3f s: held with the pushes?" % took
        assert [p["data"] for p in sub.pubs(ch)] == [{"first": True}], \
            "the held push did not go out with the reply: %r" % sub.pushes
        await sub.close()
        await pub.close()
    run(go())


def test_unbatched_one_message_per_frame(make_herald):
    h = make_herald(**pubsub_config(workers=1, limits={"commands_per_second": 0},
                                    batch={"max_messages": 1}))
    ch, n = "chat:single", 300

    async def go():
        tok = token_for(h, sub="u")
        subs = [await open_client(h.url, tok) for _ in range(3)]
        for s in subs:
            assert "result" in await s.subscribe(ch)
        pub = await open_client(h.url, tok)
        before = [(s.frames, s.msgs) for s in subs]
        acked = await publish_burst(pub, ch, [{"i": i, "pad": "p" * (i % 50)} for i in range(n)])
        for s, (f0, m0) in zip(subs, before):
            pubs = await s.wait_pubs(ch, n, timeout=20)
            check_stream(pubs, acked, "unbatched subscriber")
            assert s.frames - f0 == s.msgs - m0 == n, (s.frames - f0, s.msgs - m0)
        await asyncio.gather(*(c.close() for c in subs + [pub]))
    run(go())
