"""Issue 15: public-key algorithms and PEM keys, algorithm confusion, the
claim policy (algorithms, aud, iss, leeway, maximum lifetime, the publish
claim), refresh on a live connection, secrets from files and the
development-secret guard.

Keys come from the openssl command (keyutil.KeyDir); tokens are signed by
python3-cryptography, independent of herald's code.
"""

import asyncio
import os
import subprocess
import time

import pytest

from harness import PUBSUB_CONFIG, REPO_ROOT, deep_merge, open_client, run
from jwtutil import claims, sign
from keyutil import KeyDir


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeyDir(tmp_path_factory.mktemp("keys"))


async def expect_refused(url, tok, code=401):
    c = await open_client(url, do_connect=False)
    try:
        r = await c.connect(tok)
        assert r.get("error", {}).get("code") == code, r
        assert await c.wait_closed(10) == 4500
    finally:
        await c.close()


async def expect_ok(url, tok):
    c = await open_client(url, do_connect=False)
    r = await c.connect(tok)
    assert "result" in r, r
    return c


def test_subscription_token_is_not_a_connection_token(make_herald):
    """A subscription token (it has a "channel" claim) usually has no
    "channels" allow-list: taken as a connection token it would open every
    channel to a user whose connection token allows only some. connect
    and refresh refuse it (401), and the connection keeps its own limits."""
    cfg = deep_merge(PUBSUB_CONFIG, {"namespaces": {"priv": {"subscribe_token": True}}})
    h = make_herald(**cfg)
    secret = h.config["auth"]["hmac_secret"]
    subtok = sign(claims(sub="alice", tenant="t1", channel="priv:a"), secret)

    async def go():
        await expect_refused(h.url, subtok)
        c = await expect_ok(h.url, sign(claims(sub="alice", tenant="t1",
                                               channels=["chat:lobby", "priv:*"]), secret))
        r = await c.call("refresh", {"token": subtok})
        assert r.get("error", {}).get("code") == 401, r
        r = await c.call("subscribe", {"channel": "chat:other"})
        assert r.get("error", {}).get("code") == 403, r
        # what it is for still works
        r = await c.call("subscribe", {"channel": "priv:a", "token": subtok})
        assert "result" in r, r
        await c.close()
    run(go())


def test_every_algorithm_with_its_own_key(make_herald, keys):
    h = make_herald(**deep_merge(PUBSUB_CONFIG, {"auth": {"public_keys": [
        {"kid": "r1", "pem_file": keys.pub_path("rsa")},
        {"kid": "e256", "pem": keys.pub_pem("p256")},
        {"pem_file": keys.pub_path("p384")},
        {"kid": "ed", "pem_file": keys.pub_path("ed")},
    ]}}))
    secret = h.config["auth"]["hmac_secret"]
    good = [("rsa", alg, "r1") for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")]
    good += [("rsa", "RS256", None), ("p256", "ES256", "e256"), ("p384", "ES384", None),
             ("ed", "EdDSA", "ed")]

    async def go():
        for name, alg, kid in good:
            tok = keys.token(name, alg, kid=kid, sub="alice", exp_in=600)
            c = await expect_ok(h.url, tok)
            assert c.info["expires_at"] > time.time() + 500, c.info
            assert c.info["refresh"] is True
            await c.close()
        bad = [
            # another RSA key under r1's kid, or without a kid
            keys.token("rsa2", "RS256", kid="r1"),
            keys.token("rsa2", "PS256"),
            # ES384 signature presented as ES256 (the P-256 key's family)
            keys.sign("p384", "ES384", claims(), header={"alg": "ES256", "kid": "e256"}),
            keys.token("ed2", "EdDSA", kid="ed"),
            # algorithm confusion: HS256 MACed with the RSA public key's
            # PEM text, as a naive verifier would take it for a secret
            sign(claims(), keys.pub_pem("rsa"), header={"alg": "HS256", "kid": "r1"}),
            sign(claims(), keys.pub_pem("rsa"), header={"alg": "HS256"}),
            # alg none under a real kid
            sign(claims(), secret, header={"alg": "none", "kid": "r1"}, signature=""),
        ]
        for tok in bad:
            await expect_refused(h.url, tok)
    run(go())


def test_policy_algorithms_aud_iss_leeway_lifetime(make_herald, keys):
    h = make_herald(**deep_merge(PUBSUB_CONFIG, {"auth": {
        "public_keys": [{"pem_file": keys.pub_path("rsa")}],
        "algorithms": ["RS256"],
        "audience": "herald-tests", "issuer": "https://idp.test",
        "leeway_s": 30, "max_lifetime_s": 3600,
    }}))
    secret = h.config["auth"]["hmac_secret"]
    now = int(time.time())
    ok = dict(aud="herald-tests", iss="https://idp.test")

    def rs(exp_in=600, **extra):
        return keys.sign("rsa", "RS256", claims(sub="bob", exp_in=exp_in, **dict(ok, **extra)))

    async def go():
        for tok in [rs(), rs(aud=["x", "herald-tests"]), rs(exp_in=-10),
                    rs(iat=now, exp_in=3000), rs(nbf=now + 20)]:
            c = await expect_ok(h.url, tok)
            await c.close()
        for tok in [
            sign(claims(sub="bob", **ok), secret),          # HS256 not allowed
            keys.sign("rsa", "PS256", claims(sub="bob", **ok)),  # nor PS256
            rs(aud="other"), rs(aud=["x"]),
            keys.sign("rsa", "RS256", claims(sub="bob", iss="https://idp.test")),  # no aud
            rs(iss="https://evil.test"),
            keys.sign("rsa", "RS256", claims(sub="bob", aud="herald-tests")),  # no iss
            rs(exp_in=-60),                                  # past the leeway
            rs(nbf=now + 120),
            rs(exp_in=7200),                                 # lifetime over 3600
            rs(iat=now - 100, exp_in=3600),                  # exp - iat = 3700
        ]:
            await expect_refused(h.url, tok)
    run(go())


def test_publish_claim(make_herald):
    h = make_herald(**deep_merge(PUBSUB_CONFIG, {"auth": {"require_publish_claim": True}}))
    secret = h.config["auth"]["hmac_secret"]

    def tok(**extra):
        return sign(claims(sub="carol", **extra), secret)

    async def go():
        cases = [
            (tok(), {"chat:a": 403}),                        # no claim: read-only
            (tok(publish=False), {"chat:a": 403}),
            (tok(publish=True), {"chat:a": None, "chat:b": None}),
            (tok(publish=["chat:a", "news:*"]), {"chat:a": None, "chat:b": 403, "news:x": None}),
            # the namespace still rules: ro allows no client publishing
            (tok(publish=True), {"ro:x": 403}),
        ]
        for t, want in cases:
            c = await expect_ok(h.url, t)
            for chan, code in want.items():
                r = await c.publish(chan, {"x": 1})
                if code is None:
                    assert "result" in r, (chan, r)
                else:
                    assert r.get("error", {}).get("code") == code, (chan, r)
            await c.close()
    run(go())


def test_refresh_extends_a_live_connection(make_herald):
    h = make_herald(**deep_merge(PUBSUB_CONFIG, {"auth": {"refresh_window_s": 2}}))
    secret = h.config["auth"]["hmac_secret"]

    async def go():
        first = sign(claims(sub="dave", tenant="acme", exp_in=4), secret)
        c = await expect_ok(h.url, first)
        exp = c.info["expires_at"]
        assert abs(exp - (time.time() + 4)) < 2 and c.info["refresh"] is True
        # the push comes refresh_window_s before exp
        await c.until(lambda: any("refresh" in p for p in c.pushes), 6, "the refresh push")
        push = [p for p in c.pushes if "refresh" in p][0]
        assert push == {"refresh": {"expires_at": exp}}, push
        assert time.time() < exp
        # another sub, another tenant, no token, a bad token: refused, open
        r = await c.call("refresh", {"token": sign(claims(sub="eve", tenant="acme"), secret)})
        assert r["error"]["code"] == 403, r
        r = await c.call("refresh", {"token": sign(claims(sub="dave", tenant="other"), secret)})
        assert r["error"]["code"] == 403, r
        r = await c.call("refresh", {"token": sign(claims(sub="dave"), secret)})
        assert r["error"]["code"] == 403, r
        r = await c.call("refresh", {"token": sign(claims(sub="dave", tenant="acme"), "x" * 40)})
        assert r["error"]["code"] == 401, r
        r = await c.call("refresh", {})
        assert r["error"]["code"] == 400, r
        # the right one moves exp
        new = sign(claims(sub="dave", tenant="acme", exp_in=120), secret)
        r = await c.call("refresh", {"token": new})
        assert r["result"]["expires_at"] >= exp + 100, r
        # alive past the first token's exp
        await asyncio.sleep(max(0, exp - time.time()) + 1.5)
        r = await c.call("ping")
        assert "result" in r, r
        await c.close()

        # without a refresh: the push, then 4003 at exp
        c = await expect_ok(h.url, sign(claims(sub="dave", exp_in=3), secret))
        code = await c.wait_closed(10)
        assert code == 4003, code
        assert any("refresh" in p for p in c.pushes), c.pushes
        assert time.time() >= c.info["expires_at"] - 0.5
    run(go())


# ---- secrets from files, development secrets ----------------------------

def herald_t(herald_bin, conf, *extra):
    p = subprocess.run([herald_bin, *extra, "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_shipped_dev_secrets_need_dev_mode(herald_bin):
    shipped = os.path.join(REPO_ROOT, "conf", "herald.json")
    rc, out = herald_t(herald_bin, shipped)
    assert rc == 1, out
    assert "$.auth.hmac_secret: is the shipped development secret" in out, out
    assert "--dev" in out and "change-me-dev" not in out, out
    rc, out = herald_t(herald_bin, shipped, "--dev")
    assert rc == 0, out
    assert "development mode" in out, out


def test_secret_from_file(make_herald, herald_bin, tmp_path):
    import json
    sec = tmp_path / "hmac"
    sec.write_text("file-secret-0123456789abcdef-0123456789\n")
    os.chmod(sec, 0o600)
    # (a None in the overrides removes the harness's inline secret)
    h = make_herald(start=False, **dict(PUBSUB_CONFIG, auth={
        "allow_anonymous": False, "hmac_secret": None, "hmac_secret_file": str(sec)}))
    os.chmod(h.conf_path, 0o600)
    h.start()

    async def go():
        c = await expect_ok(h.url, sign(claims(sub="f"), "file-secret-0123456789abcdef-0123456789"))
        await c.close()
        # the newline is not part of the secret
        await expect_refused(h.url, sign(claims(sub="f"), "file-secret-0123456789abcdef-0123456789\n"))
    run(go())

    # both inline and file, a missing file, a file readable by others
    conf = tmp_path / "t.json"
    base = {"auth": {"hmac_secret": "x" * 40, "hmac_secret_file": str(sec)}}
    conf.write_text(json.dumps(base))
    rc, out = herald_t(herald_bin, conf)
    assert rc == 1 and "not both" in out, out
    conf.write_text(json.dumps({"auth": {"hmac_secret_file": str(tmp_path / "nope")}}))
    rc, out = herald_t(herald_bin, conf)
    assert rc == 1 and "$.auth.hmac_secret_file" in out and "No such file" in out, out
    os.chmod(sec, 0o644)
    conf.write_text(json.dumps({"auth": {"hmac_secret_file": "hmac"}}))  # relative to the config
    rc, out = herald_t(herald_bin, conf)
    assert rc == 0, out
    assert "readable by other users" in out, out


def test_subscription_tokens(make_herald):
    cfg = deep_merge(PUBSUB_CONFIG, {"auth": {"refresh_window_s": 2},
                                     "namespaces": {"priv": {"subscribe_token": True}}})
    h = make_herald(**cfg)
    secret = h.config["auth"]["hmac_secret"]

    def subtok(channel, sub="alice", exp_in=60, **extra):
        return sign(claims(sub=sub, exp_in=exp_in, channel=channel, **extra), secret)

    async def go():
        c = await expect_ok(h.url, sign(claims(sub="alice", tenant="t1"), secret))

        async def sub(channel, tok):
            params = {"channel": channel}
            if tok is not None:
                params["token"] = tok
            return await c.call("subscribe", params)

        for tok, code in [(None, 403),
                          (subtok("priv:b", tenant="t1"), 403),          # another channel
                          (subtok("priv:a", sub="bob", tenant="t1"), 403),  # another user
                          (subtok("priv:a"), 403),                       # no tenant
                          (subtok("priv:a", tenant="t1", exp_in=-5), 401),  # expired
                          (sign(claims(sub="alice", tenant="t1", channel="priv:a"), "y" * 40), 401)]:
            r = await sub("priv:a", tok)
            assert r.get("error", {}).get("code") == code, (tok, r)
        # namespaces without the option ignore it
        assert "result" in await sub("chat:x", None)

        r = await sub("priv:a", subtok("priv:a", tenant="t1", exp_in=4))
        assert "result" in r, r
        r = await sub("priv:c", subtok("priv:c", tenant="t1", exp_in=3))
        assert "result" in r, r
        # refresh pushes, per channel, a window before each token's exp
        await c.until(lambda: {p.get("channel") for p in c.pushes if "refresh" in p} >= {"priv:a", "priv:c"},
                      6, "the refresh pushes")
        r = await c.call("refresh", {"channel": "priv:a", "token": subtok("priv:b", tenant="t1")})
        assert r["error"]["code"] == 403, r
        r = await c.call("refresh", {"channel": "chat:x", "token": subtok("chat:x", tenant="t1")})
        assert r["error"]["code"] == 400, r
        r = await c.call("refresh", {"channel": "priv:a", "token": subtok("priv:a", tenant="t1")})
        assert r["result"]["expires_at"] > time.time() + 30, r
        # priv:c was not refreshed: it ends with an unsubscribe push
        await c.until(lambda: any(p.get("channel") == "priv:c" and "unsubscribe" in p for p in c.pushes),
                      8, "priv:c ending")
        end = [p for p in c.pushes if p.get("channel") == "priv:c" and "unsubscribe" in p][0]
        assert end["unsubscribe"]["code"] == 401, end
        assert not any(p.get("channel") == "priv:a" and "unsubscribe" in p for p in c.pushes)
        # priv:a is still subscribed; priv:c may be subscribed again
        r = await sub("priv:a", subtok("priv:a", tenant="t1"))
        assert r.get("error", {}).get("code") == 409, r
        r = await sub("priv:c", subtok("priv:c", tenant="t1"))
        assert "result" in r, r
        await c.close()
    run(go())
