#!/usr/bin/env python3
"""Writes JWT interoperability fixtures made with PyJWT for revokd-client's validator.

Usage: scripts/gen-jwt-fixtures.py OUT_DIR     (needs: pip install pyjwt cryptography)

OUT_DIR receives:
  <kid>.pem         public key of each asymmetric test key
  jwks.json         every key as a JWK set (EC and OKP keys without "alg", to exercise
                    algorithm inference; RSA and oct keys with "alg")
  manifest.json     {"issuer", "audience", "keys": [...], "tokens": [...]}; each token has the
                    outcome the validator must give: "Ok" or a ValidationError variant name.

The committed copy lives in crates/revokd-client/tests/fixtures/pyjwt/; CI regenerates it
into a fresh directory and points REVOKD_JWT_FIXTURES at it, so every run also checks tokens
signed by a fresh PyJWT with fresh keys.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.pyjwt.test"
AUDIENCE = "revokd-fixtures"
FAR_FUTURE = 4102444800  # 2100-01-01
PAST = 1000000000  # 2001-09-09
IAT = 1700000000

RSA_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
HMAC_ALGS = {"HS256": 32, "HS384": 48, "HS512": 64}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def make_keys():
    """kid -> (alg, signing key, JWK dict, public PEM or None)."""
    keys = {}
    for alg in RSA_ALGS:
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(k.public_key()))
        jwk["alg"] = alg
        keys[alg.lower()] = (alg, k, jwk, public_pem(k))
    for alg, curve in [("ES256", ec.SECP256R1()), ("ES384", ec.SECP384R1())]:
        k = ec.generate_private_key(curve)
        jwk = json.loads(ECAlgorithm.to_jwk(k.public_key()))
        jwk.pop("alg", None)  # inferred from crv
        keys[alg.lower()] = (alg, k, jwk, public_pem(k))
    k = ed25519.Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(k.public_key()))
    jwk.pop("alg", None)  # inferred from crv
    keys["eddsa"] = ("EdDSA", k, jwk, public_pem(k))
    for alg, size in HMAC_ALGS.items():
        secret = secrets.token_bytes(size)
        keys[alg.lower()] = (alg, secret, {"kty": "oct", "k": b64url(secret), "alg": alg}, None)
    for kid, (_, _, jwk, _) in keys.items():
        jwk["kid"] = kid
        jwk["use"] = "sig"
    return keys


def claims(**overrides):
    c = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "azp": "client-1",
        "jti": secrets.token_hex(8),
        "iat": IAT,
        "exp": FAR_FUTURE,
    }
    c.update(overrides)
    return {k: v for k, v in c.items() if v is not None}


def sign(keys, kid, payload, alg=None):
    key_alg, key, _, _ = keys[kid]
    return jwt.encode(payload, key, algorithm=alg or key_alg, headers={"kid": kid})


def hs256_with_secret(secret: bytes, kid: str, payload) -> str:
    """HS256 by hand: PyJWT (rightly) refuses a PEM as an HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    keys = make_keys()

    tokens = []

    def add(name, token, expect):
        tokens.append({"name": name, "token": token, "expect": expect})

    for kid, (alg, _, _, _) in keys.items():
        add(f"valid {alg}", sign(keys, kid, claims()), "Ok")
    add("aud as an array", sign(keys, "es256", claims(aud=["other", AUDIENCE])), "Ok")

    add("expired", sign(keys, "rs256", claims(exp=PAST)), "Expired")
    add("nbf in the future", sign(keys, "es256", claims(nbf=FAR_FUTURE - 86400)), "NotYetValid")
    add("wrong audience", sign(keys, "hs256", claims(aud="someone-else")), "WrongAudience")
    add("wrong issuer", sign(keys, "eddsa", claims(iss="https://evil.test")), "WrongIssuer")
    add("missing jti", sign(keys, "ps256", claims(jti=None)), "MissingClaim")
    add("missing exp", sign(keys, "hs384", claims(exp=None)), "MissingClaim")

    # Signed by a key the validator does not have, under a kid it does have.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    add(
        "bad signature (other RSA key)",
        jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "rs256"}),
        "BadSignature",
    )
    valid = sign(keys, "es384", claims())
    head, payload, _ = valid.split(".")
    tampered = b64url(json.dumps(claims(sub="admin")).encode())
    add("bad signature (payload swapped)", f"{head}.{tampered}.{valid.split('.')[2]}", "BadSignature")

    add(
        "alg none",
        jwt.encode(claims(), None, algorithm="none", headers={"kid": "rs256"}),
        "AlgorithmNotAllowed",
    )
    add(
        "HS256 signed with the RS256 public key PEM",
        hs256_with_secret(keys["rs256"][3], "rs256", claims()),
        "AlgorithmNotAllowed",
    )
    add(
        "RS256 token under an ES256 key's kid",
        jwt.encode(claims(), keys["rs256"][1], algorithm="RS256", headers={"kid": "es256"}),
        "AlgorithmNotAllowed",
    )
    add("unknown kid", jwt.encode(claims(), keys["hs256"][1], algorithm="HS256", headers={"kid": "nope"}), "UnknownKey")
    add("no kid with several keys", jwt.encode(claims(), keys["hs256"][1], algorithm="HS256"), "AmbiguousKey")
    add("garbage", "definitely.not.a-jwt", "Malformed")

    manifest_keys = []
    for kid, (alg, key, _, pem) in keys.items():
        entry = {"kid": kid, "alg": alg}
        if pem is None:
            entry["secret_b64url"] = b64url(key)
        else:
            entry["pem"] = f"{kid}.pem"
            with open(os.path.join(out, entry["pem"]), "wb") as f:
                f.write(pem)
        manifest_keys.append(entry)

    with open(os.path.join(out, "jwks.json"), "w") as f:
        json.dump({"keys": [jwk for (_, _, jwk, _) in keys.values()]}, f, indent=2)
        f.write("\n")
    manifest = {
        "generator": f"PyJWT {jwt.__version__}",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "keys": manifest_keys,
        "tokens": tokens,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"wrote {len(tokens)} tokens and {len(manifest_keys)} keys to {out}")


if __name__ == "__main__":
    main()
