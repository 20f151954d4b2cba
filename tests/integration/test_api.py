"""The HTTP publish API on the public port (issue 4): publish and broadcast
reaching WebSocket subscribers on every worker, and every error status."""

import asyncio
import http.client
import json
import socket
import time

from harness import (API_KEY, SLACK, api_request, clients_on_workers, open_client, redis_cli,
                     pubsub_config, redis_restart_same_port, run, token_for,
                     wait_until)


def is_error(body, status):
    return (isinstance(body, dict) and isinstance(body.get("error"), dict)
            and body["error"].get("code") == status
            and isinstance(body["error"].get("message"), str) and body["error"]["message"])


def test_api_publish_and_broadcast_reach_every_worker(pubsub_herald):
    h = pubsub_herald

    async def go():
        subs = await clients_on_workers(h.url, token_for(h))
        chans = ["chat:api1", "chat:api2", "plain-api"]
        for s in subs.values():
            for ch in chans:
                assert "result" in await s.subscribe(ch)
        st, body = api_request(h.port, "/api/publish", {"channel": "chat:api1", "data": {"text": "hi"}})
        assert st == 200 and body == {"result": {"offset": 1}}, (st, body)
        st, body = api_request(h.port, "/api/broadcast", {"channels": chans, "data": [1, "two"]})
        assert st == 200 and body == {"result": {"offsets": [2, 1, 1]}}, (st, body)
        # a broadcast may name the same channel twice: two publications
        st, body = api_request(h.port, "/api/broadcast", {"channels": ["chat:api2", "chat:api2"], "data": None})
        assert st == 200 and body == {"result": {"offsets": [2, 3]}}, (st, body)
        want = {"chat:api1": [(1, {"text": "hi"}), (2, [1, "two"])],
                "chat:api2": [(1, [1, "two"]), (2, None), (3, None)],
                "plain-api": [(1, [1, "two"])]}
        for slot, s in subs.items():
            for ch, w in want.items():
                await s.wait_pubs(ch, len(w))
        await asyncio.gather(*(s.drain(0.3) for s in subs.values()))
        for slot, s in subs.items():
            for ch, w in want.items():
                got = [(p["offset"], p["data"]) for p in s.pubs(ch)]
                assert got == w, "worker %d, %s: %r" % (slot, ch, got)
        for s in subs.values():
            await s.close()
    run(go())


def test_api_errors(pubsub_herald):
    """Every refused request gets its status and an error body, and
    publishes nothing."""
    h = pubsub_herald
    ch = "chat:err"
    good = {"channel": ch, "data": "bad"}
    cases = [
        # (what, path, body, key, method, status)
        ("no key", "/api/publish", good, None, "POST", 401),
        ("wrong key", "/api/publish", good, API_KEY + "x", "POST", 401),
        ("key prefix", "/api/publish", good, API_KEY[:-1], "POST", 401),
        ("empty key", "/api/publish", good, "", "POST", 401),
        ("broadcast, wrong key", "/api/broadcast", {"channels": [ch], "data": 1}, "nope-nope-nope-nope", "POST", 401),
        ("invalid JSON", "/api/publish", '{"channel": "chat:err", "data": ', API_KEY, "POST", 400),
        ("empty body", "/api/publish", b"", API_KEY, "POST", 400),
        ("not an object", "/api/publish", [good], API_KEY, "POST", 400),
        ("missing channel", "/api/publish", {"data": 1}, API_KEY, "POST", 400),
        ("channel not a string", "/api/publish", {"channel": 7, "data": 1}, API_KEY, "POST", 400),
        ("bad channel", "/api/publish", {"channel": "chat:a b", "data": 1}, API_KEY, "POST", 400),
        ("channel of 256 bytes", "/api/publish", {"channel": "chat:" + "n" * 251, "data": 1}, API_KEY, "POST", 400),
        ("unknown namespace", "/api/publish", {"channel": "nope:x", "data": 1}, API_KEY, "POST", 400),
        ("namespace \"\" (\":x\")", "/api/publish", {"channel": ":x", "data": 1}, API_KEY, "POST", 400),
        ("missing data", "/api/publish", {"channel": ch}, API_KEY, "POST", 400),
        ("bad tenant", "/api/publish", {"channel": ch, "data": 1, "tenant": "a b"}, API_KEY, "POST", 400),
        ("tenant not a string", "/api/publish", {"channel": ch, "data": 1, "tenant": 5}, API_KEY, "POST", 400),
        ("broadcast, no channels", "/api/broadcast", {"data": 1}, API_KEY, "POST", 400),
        ("broadcast, empty channels", "/api/broadcast", {"channels": [], "data": 1}, API_KEY, "POST", 400),
        ("broadcast, channels a string", "/api/broadcast", {"channels": ch, "data": 1}, API_KEY, "POST", 400),
        ("broadcast, one bad channel", "/api/broadcast", {"channels": [ch, "chat:a b"], "data": 1}, API_KEY, "POST", 400),
        ("broadcast, one unknown namespace", "/api/broadcast", {"channels": [ch, "nope:x"], "data": 1},
         API_KEY, "POST", 400),
        ("broadcast, 1001 channels", "/api/broadcast", {"channels": [ch] * 1001, "data": 1}, API_KEY, "POST", 400),
        ("broadcast, missing data", "/api/broadcast", {"channels": [ch]}, API_KEY, "POST", 400),
        ("unknown path", "/api/publishx", good, API_KEY, "POST", 404),
        ("unknown path /api", "/api", good, API_KEY, "POST", 404),
        ("root", "/", good, API_KEY, "POST", 404),
        ("GET publish", "/api/publish", None, API_KEY, "GET", 405),
        ("GET broadcast", "/api/broadcast", None, API_KEY, "GET", 405),
    ]

    async def go():
        c = await open_client(h.url, token_for(h))
        assert "result" in await c.subscribe(ch)
        problems = []
        for what, path, body, key, method, status in cases:
            try:
                st, resp = api_request(h.port, path, body, key=key, method=method, timeout=5)
            except OSError as e:
                problems.append("%s: %s %s: no response (%r)" % (what, method, path, e))
                continue
            if st != status or not is_error(resp, status):
                problems.append("%s: %s %s: expected %d with an error body, got %d %r"
                                % (what, method, path, status, st, resp))
        assert not problems, "\n".join(problems)
        # nothing above was published: the next publication gets offset 1
        st, body = api_request(h.port, "/api/publish", {"channel": ch, "data": "good"})
        assert st == 200 and body["result"]["offset"] == 1, (st, body)
        await c.wait_pubs(ch, 1)
        await c.drain(0.3)
        assert [p["data"] for p in c.pubs(ch)] == ["good"], c.pushes
        await c.close()
    run(go())


def test_api_body_limit_413(make_herald):
    h = make_herald(**pubsub_config(api={"max_body_bytes": 1024}))
    ch = "chat:big"

    def body_of(size):
        b = {"channel": ch, "data": ""}
        b["data"] = "x" * (size - len(json.dumps(b)))
        out = json.dumps(b)
        assert len(out) == size
        return out

    async def go():
        c = await open_client(h.url, token_for(h))
        assert "result" in await c.subscribe(ch)
        st, resp = api_request(h.port, "/api/publish", body_of(1025))
        assert st == 413 and is_error(resp, 413), (st, resp)
        st, resp = api_request(h.port, "/api/publish", body_of(100 * 1024))
        assert st == 413 and is_error(resp, 413), (st, resp)
        # exactly at the limit is fine
        st, resp = api_request(h.port, "/api/publish", body_of(1024))
        assert st == 200 and resp["result"]["offset"] == 1, (st, resp)
        pubs = await c.wait_pubs(ch, 1)
        await c.drain(0.3)
        assert len(c.pubs(ch)) == 1 and len(pubs[0]["data"]) > 900, c.pushes
        await c.close()
    run(go())


def post_chunked(port, body, parts, timeout=5):
    """POST /api/publish with Transfer-Encoding: chunked (no
    Content-Length). Returns (status, body) or raises on no answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        step = max(1, len(body) // parts)
        conn.request("POST", "/api/publish", body=iter([body[i:i + step] for i in range(0, len(body), step)]),
                     headers={"Authorization": "apikey " + API_KEY, "Content-Type": "application/json"},
                     encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_api_chunked_body_gets_an_answer(make_herald):
    """A chunked body (HTTP/1.1 clients may send one) is either read (and
    the limit enforced while reading) or refused with 411: never left
    without an answer."""
    h = make_herald(**pubsub_config(api={"max_body_bytes": 1024}))
    ch = "chat:chunked"
    small = json.dumps({"channel": ch, "data": "s"}).encode()
    big = json.dumps({"channel": ch, "data": "x" * 4000}).encode()
    problems = []
    for what, body, parts, ok in (("small, one chunk", small, 1, (200, 411)),
                                  ("small, three chunks", small, 3, (200, 411)),
                                  ("over the limit", big, 4, (413, 411))):
        try:
            st, data = post_chunked(h.port, body, parts)
            if st not in ok:
                problems.append("%s: expected one of %r, got %d %r" % (what, ok, st, data))
        except OSError as e:
            problems.append("%s: no response (%r)" % (what, e))
    assert not problems, "chunked POST /api/publish:\n" + "\n".join(problems)


def test_api_disabled_without_key(make_herald):
    h = make_herald(**pubsub_config(api={"key": None}))
    st, body = api_request(h.port, "/api/publish", {"channel": "chat:x", "data": 1})
    assert st == 404 and is_error(body, 404), (st, body)
    st, body = api_request(h.port, "/api/publish", {"channel": "chat:x", "data": 1}, key=None)
    assert st == 404 and is_error(body, 404), (st, body)


def test_api_503_while_redis_down(make_herald, redis_server):
    h = make_herald(**pubsub_config(redis={"reconnect_min_ms": 50, "reconnect_max_ms": 400}))
    ch = "chat:api-down"

    async def go():
        subs = await clients_on_workers(h.url, token_for(h))
        for s in subs.values():
            assert "result" in await s.subscribe(ch)
        st, body = api_request(h.port, "/api/publish", {"channel": ch, "data": "before"})
        assert st == 200, (st, body)
        redis_server.stop()
        for _ in range(4):      # a few, to meet both workers
            st, body = api_request(h.port, "/api/publish", {"channel": ch, "data": "down"})
            assert st == 503 and is_error(body, 503), (st, body)
            st, body = api_request(h.port, "/api/broadcast", {"channels": [ch, "chat:other"], "data": "down"})
            assert st == 503 and is_error(body, 503), (st, body)
            # nothing was published: no list, or a list of nulls
            assert body.get("result", {"offsets": [None, None]}) == {"offsets": [None, None]}, body
        redis_restart_same_port(redis_server)

        def publish_ok():
            st, body = api_request(h.port, "/api/publish", {"channel": ch, "data": "after"})
            assert st in (200, 503), (st, body)
            return st == 200
        wait_until(publish_ok, 20, interval=0.1, what="an API publish to succeed after Redis came back")
        for s in subs.values():
            await s.until(lambda s=s: any(p["data"] == "after" for p in s.pubs(ch)) or s.gaps(ch), 20,
                          "the publication after Redis came back (or a gap for it)")
        await asyncio.gather(*(s.drain(0.3) for s in subs.values()))
        for slot, s in subs.items():
            assert "down" not in [p["data"] for p in s.pubs(ch)], (slot, s.pushes)
            await s.close()
    run(go())


def read_responses(s, n, timeout=10):
    """Read n HTTP/1.1 responses (with Content-Length) from socket s:
    [(status, headers, body bytes)]."""
    s.settimeout(timeout)
    buf, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError("closed after %d of %d responses: %r" % (len(out), n, buf))
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        size = int(hdrs.get("content-length", "0"))
        while len(buf) < size:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError("closed in a body")
            buf += chunk
        out.append((int(lines[0].split(" ")[1]), hdrs, buf[:size]))
        buf = buf[size:]
    return out


def publish_request(ch, data, path="/api/publish", extra=None):
    obj = {"channel": ch, "data": data}
    obj.update(extra or {})
    body = json.dumps(obj).encode()
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: apikey " + API_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_api_pipelined_requests_answered_in_order(make_herald):
    """Requests sent back to back on one keep-alive connection (HTTP/1.1
    pipelining, what high-rate publishers do) are each answered, in order,
    on the same connection, which stays open; each publication is made
    once (issue 17 item 3). A bad request in the middle gets its own error
    and does not disturb the others."""
    import socket
    h = make_herald(**pubsub_config(workers=1))
    ch = "chat:pipelined"
    pids = h.worker_pids()

    async def go():
        sub = await open_client(h.url, token_for(h, sub="s"))
        assert "result" in await sub.subscribe(ch)
        s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
        try:
            n = 0
            for rnd in range(3):
                reqs = [publish_request(ch, {"r": rnd, "i": i}) for i in range(7)]
                reqs[3] = publish_request("bad channel!", 1)       # a 400 in the middle
                s.sendall(b"".join(reqs))
                resps = read_responses(s, len(reqs))
                for i, (st, hdrs, body) in enumerate(resps):
                    if i == 3:
                        assert st == 400, (st, body)
                        continue
                    n += 1
                    assert st == 200, (i, st, body)
                    assert json.loads(body) == {"result": {"offset": n}}, (i, body)
            # and the connection still serves one request at a time
            s.sendall(publish_request(ch, "after"))
            (st, _, body), = read_responses(s, 1)
            assert st == 200 and json.loads(body)["result"]["offset"] == n + 1, body
        finally:
            s.close()
        assert h.worker_pids() == pids, "a worker died on pipelined requests"
        await sub.wait_pubs(ch, n + 1)
        await sub.drain(0.3)
        offs = [p["offset"] for p in sub.pubs(ch)]
        assert offs == list(range(1, n + 2)), offs
        await sub.close()
    run(go())


def test_api_broadcast_failing_partway(make_herald, redis_server):
    """A broadcast whose publishes fail partway answers with the error and
    the offsets of what was published (null where not). The packed result
    used to leak (json_object_set for _set_new): the sanitizer build's
    leak check at teardown catches it."""
    ns = {"hist": {"publish": True, "history_size": 10, "history_ttl_s": 60}}
    h = make_herald(**pubsub_config(namespaces=ns))
    # the second channel's meta key holds a string: its script fails
    assert redis_cli(redis_server.port, "SET", "{herald||hist:broken}:meta", "x").strip() == "OK"
    for _ in range(3):
        st, body = api_request(h.port, "/api/broadcast",
                               {"channels": ["hist:ok", "hist:broken", "hist:ok2"], "data": 1})
        assert st == 500 and is_error(body, 500), (st, body)
        offsets = body["result"]["offsets"]
        assert offsets[1] is None and isinstance(offsets[0], int) and isinstance(offsets[2], int), body


def test_api_longest_key_publishes_and_longer_is_400(pubsub_herald):
    """The longest names (a 64-byte tenant, a 255-byte channel) make the
    longest Redis key: it fits (publish 200), and one byte more of either
    is a 400 naming the field, never a 503."""
    h = pubsub_herald
    tenant = "t" * 64
    chan = "chat:" + "c" * 250
    st, body = api_request(h.port, "/api/publish", {"tenant": tenant, "channel": chan, "data": 1})
    assert st == 200 and body == {"result": {"offset": 1}}, (st, body)
    st, body = api_request(h.port, "/api/broadcast", {"tenant": tenant, "channels": [chan, chan], "data": 2})
    assert st == 200 and body == {"result": {"offsets": [2, 3]}}, (st, body)
    for what, req in (("tenant of 65", {"tenant": tenant + "t", "channel": chan, "data": 1}),
                      ("channel of 256", {"tenant": tenant, "channel": chan + "c", "data": 1})):
        st, body = api_request(h.port, "/api/publish", req)
        assert st == 400 and is_error(body, 400), (what, st, body)


def test_api_error_bodies_are_json_for_any_bytes(pubsub_herald):
    """A body that is not valid UTF-8 still gets a JSON error body: the
    parser's message may quote the bad bytes, which JSON cannot carry."""
    h = pubsub_herald
    for raw in (b'{"channel": "\xff\xfe", "data": 1}', b'\xc3', b'{"data": "\xed\xa0\x80"}',
                b'{"channel": "chat:x", "data": 1, "\xff": 2}'):
        st, body = api_request(h.port, "/api/publish", raw)
        assert st == 400 and is_error(body, 400), (raw, st, body)


def test_api_body_deadline(make_herald):
    """A request body must arrive whole within api.body_timeout_ms of the
    request's headers (issue 16 item 17, nginx's client_body_timeout): a
    body trickled in a byte at a time is cut off and counted as
    herald_api_requests_total{result="timeout"}; a body that arrives in
    pieces within the deadline is served. Before, a trickled body held
    the connection open indefinitely."""
    from test_hostile import metric_sum, tcp_connect
    h = make_herald(**pubsub_config(api={"body_timeout_ms": 1000}))
    body = json.dumps({"channel": "chat:slow", "data": "x" * 40}).encode()
    head = ("POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: apikey %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (API_KEY, len(body))).encode()

    # in time: three pieces 0.2 s apart
    s = tcp_connect(h.port)
    s.sendall(head)
    for i in range(0, len(body), 20):
        time.sleep(0.2)
        s.sendall(body[i:i + 20])
    s.settimeout(10)
    data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 200"), data
    s.close()

    # trickled: a byte every 0.25 s (the whole body would take ~13 s)
    s = tcp_connect(h.port)
    s.sendall(head)
    t0 = time.monotonic()
    closed_after = None
    for i in range(len(body)):
        try:
            s.sendall(body[i:i + 1])
            s.settimeout(0.25)
            b = s.recv(65536)
            if not b:
                closed_after = time.monotonic() - t0
                break
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed_after = time.monotonic() - t0
            break
    s.close()
    assert closed_after is not None, "a trickled body was never cut off"
    assert 0.9 <= closed_after <= 1.0 + 3 * SLACK, closed_after
    wait_until(lambda: metric_sum(h, "herald_api_requests_total", method="publish", result="timeout") == 1,
               5, what="the timeout counted")


def test_api_requests_answered_across_replacing_reloads(make_herald):
    """Publishes at a steady rate on keep-alive connections across several
    reloads that replace workers: every request gets a response (issue 17
    item 1). A retiring worker finishes what it accepted, answers with
    Connection: close, and does not exit while an API connection is open
    (until its drain window ends)."""
    import signal
    import threading
    import time
    from harness import SLACK
    h = make_herald(**pubsub_config(timeouts={"shutdown_ms": 3000}))
    stop = threading.Event()
    results = {"ok": 0, "status": [], "lost": []}
    lock = threading.Lock()

    def publisher(n):
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
        i = 0
        while not stop.is_set():
            body = json.dumps({"channel": "chat:reload", "data": {"p": n, "i": i}})
            try:
                conn.request("POST", "/api/publish", body=body,
                             headers={"Authorization": "apikey " + API_KEY,
                                      "Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                with lock:
                    if resp.status == 200:
                        results["ok"] += 1
                    else:
                        results["status"].append((resp.status, data[:200]))
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    results["lost"].append("%s: %r" % (type(e).__name__, e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
            i += 1
            time.sleep(0.02)
        conn.close()

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for k in range(4):
            time.sleep(0.5)
            old = set(h.worker_pids().values())
            h.config["timeouts"]["connect_ms"] = 20000 + k     # a worker-level key
            h.write_config()
            h.send_signal(signal.SIGHUP)
            h.wait_workers({0: None, 1: None}, timeout=15 + h.shutdown_s * SLACK,
                           what="two new workers", exclude=old)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert results["ok"] > 100, results["ok"]
    assert not results["lost"], "requests without a response: %r" % results["lost"][:5]
    assert not results["status"], results["status"][:5]


def test_api_batch_one_result_per_publication(make_herald):
    """POST /api/batch publishes many publications in one request and
    answers one result per publication, in order (issue 17 item 3): bad
    ones get their own error and do not stop the others; idempotency keys
    and tenants work per publication; subscribers see each once, in
    order."""
    h = make_herald(**pubsub_config(workers=2))
    ch = "chat:batch"

    async def go():
        subs = await clients_on_workers(h.url, token_for(h, sub="s"))
        for s in subs.values():
            assert "result" in await s.subscribe(ch)
        pubs = [{"channel": ch, "data": {"i": i}} for i in range(300)]
        pubs[10] = {"channel": "bad channel!", "data": 1}
        pubs[20] = {"channel": ch}                                  # no data
        pubs[30] = {"channel": "nons:x", "data": 1}                 # unknown namespace
        pubs[40] = "not an object"
        pubs[50] = {"channel": ch, "data": "k", "idempotency_key": "b-1"}
        pubs[60] = {"channel": ch, "data": "k again", "idempotency_key": "b-1"}
        pubs[70] = {"channel": ch, "data": "other tenant", "tenant": "acme"}
        st, body = api_request(h.port, "/api/batch", {"publications": pubs})
        assert st == 200, (st, body)
        res = body["result"]["results"]
        assert len(res) == len(pubs)
        bad = {10, 20, 30, 40}
        n = 0
        acked = {}
        for i, r in enumerate(res):
            if i in bad:
                assert r["error"]["code"] == 400, (i, r)
            elif i == 60:
                assert r == {"offset": acked_k, "duplicate": True}, r
            elif i == 70:
                assert r == {"offset": 1}, r                       # acme's own channel
            else:
                n += 1
                assert r == {"offset": n}, (i, r)
                acked[n] = pubs[i]["data"]
                if i == 50:
                    acked_k = n
        for slot, s in subs.items():
            await s.wait_pubs(ch, n)
            await s.drain(0.3)
            got = [(p["offset"], p["data"]) for p in s.pubs(ch)]
            assert got == sorted(acked.items()), (slot, got[:5])
        for bad_body in ({"publications": []}, {"publications": {}}, {},
                         {"publications": [{"channel": ch, "data": 1}] * 1001}):
            st, body = api_request(h.port, "/api/batch", bad_body)
            assert st == 400, (st, body)
        for s in subs.values():
            await s.close()
    run(go())
