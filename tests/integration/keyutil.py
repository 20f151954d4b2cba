"""Asymmetric JWTs for the integration tests: keys made by the openssl
command, tokens signed with python3-cryptography (no code shared with
herald's verifier), JWK Sets built from the public keys.

    keys = KeyDir(tmp_path)            # rsa, rsa2, p256, p384, ed
    tok = keys.token("rsa", "RS256", sub="alice", kid="k1")
    jwks = keys.jwks([("rsa", "k1"), ("ed", "e1")])
"""

import base64
import json
import os
import subprocess

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from jwtutil import b64url, claims

GENPKEY = {
    "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "rsa2": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "ed": ["-algorithm", "ED25519"],
    "ed2": ["-algorithm", "ED25519"],
}

HASH = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


class KeyDir:
    def __init__(self, path, names=None):
        self.dir = str(path)
        os.makedirs(self.dir, exist_ok=True)
        for name in names or GENPKEY:
            priv = self.priv_path(name)
            if not os.path.exists(priv):
                subprocess.run(["openssl", "genpkey"] + GENPKEY[name] + ["-out", priv],
                               check=True, capture_output=True)
                subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out",
                                self.pub_path(name)], check=True, capture_output=True)

    def priv_path(self, name):
        return os.path.join(self.dir, name + ".pem")

    def pub_path(self, name):
        return os.path.join(self.dir, name + ".pub")

    def pub_pem(self, name):
        with open(self.pub_path(name)) as f:
            return f.read()

    def private(self, name):
        with open(self.priv_path(name), "rb") as f:
            return serialization.load_pem_private_key(f.read(), None)

    def sign(self, name, alg, payload, kid=None, header=None):
        hdr = {"alg": alg, "typ": "JWT"}
        if kid is not None:
            hdr["kid"] = kid
        if header is not None:
            hdr = header
        signing_input = (b64url(json.dumps(hdr, separators=(",", ":"))) + "." +
                         b64url(json.dumps(payload, separators=(",", ":")))).encode()
        key = self.private(name)
        if alg.startswith("RS"):
            sig = key.sign(signing_input, padding.PKCS1v15(), HASH[alg[2:]]())
        elif alg.startswith("PS"):
            h = HASH[alg[2:]]
            sig = key.sign(signing_input,
                           padding.PSS(mgf=padding.MGF1(h()), salt_length=h.digest_size), h())
        elif alg.startswith("ES"):
            der = key.sign(signing_input, ec.ECDSA(HASH[alg[2:]]()))
            r, s = utils.decode_dss_signature(der)
            n = 32 if alg == "ES256" else 48
            sig = r.to_bytes(n, "big") + s.to_bytes(n, "big")
        elif alg == "EdDSA":
            sig = key.sign(signing_input)
        else:
            raise ValueError(alg)
        return signing_input.decode() + "." + b64url(sig)

    def token(self, name, alg, kid=None, sub="user", exp_in=3600, **extra):
        return self.sign(name, alg, claims(sub=sub, exp_in=exp_in, **extra), kid=kid)

    def jwk(self, name, kid=None, **extra):
        pub = self.private(name).public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            nums = pub.public_numbers()
            out = {"kty": "RSA",
                   "n": b64url(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")),
                   "e": b64url(nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big"))}
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            nums = pub.public_numbers()
            n = 32 if pub.curve.name == "secp256r1" else 48
            out = {"kty": "EC", "crv": "P-256" if n == 32 else "P-384",
                   "x": b64url(nums.x.to_bytes(n, "big")), "y": b64url(nums.y.to_bytes(n, "big"))}
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            out = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        else:
            raise ValueError(name)
        if kid is not None:
            out["kid"] = kid
        out.update(extra)
        return out

    def jwks(self, pairs):
        return {"keys": [self.jwk(name, kid) for name, kid in pairs]}
