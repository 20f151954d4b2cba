"""Client protocol on the public WebSocket port: ping, errors, batching."""

import json

from harness import (SUBPROTOCOL, command, connect, ping_once, recv_messages,
                     recv_nothing, run, slots_seen)


def test_ping_replies_with_worker_slot(herald):
    async def go():
        async with connect(herald.url) as ws:
            assert ws.subprotocol == SUBPROTOCOL
            reply = await command(ws, 1, "ping", {})
            assert set(reply) == {"id", "result"}, reply
            assert reply["id"] == 1
            assert reply["result"]["worker"] in (0, 1), reply
            slot = reply["result"]["worker"]
            # Same connection, same worker; params are optional; ids are
            # echoed as given, including 0 and values past 32 bits.
            for cmd_id in (0, 2, 4294967301):
                r = await command(ws, cmd_id, "ping")
                assert r == {"id": cmd_id, "result": {"worker": slot}}, r
            await recv_nothing(ws)
    run(go())


def test_client_without_subprotocol_is_accepted(herald):
    async def go():
        async with connect(herald.url, subprotocols=None) as ws:
            r = await command(ws, 5, "ping", {})
            assert r["id"] == 5 and r["result"]["worker"] in (0, 1), r
    run(go())


def test_both_workers_answer(herald):
    # The kernel spreads fresh connections over the two SO_REUSEPORT
    # sockets; missing a slot in 40 tries happens with p ~ 2e-12.
    seen = run(slots_seen(herald.url, 40, want={0, 1}))
    assert seen == {0, 1}


def test_unknown_method_404(herald):
    async def go():
        async with connect(herald.url) as ws:
            r = await command(ws, 7, "no_such_method", {})
            assert r.get("id") == 7, r
            assert "result" not in r, r
            assert r["error"]["code"] == 404, r
            assert isinstance(r["error"]["message"], str) and r["error"]["message"], r
            # still usable
            r = await command(ws, 8, "ping")
            assert r["id"] == 8 and "result" in r, r
    run(go())


def test_malformed_json_400_and_connection_stays_open(herald):
    async def go():
        async with connect(herald.url) as ws:
            for junk in ('{"id": 1, "method": "ping"', "not json at all", '{"id":}'):
                await ws.send(junk)
                (r,) = await recv_messages(ws, 1)
                assert "id" not in r, r
                assert r["error"]["code"] == 400, r
                assert isinstance(r["error"]["message"], str) and r["error"]["message"], r
            r = await command(ws, 9, "ping", {})
            assert r["id"] == 9 and "result" in r, r
            await recv_nothing(ws)
    run(go())


def test_not_a_command_400(herald):
    async def go():
        async with connect(herald.url) as ws:
            # Valid JSON, not a command: 400, with the id when it parsed.
            await ws.send(json.dumps({"id": 11}))              # no method
            (r,) = await recv_messages(ws, 1)
            assert r["error"]["code"] == 400 and r.get("id") == 11, r
            await ws.send(json.dumps({"id": 12, "method": 5}))  # method not a string
            (r,) = await recv_messages(ws, 1)
            assert r["error"]["code"] == 400 and r.get("id") == 12, r
            for other in ([1, 2], "ping", 42, {"method": "ping"},
                          {"id": "x", "method": "ping"}):
                await ws.send(json.dumps(other))
                (r,) = await recv_messages(ws, 1)
                assert "result" not in r, (other, r)
                assert r["error"]["code"] == 400, (other, r)
            r = await command(ws, 13, "ping")
            assert r["id"] == 13 and "result" in r, r
            await recv_nothing(ws)
    run(go())


def test_several_commands_in_one_frame(herald):
    async def go():
        async with connect(herald.url) as ws:
            frame = "\n".join([
                json.dumps({"id": 21, "method": "ping", "params": {}}),
                json.dumps({"id": 22, "method": "nope"}),
                "{broken",
                json.dumps({"id": 23, "method": "ping"}),
            ])
            await ws.send(frame)
            replies = await recv_messages(ws, 4)
            assert len(replies) == 4, replies
            assert replies[0]["id"] == 21 and "result" in replies[0], replies
            assert replies[1]["id"] == 22 and replies[1]["error"]["code"] == 404, replies
            assert "id" not in replies[2] and replies[2]["error"]["code"] == 400, replies
            assert replies[3]["id"] == 23 and "result" in replies[3], replies
            await recv_nothing(ws)
    run(go())


def test_many_commands_in_one_frame(herald):
    # Enough commands that replies may need several writes.
    n = 200
    async def go():
        async with connect(herald.url) as ws:
            await ws.send("\n".join(json.dumps({"id": i, "method": "ping"}) for i in range(n)))
            replies = await recv_messages(ws, n, timeout=20)
            assert [r["id"] for r in replies] == list(range(n))
            assert all("result" in r for r in replies)
            await recv_nothing(ws)
    run(go())


def test_many_sequential_connections(herald):
    async def go():
        for i in range(100):
            r = await ping_once(herald.url, cmd_id=i)
            assert r["id"] == i and "result" in r, r
    run(go())


def _upgrade(port, protocol_header):
    """A raw upgrade request; returns the response head and what follows
    it (up to 4 KB)."""
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        req = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n")
        if protocol_header is not None:
            req += "Sec-WebSocket-Protocol: %s\r\n" % protocol_header
        s.sendall((req + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if head.split(b" ")[1:2] == [b"400"]:
            s.settimeout(2)
            try:
                while len(rest) < 4096:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    rest += chunk
            except OSError:
                pass
        return head.decode("latin-1"), rest.decode("latin-1", "replace")
    finally:
        s.close()


def test_unknown_subprotocol_only_gets_400_with_a_reason(herald):
    """A client that offers only subprotocols herald does not speak gets an
    HTTP 400 naming herald.v1, not a silently closed connection (issue 17
    item 8); one that also offers herald.v1 gets it."""
    head, body = _upgrade(herald.port, "chat.v2, mqtt")
    assert head.split(" ")[1] == "400", (head, body)
    assert "herald.v1" in body, body
    head, _ = _upgrade(herald.port, "chat.v2, herald.v1")
    assert head.startswith("HTTP/1.1 101"), head
    assert "sec-websocket-protocol: herald.v1" in head.lower(), head
    head, _ = _upgrade(herald.port, None)
    assert head.startswith("HTTP/1.1 101"), head
