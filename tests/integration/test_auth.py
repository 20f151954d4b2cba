"""Authentication (issue 4): every way a JWT is rejected, expiry while
connected, commands before connect, the connect deadline, anonymous mode
and the token's channel allow-list."""

import asyncio
import hashlib
import time

from harness import (PUBSUB_CONFIG, open_client, pubsub_config, run,
                     token_for)
from jwtutil import b64url, claims, sign


def rejected_tokens(secret):
    """(name, token) pairs that herald must refuse."""
    good_header = {"alg": "HS256", "typ": "JWT"}
    good = claims(sub="mallory", exp_in=3600)
    valid = sign(good, secret)
    h, p, s = valid.split(".")
    # a different, still canonical, signature: flip the first character
    bad_sig = ("B" if s[0] == "A" else "A") + s[1:]
    return [
        ("alg none, no signature", sign(good, secret, header={"alg": "none", "typ": "JWT"}, signature="")),
        ("alg none, HS256 signature", sign(good, secret, header={"alg": "none", "typ": "JWT"})),
        ("alg None (case)", sign(good, secret, header={"alg": "None"}, signature="")),
        ("header without alg", sign(good, secret, header={"typ": "JWT"})),
        ("HS384 header, HS256 signature", sign(good, secret, header={"alg": "HS384", "typ": "JWT"})),
        ("RS256 header, HS256 signature", sign(good, secret, header={"alg": "RS256", "typ": "JWT"})),
        ("hs256 (lower case alg)", sign(good, secret, header={"alg": "hs256", "typ": "JWT"})),
        ("crit header", sign(good, secret, header={"alg": "HS256", "typ": "JWT", "crit": ["exp"]})),
        ("bad signature", h + "." + p + "." + bad_sig),
        ("signature of another payload", h + "." + b64url('{"sub":"root","exp":%d}' % good["exp"]) + "." + s),
        ("empty signature", h + "." + p + "."),
        ("wrong secret", sign(good, secret + "x")),
        ("two parts", h + "." + p),
        ("four parts", valid + "." + s),
        ("garbage", "this is not a token"),
        ("empty string", ""),
        ("base64 padding", valid + "=="),
        ("payload not JSON", sign(b"not json", secret, header=good_header)),
        ("payload a JSON array", sign(b"[1,2]", secret, header=good_header)),
        ("missing exp", sign(claims(sub="mallory", exp_in=None), secret)),
        ("exp not a number", sign({"sub": "mallory", "exp": "tomorrow"}, secret)),
        ("past exp", sign(claims(sub="mallory", exp_in=-30), secret)),
        ("missing sub", sign(claims(sub=None), secret)),
        ("empty sub", sign(claims(sub=""), secret)),
        ("sub of 256 bytes", sign(claims(sub="s" * 256), secret)),
        ("nbf in the future", sign(claims(sub="mallory", nbf=int(time.time()) + 600), secret)),
        ("bad tenant", sign(claims(sub="mallory", tenant="acme corp"), secret)),
        ("tenant of 65 bytes", sign(claims(sub="mallory", tenant="t" * 65), secret)),
    ]


def test_rejected_tokens_get_401_then_close_4500(pubsub_herald):
    h = pubsub_herald
    secret = h.config["auth"]["hmac_secret"]
    cases = rejected_tokens(secret) + [("no token at all", None)]

    async def one(name, tok):
        c = await open_client(h.url, do_connect=False)
        try:
            r = await c.connect(tok)
            if r.get("error", {}).get("code") != 401:
                return "%s: expected error 401, got %r" % (name, r)
            code = await c.wait_closed(10)
            if code != 4500:
                return "%s: expected close 4500 after the 401, got %r" % (name, code)
            return None
        except AssertionError as e:
            return "%s: %s" % (name, e)
        finally:
            await c.close()

    async def go():
        sem = asyncio.Semaphore(8)

        async def guarded(name, tok):
            async with sem:
                return await one(name, tok)
        return await asyncio.gather(*(guarded(n, t) for n, t in cases))
    problems = [p for p in run(go()) if p]
    assert not problems, "tokens not rejected as specified:\n" + "\n".join(problems)


def test_non_string_tokens_get_401_then_close_4500(pubsub_herald):
    """{"token": null} or a token that is not a string is a missing token:
    401 then 4500, as docs/protocol.md says (issue 17 item 9)."""
    h = pubsub_herald

    async def go():
        for params in ({"token": None}, {"token": 42}, {"token": ["x"]},
                       {"token": {"jwt": "x"}}, {"token": True}):
            c = await open_client(h.url, do_connect=False)
            try:
                r = await c.call("connect", params)
                assert r.get("error", {}).get("code") == 401, (params, r)
                code = await c.wait_closed(10)
                assert code == 4500, (params, code)
            finally:
                await c.close()
    run(go())


def test_accepted_token_variants(pubsub_herald):
    """Sanity for the rejection test: the same builder makes tokens that
    are accepted (typ absent, typ lower case, nbf in the past, a tenant of
    64 bytes, sub of 255 bytes)."""
    h = pubsub_herald
    secret = h.config["auth"]["hmac_secret"]
    now = int(time.time())
    good = [
        sign(claims(sub="a"), secret, header={"alg": "HS256"}),
        sign(claims(sub="b"), secret, header={"alg": "HS256", "typ": "jwt"}),
        sign(claims(sub="c", nbf=now - 5), secret),
        sign(claims(sub="d", tenant="t" * 64), secret),
        sign(claims(sub="s" * 255), secret),
        # HS384/HS512 with the same secret: accepted by the default
        # auth.algorithms (test_auth_keys.py checks a narrower set)
        sign(claims(sub="e"), secret, header={"alg": "HS384", "typ": "JWT"},
             digest=hashlib.sha384),
        sign(claims(sub="f"), secret, header={"alg": "HS512", "typ": "JWT"},
             digest=hashlib.sha512),
    ]

    async def go():
        for tok in good:
            c = await open_client(h.url, do_connect=False)
            r = await c.connect(tok)
            assert "result" in r, (tok, r)
            assert "result" in await c.subscribe("chat:ok"), tok
            await c.close()
    run(go())


def test_token_expiring_while_connected_closes_4003(pubsub_herald):
    h = pubsub_herald

    async def go():
        c = await open_client(h.url, do_connect=False)
        exp = int(time.time()) + 2
        t0 = time.time()
        r = await c.connect(token_for(h, exp_in=None, exp=exp))
        assert "result" in r, r
        assert "result" in await c.subscribe("chat:exp")
        code = await c.wait_closed(10)
        t1 = time.time()
        assert code == 4003, code
        # not before the expiry (exp has one-second resolution)
        assert t1 >= exp - 0.05, "closed %.2f s before exp" % (exp - t1)
        assert t1 - t0 < 8, t1 - t0
    run(go())


def test_commands_before_connect_get_401_and_connection_stays(pubsub_herald):
    h = pubsub_herald

    async def go():
        c = await open_client(h.url, do_connect=False)
        for method, params in (("subscribe", {"channel": "chat:a"}),
                               ("publish", {"channel": "chat:a", "data": 1}),
                               ("unsubscribe", {"channel": "chat:a"})):
            r = await c.call(method, params)
            assert r.get("error", {}).get("code") == 401, (method, r)
        # before connect only ping and connect exist (issue 17 item 9)
        r = await c.call("no-such-method", {})
        assert r.get("error", {}).get("code") == 401, r
        r = await c.call("ping")
        assert "result" in r, r
        r = await c.connect(token_for(h))
        assert "result" in r, r
        assert "result" in await c.subscribe("chat:a")
        assert "result" in await c.publish("chat:a", "hello")
        pubs = await c.wait_pubs("chat:a", 1)
        assert pubs[0]["data"] == "hello"
        # a second connect is a conflict, and the connection stays usable
        r = await c.connect(token_for(h))
        assert r.get("error", {}).get("code") == 409, r
        assert "result" in await c.call("ping")
        await c.close()
    run(go())


def test_no_connect_in_time_closes_4002(make_herald):
    h = make_herald(**pubsub_config(timeouts={"connect_ms": 500}))

    async def go():
        idle = await open_client(h.url, do_connect=False)
        pinger = await open_client(h.url, do_connect=False)
        t0 = time.monotonic()
        ok = await open_client(h.url, token_for(h))         # connects at once

        async def keep_pinging():
            # pings are allowed before connect but do not count as one
            try:
                while True:
                    r = await pinger.call("ping", timeout=5)
                    assert "result" in r, r
                    await asyncio.sleep(0.1)
            except Exception:
                pass
        ping_task = asyncio.ensure_future(keep_pinging())
        code_idle = await idle.wait_closed(10)
        t_idle = time.monotonic() - t0
        try:
            await asyncio.wait_for(ping_task, 10)
        except asyncio.TimeoutError:
            raise AssertionError("a client that only pings was not closed") from None
        code_pinger = pinger.ws.close_code
        assert code_idle == 4002, code_idle
        assert code_pinger == 4002, code_pinger
        assert t_idle >= 0.4, "closed after %.2f s, connect_ms is 500" % t_idle
        # the connected client is not affected
        await ok.drain(1.0)
        r = await ok.call("ping")
        assert "result" in r, r
        await ok.close()
    run(go())


def test_anonymous_mode(make_herald):
    h = make_herald(**pubsub_config(auth={"allow_anonymous": True}))

    async def go():
        anon = await open_client(h.url)                     # connect without a token
        bare = await open_client(h.url, do_connect=False)    # no connect at all
        user = await open_client(h.url, token_for(h))
        problems = []

        async def expect(c, name, method, ch, want):
            r = await (c.subscribe(ch) if method == "subscribe" else c.publish(ch, "x"))
            got = "result" if "result" in r else r.get("error", {}).get("code")
            if got != want:
                problems.append("%s client: %s %s: expected %s, got %r" % (name, method, ch, want, r))
        for c, name in ((bare, "never-connected"), (anon, "connected-without-token")):
            await expect(c, name, "subscribe", "public:news", "result")
            await expect(c, name, "subscribe", "open:talk", "result")
            await expect(c, name, "subscribe", "chat:room", 403)   # namespace not anonymous
            await expect(c, name, "subscribe", "plain", 403)       # "default" not anonymous
            await expect(c, name, "publish", "public:news", 403)   # anonymous, no publish
            await expect(c, name, "publish", "chat:room", 403)     # publish, not anonymous
        assert not problems, "anonymous clients:\n" + "\n".join(problems)
        r = await anon.publish("open:talk", "from anon")     # anonymous and publish
        assert "result" in r, r
        # a token holder may use the non-anonymous namespaces
        assert "result" in await user.subscribe("chat:room")
        assert "result" in await user.subscribe("public:news")
        assert "result" in await user.publish("chat:room", "u")
        for c in (anon, bare):
            pubs = await c.wait_pubs("open:talk", 1)
            assert [p["data"] for p in pubs] == ["from anon"], c.pushes
        await user.wait_pubs("chat:room", 1)
        for c in (anon, bare, user):
            await c.close()
    run(go())


def test_token_channel_allow_list(pubsub_herald):
    h = pubsub_herald

    async def go():
        c = await open_client(h.url, token_for(h, channels=["chat:lobby", "news:*"]))
        for ch in ("chat:lobby", "news:a", "news:b:c"):
            r = await c.subscribe(ch)
            assert "result" in r, (ch, r)
        for ch in ("chat:lobby2", "chat:lobb", "chat:other", "news", "newsx:a", "plain"):
            r = await c.subscribe(ch)
            assert r.get("error", {}).get("code") == 403, (ch, r)
            r = await c.publish(ch, "x")
            assert r.get("error", {}).get("code") == 403, (ch, r)
        r = await c.publish("news:a", "allowed")
        assert "result" in r, r
        pubs = await c.wait_pubs("news:a", 1)
        assert pubs[0]["data"] == "allowed"

        # an empty list allows nothing
        none = await open_client(h.url, token_for(h, channels=[]))
        r = await none.subscribe("chat:lobby")
        assert r.get("error", {}).get("code") == 403, r
        # a one-character prefix
        short = await open_client(h.url, token_for(h, channels=["c*"]))
        for ch in ("chat:lobby", "c"):
            assert "result" in await short.subscribe(ch), ch
        r = await short.subscribe("news:c")
        assert r.get("error", {}).get("code") == 403, r
        for x in (c, none, short):
            await x.close()
    run(go())
