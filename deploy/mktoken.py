#!/usr/bin/env python3
"""Make an HS256 JWT for herald from the command line (standard library only).

    deploy/mktoken.py --sub alice                   # secret from conf/herald.json
    deploy/mktoken.py --sub bob --tenant acme --ttl 600 --channel 'chat:*'
    deploy/mktoken.py --sub carol --secret "$SECRET"

For development and tests: in production your backend signs tokens with the
same secret (auth.hmac_secret) using any JWT library.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims, secret):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest()
    return head + "." + body + "." + b64url(mac)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sub", required=True, help="user id (the sub claim)")
    ap.add_argument("--tenant", help="tenant claim")
    ap.add_argument("--channel", action="append", default=None,
                    help="allow-list entry (repeat; 'news:*' is a prefix)")
    ap.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default 3600)")
    ap.add_argument("--secret", help="HMAC secret (default: auth.hmac_secret of --config)")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..",
                                                     "conf", "herald.json"))
    a = ap.parse_args()
    secret = a.secret
    if secret is None:
        with open(a.config) as f:
            secret = json.load(f).get("auth", {}).get("hmac_secret")
        if not secret:
            sys.exit("no auth.hmac_secret in %s; pass --secret" % a.config)
    claims = {"sub": a.sub, "exp": int(time.time()) + a.ttl}
    if a.tenant:
        claims["tenant"] = a.tenant
    if a.channel:
        claims["channels"] = a.channel
    print(sign(claims, secret))


if __name__ == "__main__":
    main()
