"""HS256 JWTs for the integration tests, built by hand (hmac + hashlib +
base64url) so that the test side shares no code with herald's verifier.

    token(secret, sub="alice", exp_in=60, tenant="acme", channels=["news:*"])

The lower-level sign() takes any header and payload (even raw bytes that are
not JSON) and any digest, to build the tokens herald must reject.
"""

import base64
import hashlib
import hmac
import json
import time


def b64url(data):
    """Unpadded base64url (RFC 7515 section 2) of bytes or str."""
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _part(value):
    if isinstance(value, (bytes, str)):
        return b64url(value)
    return b64url(json.dumps(value, separators=(",", ":")))


def sign(payload, secret, header=None, digest=hashlib.sha256, signature=None):
    """header.payload.signature. header and payload are dicts (JSON-encoded)
    or bytes/str (encoded as given). The signature is HMAC(digest) over
    "header.payload" with secret, unless signature (bytes, or str taken
    as the already-encoded third part) is given."""
    if header is None:
        header = {"alg": "HS256", "typ": "JWT"}
    if isinstance(secret, str):
        secret = secret.encode()
    signing_input = _part(header) + "." + _part(payload)
    if signature is None:
        sig = b64url(hmac.new(secret, signing_input.encode("ascii"), digest).digest())
    elif isinstance(signature, bytes):
        sig = b64url(signature)
    else:
        sig = signature
    return signing_input + "." + sig


def claims(sub="user", exp_in=3600, now=None, **extra):
    """A claims dict: sub, exp = now + exp_in, plus extra claims. Pass
    sub=None or exp_in=None to leave the claim out."""
    now = int(time.time()) if now is None else now
    out = {}
    if sub is not None:
        out["sub"] = sub
    if exp_in is not None:
        out["exp"] = now + exp_in
    for k, v in extra.items():
        if v is not None:
            out[k] = v
    return out


def token(secret, sub="user", exp_in=3600, **extra):
    """A valid HS256 token (unless the arguments make it invalid)."""
    return sign(claims(sub=sub, exp_in=exp_in, **extra), secret)
