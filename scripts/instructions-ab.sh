#!/usr/bin/env bash
# Node instructions per operation, counted by valgrind's callgrind: an A/B of two revokd
# binaries that does not depend on how busy this shared machine is (the count for the same
# binary and load repeats to well under 1%, unlike seconds or CPU ticks).
#
#   scripts/instructions-ab.sh OLD_REVOKD NEW_REVOKD [CHECKS] [REVOKES]
#
# For each binary and set-up (plaintext; TLS; TLS with admin authorization, a read scope and
# an RS256 bearer token on every call, minted by PyJWT), starts a one-node cluster under callgrind,
# warms it up, zeroes the counters, drives CHECKS (default 4000) LOCAL `Check`s and REVOKES
# (default 300) durable revokes with `revokctl bench` (4 workers), and prints the node's
# instructions per operation for each, then the ratio NEW / OLD. revokctl and revokd-devca
# come from target/release (build them first). Uses ports 17501-17502 and a temp dir; stops
# only the nodes it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=${1:?usage: $0 OLD_REVOKD NEW_REVOKD [CHECKS] [REVOKES]}
new=${2:?usage: $0 OLD_REVOKD NEW_REVOKD [CHECKS] [REVOKES]}
checks=${3:-4000}
revokes=${4:-300}
revokctl=$root/target/release/revokctl
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
work=$(mktemp -d)
node_pid=""
cleanup() {
    if [ -n "$node_pid" ]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
"$root/target/release/revokd-devca" --out "$work/certs" --node node1 >/dev/null
# An RS256 key pair and a token with both scopes, valid for an hour (PyJWT, as .ci/run installs).
openssl genrsa -out "$work/auth.key" 2048 2>/dev/null
openssl rsa -in "$work/auth.key" -pubout -out "$work/auth.pub" 2>/dev/null
python3 - "$work" <<'PY'
import sys, time, jwt
work = sys.argv[1]
now = int(time.time())
claims = {"iss": "ab-issuer", "aud": "revokd", "sub": "ab-admin", "jti": "ab-token",
          "scope": "revokd:admin revokd:read", "iat": now, "nbf": now, "exp": now + 3600}
with open(f"{work}/token", "w") as f:
    f.write(jwt.encode(claims, open(f"{work}/auth.key").read(), algorithm="RS256"))
PY

# Total instructions (Ir) in a callgrind dump.
instructions() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }

# measure BINARY SETUP -> "checks_ir revokes_ir"
measure() {
    local bin=$1 setup=$2 port=17501 data="$work/data-$RANDOM" out="$work/cg"
    local node_flags=() ctl=(--endpoints "127.0.0.1:$port" --timeout 60s)
    if [ "$setup" != plaintext ]; then
        node_flags=(--tls-cert "$work/certs/node1.pem" --tls-key "$work/certs/node1-key.pem" --tls-ca "$work/certs/ca.pem")
        ctl+=(--tls-ca "$work/certs/ca.pem")
    fi
    if [ "$setup" = tls-token ]; then
        node_flags+=(--auth-key "$work/auth.pub" --auth-issuer ab-issuer --auth-audience revokd --auth-read-scope revokd:read)
        ctl+=(--token-file "$work/token")
    fi
    rm -f "$out".*
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" --dump-instr=no \
        "$bin" --id 1 --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$((port + 1))" \
        --data-dir "$data" "${node_flags[@]}" >"$work/node.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 1 600); do
        "$revokctl" "${ctl[@]}" status >/dev/null 2>&1 && break
        sleep 0.2
    done
    "$revokctl" "${ctl[@]}" bench check --count 500 --concurrency 4 >/dev/null
    "$revokctl" "${ctl[@]}" bench revoke --count 50 --concurrency 4 >/dev/null
    callgrind_control -z "$node_pid" >/dev/null
    "$revokctl" "${ctl[@]}" bench check --count "$checks" --concurrency 4 >/dev/null
    callgrind_control -d checks "$node_pid" >/dev/null
    callgrind_control -z "$node_pid" >/dev/null
    "$revokctl" "${ctl[@]}" bench revoke --count "$revokes" --concurrency 4 >/dev/null
    callgrind_control -d revokes "$node_pid" >/dev/null
    kill "$node_pid"; wait "$node_pid" 2>/dev/null || true; node_pid=""
    local c r
    c=$(instructions "$(ls "$out".*.1 2>/dev/null || ls "$out".*-01 | head -n 1)")
    r=$(instructions "$(ls "$out".*.2 2>/dev/null || ls "$out".*-02 | head -n 1)")
    echo "$c $r"
}

printf '| set-up | op | old instr/op | new instr/op | new / old |\n|---|---|---:|---:|---:|\n'
for setup in plaintext tls tls-token; do
    read -r oc orv < <(measure "$old" "$setup")
    read -r nc nrv < <(measure "$new" "$setup")
    awk -v s="$setup" -v oc="$oc" -v nc="$nc" -v orv="$orv" -v nrv="$nrv" -v c="$checks" -v r="$revokes" 'BEGIN {
        printf "| %s | Check LOCAL | %.0f | %.0f | %.3fx |\n", s, oc / c, nc / c, nc / oc
        printf "| %s | Revoke | %.0f | %.0f | %.3fx |\n", s, orv / r, nrv / r, nrv / orv
    }'
done
