#!/usr/bin/env bash
# Docker end-to-end test of the shipped image and deploy/compose/compose-3.yml, the secure
# (TLS) configuration as shipped: kill the leader's container while revokes flow, restart it,
# and check that every node holds exactly the acknowledged ids.
#
#   scripts/compose-smoke.sh
#
# Skips (exit 0, "compose smoke skipped: <reason>") when docker or compose is missing or the
# daemon does not answer. Otherwise it needs target/release/revokd, revokctl and revokd-devca
# (REVOKD_BIN, REVOKCTL_BIN, REVOKD_DEVCA_BIN override) and the host ports 127.0.0.1:7201-7203
# and 9201-9203.
#
#   0. a fresh development CA and certificates for revokd-1..3 (each valid for its node's name,
#      localhost and 127.0.0.1) from scripts/gen-certs.sh, in a temporary directory that
#      compose-3.yml mounts as /certs (REVOKD_CERTS); the keys are made readable by the
#      image's uid 10001 (chown as root, else a copy readable by all in that private
#      directory). Every revokctl call trusts that CA (--tls-ca); metrics stay plain HTTP.
#   1. scripts/docker-image.sh (base image only if missing), then `up -d` under a project name
#      of its own; wait until every node answers Status over TLS with a leader and no lag, and
#      check that a plaintext call is refused.
#   2. import $SMOKE_IDS ids (NDJSON) through node 1's published port.
#   3. find the leader, `docker kill` its container while a writer revokes ids one by one
#      through a surviving node; time how long until a survivor names a new leader.
#   4. import $SMOKE_IDS_AFTER more ids through the other survivor; `docker start` the killed
#      container and wait until it has caught up.
#   5. every write whose outcome was not acknowledged is retried (writes are idempotent), so
#      the expected set is every id the test tried. On each node, through its own port only:
#      Status counts, the metrics gauge, the node's own export (the exact set: nothing lost,
#      nothing extra) and LINEARIZABLE checks of sampled ids plus one never written.
#   6. every container's own health check (revokctl over TLS with REVOKD_TLS_CA, see
#      deploy/docker/Dockerfile) reports healthy.
#
# From the host only the published ports are reachable: the advertised names (revokd-1:7000,
# ...) that revokctl learns from Status do not resolve here. So a revokctl call given one
# port reads that node's own state. (Those failed lookups can each cost up to the resolver's
# timeout on a host whose DNS server drops queries; the leader change is therefore timed on
# the nodes' metrics, not with revokctl.) The project (containers, network, volumes) is
# removed on exit, whatever happens, and so is the temporary directory with the
# certificates; nothing else is touched.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
revokctl=${REVOKCTL_BIN:-$root/target/release/revokctl}
devca=${REVOKD_DEVCA_BIN:-$root/target/release/revokd-devca}
compose_file=$root/deploy/compose/compose-3.yml
ids_before=${SMOKE_IDS:-200}
ids_after=${SMOKE_IDS_AFTER:-100}
nodes=3
grpc_port() { echo $((7200 + $1)); }
metrics_port() { echo $((9200 + $1)); }

say() { echo "compose-smoke: $*"; }
skip() { echo "compose smoke skipped: $*"; exit 0; }
fail() { echo "compose-smoke: FAILED: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }

command -v docker >/dev/null 2>&1 || skip "docker is not installed"
timeout 20 docker info >/dev/null 2>&1 || skip "the docker daemon does not answer"
if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose_cmd=(docker-compose)
else
    skip "neither the docker compose plugin nor docker-compose is installed"
fi
[ -x "$revokctl" ] || fail "$revokctl is missing: cargo build --release -p revokd -p revokctl"
[ -x "$devca" ] || fail "$devca is missing: cargo build --release -p revokd-testkit --bin revokd-devca"
for i in $(seq 1 "$nodes"); do
    for port in "$(grpc_port "$i")" "$(metrics_port "$i")"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            fail "127.0.0.1:$port is in use (another compose cluster of deploy/compose?)"
        fi
    done
done

"$root/scripts/docker-image.sh"

project=revokd-smoke-$$-$RANDOM
work=$(mktemp -d)
certs=$work/certs
# compose-3.yml mounts ${REVOKD_CERTS:-./certs} as /certs.
compose() { REVOKD_CERTS=$certs "${compose_cmd[@]}" -p "$project" -f "$compose_file" "$@"; }
writer_pid=""
cleanup() {
    local rc=$?
    if [ -n "$writer_pid" ]; then kill "$writer_pid" 2>/dev/null || true; fi
    if [ "$rc" -ne 0 ]; then
        echo "compose-smoke: last log lines of each node:" >&2
        compose logs --no-color --tail 15 >&2 2>&1 || true
    fi
    say "tearing down project $project"
    compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A development CA of this run only. Each node certificate is valid for its own name
# (revokd-i, what its peers dial), localhost and 127.0.0.1 (the published ports).
REVOKD_DEVCA_BIN=$devca REVOKD_CERT_SANS="" REVOKD_CERT_ADMINS="" \
    "$root/scripts/gen-certs.sh" "$certs" revokd-1 revokd-2 revokd-3 >/dev/null \
    || fail "scripts/gen-certs.sh $certs revokd-1 revokd-2 revokd-3"
for i in $(seq 1 "$nodes"); do
    for f in ca.pem "revokd-$i.pem" "revokd-$i-key.pem"; do
        [ -s "$certs/$f" ] || fail "scripts/gen-certs.sh wrote no $certs/$f"
    done
done
# The containers run as uid 10001 and mount this directory read-only: certificates readable
# by all, keys owned by 10001 and kept 0600 (as root), or readable by all when chown is not
# allowed (the directory itself lives in the private $work).
chmod 0755 "$certs"
chmod 0644 "$certs"/ca.pem "$certs"/revokd-?.pem
if ! chown 10001:10001 "$certs"/revokd-?-key.pem 2>/dev/null; then
    chmod 0644 "$certs"/revokd-?-key.pem
fi
ca=$certs/ca.pem

# revokctl against node $1's published port only, over TLS (the certificates are valid for
# 127.0.0.1).
ctl() {
    local i=$1
    shift
    "$revokctl" --endpoints "127.0.0.1:$(grpc_port "$i")" --tls-ca "$ca" "$@"
}
# A field of a flat JSON object on stdin (revokctl -o json prints one per line).
field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" | head -n 1; }
# Node $1's own Status row, as JSON (empty if it does not answer).
node_status() {
    ctl "$1" --timeout 2s -o json status 2>/dev/null \
        | grep -F "\"address\":\"127.0.0.1:$(grpc_port "$1")\"" | grep -F '"health":"ok"' || true
}
container() { compose ps -q "revokd-$1"; }
# A gauge from node $1's /metrics (empty if it does not answer within a second).
metric() {
    curl -fsS -m 1 "http://127.0.0.1:$(metrics_port "$1")/metrics" 2>/dev/null \
        | awk -v m="$2" '$1 == m {print $2}' || true
}

# Waits (up to $2 seconds) until node $1 knows a leader and reports no lag.
wait_serving() {
    local i=$1 limit=$2 start s
    start=$(now_ms)
    while :; do
        s=$(node_status "$i")
        if [ -n "$s" ] && [ "$(field leader <<<"$s")" != 0 ] && [ "$(field lag <<<"$s")" = 0 ]; then
            return 0
        fi
        [ $(($(now_ms) - start)) -lt $((limit * 1000)) ] || fail "node $i not serving after ${limit}s (status: ${s:-no answer})"
        sleep 0.2
    done
}

ndjson() { # prefix count > file
    local i
    for i in $(seq 1 "$2"); do printf '{"jti":"%s-%04d","expires_at":"+2h","reason":"compose smoke"}\n' "$1" "$i"; done
}
import_ids() { # node file
    local out
    out=$(ctl "$1" --timeout 20s -o json import "$2") || fail "import of $2 through node $1: $out"
    local lines applied
    lines=$(tail -n 1 <<<"$out" | field lines)
    applied=$(tail -n 1 <<<"$out" | field applied)
    [ "$lines" = "$applied" ] || fail "import of $2 through node $1 applied $applied of $lines lines: $out"
    sed -n 's/.*"jti":"\([^"]*\)".*/\1/p' "$2" >> "$work/acked"
}

t0=$(now_ms)
say "starting 3 nodes (project $project)"
out=$(compose up -d 2>&1) || fail "compose up: $out"
for i in $(seq 1 "$nodes"); do wait_serving "$i" 60; done
say "all nodes serving over TLS after $(($(now_ms) - t0)) ms"
# The secure configuration refuses a plaintext client (no --tls-ca).
if out=$(env -u REVOKD_TLS_CA "$revokctl" --endpoints "127.0.0.1:$(grpc_port 1)" --timeout 2s -o json \
    check plaintext-probe 2>&1); then
    fail "node 1 answered a plaintext call: $out"
fi
say "a plaintext call to node 1 is refused"

: > "$work/acked"
: > "$work/tried"
: > "$work/during"
ndjson before "$ids_before" > "$work/before.ndjson"
sed -n 's/.*"jti":"\([^"]*\)".*/\1/p' "$work/before.ndjson" >> "$work/tried"
import_ids 1 "$work/before.ndjson"
say "imported $ids_before ids through node 1"

leader=$(metric 1 revokd_raft_leader_id)
term=$(metric 1 revokd_raft_term)
if [ -z "$leader" ] || [ "$leader" = 0 ]; then fail "node 1 knows no leader"; fi
survivors=()
for i in $(seq 1 "$nodes"); do [ "$i" = "$leader" ] || survivors+=("$i"); done
a=${survivors[0]} b=${survivors[1]}

# One-by-one revokes through survivor $a while the leader dies. Each line: id, exit code.
(
    n=0
    while [ ! -e "$work/stop" ]; do
        n=$((n + 1))
        id=$(printf 'during-%04d' "$n")
        rc=0
        ctl "$a" --timeout 10s -o json revoke "$id" --expires-at +2h --reason "during kill" \
            > /dev/null 2>&1 || rc=$?
        echo "$id $rc" >> "$work/during"
    done
) &
writer_pid=$!
sleep 1

say "killing the leader, node $leader (term $term)"
# Kept: `compose ps` of Compose v2 lists running containers only.
killed_container=$(container "$leader")
docker kill "$killed_container" >/dev/null
killed_at=$(now_ms)
# Polled on the survivors' metrics: node-local, and no name lookups (see the header).
new_leader=""
while :; do
    for i in "$a" "$b"; do
        l=$(metric "$i" revokd_raft_leader_id)
        if [ -n "$l" ] && [ "$l" != 0 ] && [ "$l" != "$leader" ]; then
            new_leader=$l
            new_term=$(metric "$i" revokd_raft_term)
            break 2
        fi
    done
    [ $(($(now_ms) - killed_at)) -lt 30000 ] || fail "no new leader 30 s after the kill"
    sleep 0.05
done
election_ms=$(($(now_ms) - killed_at))
say "new leader: node $new_leader (term $new_term), named ${election_ms} ms after the kill"
sleep 1
touch "$work/stop"
wait "$writer_pid" || true
writer_pid=""

ndjson after "$ids_after" > "$work/after.ndjson"
sed -n 's/.*"jti":"\([^"]*\)".*/\1/p' "$work/after.ndjson" >> "$work/tried"
import_ids "$b" "$work/after.ndjson"
say "imported $ids_after ids through node $b with node $leader down"

during_total=$(wc -l < "$work/during")
during_acked=$(awk '$2 == 0' "$work/during" | wc -l)
awk '{print $1}' "$work/during" >> "$work/tried"
awk '$2 == 0 {print $1}' "$work/during" >> "$work/acked"
# Unacknowledged writes may or may not have landed: retry them (idempotent) so that the
# expected set is exactly every id tried.
awk '$2 != 0 {print $1}' "$work/during" | while read -r id; do
    ctl "$b" --timeout 10s -o json revoke "$id" --expires-at +2h --reason "during kill" >/dev/null \
        || fail "retry of $id through node $b"
done
say "revoked $during_acked of $during_total ids one by one through node $a during the kill (the rest retried)"

say "restarting node $leader"
restarted_at=$(now_ms)
docker start "$killed_container" >/dev/null
sort -u "$work/tried" > "$work/expected"
expected=$(wc -l < "$work/expected")
[ "$expected" -eq $((ids_before + ids_after + during_total)) ] || fail "ids tried are not unique"
# Caught up: serving, and holding as many ids as the survivors.
while :; do
    s=$(node_status "$leader")
    if [ -n "$s" ] && [ "$(field leader <<<"$s")" != 0 ] && [ "$(field lag <<<"$s")" = 0 ] \
        && [ "$(field tokens <<<"$s")" = "$expected" ]; then
        break
    fi
    [ $(($(now_ms) - restarted_at)) -lt 60000 ] || fail "node $leader not caught up 60 s after restart (status: ${s:-no answer})"
    sleep 0.1
done
say "node $leader caught up $(($(now_ms) - restarted_at)) ms after docker start"

# Every acknowledged id must be in the expected set (it is, by construction), and every node
# must hold exactly the expected set.
sort -u "$work/acked" | comm -23 - "$work/expected" | grep -q . && fail "acknowledged ids outside the expected set"
for i in $(seq 1 "$nodes"); do wait_serving "$i" 30; done
for i in $(seq 1 "$nodes"); do
    s=$(node_status "$i")
    [ "$(field tokens <<<"$s")" = "$expected" ] || fail "node $i Status counts $(field tokens <<<"$s") ids, expected $expected"
    gauge=$(curl -fsS "http://127.0.0.1:$(metrics_port "$i")/metrics" | awk '$1 == "revokd_revoked_tokens" {print $2}')
    [ "$gauge" = "$expected" ] || fail "node $i revokd_revoked_tokens is $gauge, expected $expected"
    ctl "$i" --timeout 20s export --file "$work/export-$i" 2>/dev/null || fail "export from node $i"
    sed -n 's/.*"jti":"\([^"]*\)".*/\1/p' "$work/export-$i" | sort > "$work/have-$i"
    if ! diff -q "$work/expected" "$work/have-$i" >/dev/null; then
        echo "missing on node $i:" >&2; comm -23 "$work/expected" "$work/have-$i" | head >&2
        echo "extra on node $i:" >&2; comm -13 "$work/expected" "$work/have-$i" | head >&2
        fail "node $i's export differs from the ids written"
    fi
    # Sampled ids from each phase, and one never written, read linearizably on this node.
    for id in before-0001 "$(printf 'before-%04d' "$ids_before")" "$(awk 'NR == 1' "$work/during" | cut -d' ' -f1)" \
        "$(tail -n 1 "$work/during" | cut -d' ' -f1)" "after-0001" "$(printf 'after-%04d' "$ids_after")"; do
        r=$(ctl "$i" -o json check "$id" --linearizable) || fail "check $id on node $i"
        [ "$(field revoked <<<"$r")" = true ] || fail "node $i: $id is not revoked: $r"
    done
    r=$(ctl "$i" -o json check never-written --linearizable) || fail "check never-written on node $i"
    [ "$(field revoked <<<"$r")" = false ] || fail "node $i: never-written reads as revoked: $r"
done
say "every node holds exactly the $expected ids written (export, Status, metrics), linearizable checks agree"

# The image's own health check talks TLS to its node (REVOKD_TLS_CA): every container,
# including the restarted one, must turn healthy (checks run every 10 s).
health_from=$(now_ms)
for i in $(seq 1 "$nodes"); do
    while :; do
        h=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$(container "$i")" 2>/dev/null || true)
        [ "$h" = healthy ] && break
        [ $(($(now_ms) - health_from)) -lt 60000 ] || fail "node $i's container health is '${h:-none}' after 60 s"
        sleep 0.5
    done
done
say "every container's health check (revokctl over TLS) reports healthy"
say "PASS: ids written $expected ($ids_before before the kill, $during_total during, $ids_after after)," \
    "new leader ${election_ms} ms after the kill, run time $(($(now_ms) - t0)) ms"
