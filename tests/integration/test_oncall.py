"""What an on-call engineer sees of one client's abnormal close: an info
log line with the close code, client id, user, tenant, address (unless
log.client_addresses is false), subscriptions and queued bytes; nothing
for a normal close."""

import asyncio

import harness
from harness import open_client, run, token_for


def abnormal(h, code):
    return [l for l in h.log_lines()
            if l.get("msg") == "abnormal close" and l.get("code") == str(code)]


def test_abnormal_close_logged_with_who_and_what(make_herald):
    h = make_herald(**harness.pubsub_config(log={"level": "info", "format": "json"}))
    token = token_for(h, sub="alice", tenant="acme")

    async def go():
        gone = await open_client(h.url, token)
        for ch in ("news", "chat:room1"):
            r = await gone.subscribe(ch)
            assert "result" in r, r
        fine = await open_client(h.url, token)
        await fine.subscribe("news")
        await fine.close()                       # 1000: not logged
        gone.ws.transport.abort()                # no close frame: 1006

    run(go())
    line = h.find_log(lambda l: l.get("msg") == "abnormal close", what="abnormal close line")
    assert line["level"] == "info", line
    assert line["code"] == "1006", line
    assert line["reason"] == "no close frame", line
    assert line["user"] == "alice" and line["tenant"] == "acme", line
    assert line["addr"].startswith("127.0.0.1"), line
    assert line["subscriptions"] == "2", line
    assert line["queued_bytes"] == "0", line
    assert line["client"], line
    assert not abnormal(h, 1000), "a normal close was logged as abnormal"


def test_client_addresses_off_keeps_addresses_out(make_herald):
    h = make_herald(**harness.pubsub_config(
        log={"level": "info", "format": "json", "client_addresses": False}))
    token = token_for(h, sub="bob")

    async def go():
        c = await open_client(h.url, token)
        await c.subscribe("news")
        c.ws.transport.abort()

    run(go())
    line = h.find_log(lambda l: l.get("msg") == "abnormal close", what="abnormal close line")
    assert line["addr"] == "-", line
    assert line["user"] == "bob" and line["tenant"] == "", line
    assert "127.0.0.1" not in h.log_text().split('"abnormal close"')[1].split("\n")[0]


def test_slow_consumer_shows_in_queue_gauge_and_close_line(make_herald):
    """A subscriber that stops reading: herald_outbound_queue_max_bytes
    shows its backlog, and its 4000 close is logged with the queued
    bytes."""
    h = make_herald(workers=1, **harness.pubsub_config(
        log={"level": "info", "format": "json"},
        limits={"outbound_queue_bytes": 8 * 1024 * 1024}))
    token = token_for(h, sub="slow")
    seen = []

    async def go():
        # max_queue=1 and a small read limit: the client stops reading
        # from its socket once one frame is waiting
        c = await open_client(h.url, token, max_queue=1, read_limit=2 ** 16)
        r = await c.subscribe("news")
        assert "result" in r, r
        blob = "x" * 48000
        for i in range(1000):
            st, body = harness.api_request(h.port, "/api/publish",
                                           {"channel": "news", "data": {"i": i, "b": blob}})
            assert st == 200, (st, body)
            if i % 10 == 0:
                # slow enough that the once-a-second sample sees the
                # queue on its way to the cap
                await asyncio.sleep(0.1)
                _, samples = harness.parse_metrics(
                    harness.admin_request(h.admin_port, "/metrics")[2])
                seen.extend(v for (n, _), v in samples.items()
                            if n == "herald_outbound_queue_max_bytes")
            if abnormal(h, 4000):
                break
        c.ws.transport.abort()

    run(go())
    line = h.find_log(lambda l: l.get("msg") == "abnormal close" and l.get("code") == "4000",
                      what="slow consumer close line")
    assert line["reason"].startswith("slow consumer"), line
    assert line["user"] == "slow", line
    assert int(line["queued_bytes"]) > 1024 * 1024, line
    assert line["subscriptions"] == "1", line
    assert seen and max(seen) > 0, seen
