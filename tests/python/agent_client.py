#!/usr/bin/env python3
"""An independent client of revokd-agent, for the end-to-end tests: a gRPC stub generated
here from proto/ with grpcio-tools, tokens minted with PyJWT, plain urllib for HTTP.

Usage (each prints one JSON object):
  agent_client.py check GRPC_ADDR JTI
      revokd.v1.Revocation/Check (LOCAL) against the agent: {"revoked", "revision", "matched"}
  agent_client.py forward-auth HTTP_ADDR PRIVATE_KEY_PEM KID ISSUER AUDIENCE JTI SUB
      mints an RS256 token with PyJWT and sends GET /auth with it: {"status", "x_user_id",
      "www_authenticate"}

Needs: pip install grpcio grpcio-tools pyjwt cryptography
"""

import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def stubs():
    """Generates the revokd.v1 Python modules into a fresh directory and imports them."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="revokd-py-")
    proto = os.path.join(ROOT, "proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "revokd/v1/revokd.proto",
        ]
    )
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    for d in ("revokd", os.path.join("revokd", "v1")):
        open(os.path.join(out, d, "__init__.py"), "a").close()
    sys.path.insert(0, out)
    from revokd.v1 import revokd_pb2, revokd_pb2_grpc

    return revokd_pb2, revokd_pb2_grpc


def check(addr, jti):
    import grpc

    pb, rpc = stubs()
    with grpc.insecure_channel(addr) as channel:
        stub = rpc.RevocationStub(channel)
        resp = stub.Check(
            pb.CheckRequest(
                token=pb.TokenQuery(jti=jti), consistency=pb.CONSISTENCY_LOCAL
            ),
            timeout=5,
        )
    matched = resp.result.WhichOneof("matched")
    print(
        json.dumps(
            {
                "revoked": resp.result.revoked,
                "revision": resp.revision,
                "matched": matched,
            }
        )
    )


def forward_auth(addr, key_pem, kid, issuer, audience, jti, sub):
    import jwt

    with open(key_pem, "rb") as f:
        key = f.read()
    now = int(time.time())
    token = jwt.encode(
        {"iss": issuer, "aud": audience, "sub": sub, "jti": jti, "iat": now, "exp": now + 600},
        key,
        algorithm="RS256",
        headers={"kid": kid},
    )
    req = urllib.request.Request(
        f"http://{addr}/auth", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status, headers = resp.status, resp.headers
    except urllib.error.HTTPError as e:
        status, headers = e.code, e.headers
    print(
        json.dumps(
            {
                "status": status,
                "x_user_id": headers.get("X-User-Id"),
                "www_authenticate": headers.get("WWW-Authenticate"),
            }
        )
    )


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "check" and len(sys.argv) == 4:
        check(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 2 and sys.argv[1] == "forward-auth" and len(sys.argv) == 9:
        forward_auth(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
