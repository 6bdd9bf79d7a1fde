#!/usr/bin/env bash
# Local revokd cluster on loopback, for trying things out.
#
#   scripts/cluster.sh up [N]   build revokd (release) and start N nodes (default 3), wait
#                               until every node reports SERVING, print how to reach them
#   scripts/cluster.sh down     stop exactly the processes `up` started (by saved PID)
#   scripts/cluster.sh status   show each node's PID and whether it is running
#
# Environment: REVOKD_CLUSTER_DIR (default ./.cluster) holds data, logs and PIDs;
# REVOKD_BASE_PORT (default 7001): node i listens on BASE+i-1 and serves metrics on
# BASE+100+i-1; REVOKD_BIN: use this binary instead of building target/release/revokd.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${REVOKD_CLUSTER_DIR:-$root/.cluster}
base=${REVOKD_BASE_PORT:-7001}
bin=${REVOKD_BIN:-$root/target/release/revokd}

up() {
    local n=${1:-3}
    if [ -e "$dir/nodes" ]; then
        echo "a cluster is already recorded in $dir; run '$0 down' first" >&2
        exit 1
    fi
    if [ -z "${REVOKD_BIN:-}" ]; then
        (cd "$root" && cargo build --release -p revokd --quiet)
    fi
    mkdir -p "$dir"
    local initial=""
    for i in $(seq 1 "$n"); do
        initial+="${initial:+,}$i=127.0.0.1:$((base + i - 1))"
    done
    : > "$dir/nodes"
    for i in $(seq 1 "$n"); do
        local port=$((base + i - 1)) mport=$((base + 100 + i - 1))
        setsid "$bin" --id "$i" --listen "127.0.0.1:$port" --data-dir "$dir/node$i" \
            --initial-cluster "$initial" --metrics-listen "127.0.0.1:$mport" \
            > "$dir/node$i.log" 2>&1 < /dev/null &
        echo "$i $! $port $mport" >> "$dir/nodes"
    done
    for i in $(seq 1 "$n"); do
        local waited=0
        until grep -q "serving=true" "$dir/node$i.log" 2>/dev/null; do
            if ! kill -0 "$(awk -v i="$i" '$1==i {print $2}' "$dir/nodes")" 2>/dev/null; then
                echo "node $i exited; its log:" >&2
                tail -n 20 "$dir/node$i.log" >&2
                down
                exit 1
            fi
            sleep 0.1
            waited=$((waited + 1))
            if [ "$waited" -gt 300 ]; then
                echo "node $i not serving after 30 s; see $dir/node$i.log" >&2
                down
                exit 1
            fi
        done
    done
    echo "revokd cluster of $n nodes is up (data and logs in $dir):"
    while read -r id pid port mport; do
        echo "  node $id  grpc 127.0.0.1:$port  metrics http://127.0.0.1:$mport/metrics  pid $pid"
    done < "$dir/nodes"
    echo "try: grpcurl -plaintext -d '{\"token\":{\"jti\":\"abc\",\"expires_at\":'\$((\$(date +%s)+3600))'}}' 127.0.0.1:$base revokd.v1.Revocation/Revoke"
    echo "stop: $0 down"
}

down() {
    [ -f "$dir/nodes" ] || { echo "no cluster recorded in $dir"; return 0; }
    while read -r id pid _; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done < "$dir/nodes"
    for _ in $(seq 1 100); do
        local alive=0
        while read -r id pid _; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done < "$dir/nodes"
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    while read -r id pid _; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "node $id (pid $pid) ignored SIGTERM; killing" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done < "$dir/nodes"
    rm -f "$dir/nodes"
    echo "cluster stopped (data kept in $dir; remove it to start fresh)"
}

status() {
    [ -f "$dir/nodes" ] || { echo "no cluster recorded in $dir"; return 0; }
    while read -r id pid port _; do
        if kill -0 "$pid" 2>/dev/null; then state=running; else state=stopped; fi
        echo "node $id  127.0.0.1:$port  pid $pid  $state"
    done < "$dir/nodes"
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up [N] | down | status" >&2; exit 2 ;;
esac
