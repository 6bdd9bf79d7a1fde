#!/usr/bin/env bash
# The same revocation workloads against revokd, etcd and Redis on loopback, in one run:
# durable writes (etcd with a plain put and with a lease), reads (revokd's local replica,
# remote Check LOCAL and LINEARIZABLE, CheckBatch; Redis GET and pipelined GETs; etcd
# serializable and linearizable get; a bare tonic unary call as the ceiling) and propagation to
# a validator (revokd watch vs etcd watch). Installs the peers from Debian's packages if they
# are missing, starts each system fresh for each workload, stops what it started, and prints a
# Markdown table for BENCHMARKS.md. Flags go to revokd-compare (--secs, --clients, --entries,
# --propagation, --etcd-connections, --batch); see `revokd-compare --help`.
set -euo pipefail
cd "$(dirname "$0")/.."

install() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "== installing $2" >&2
        apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
    fi
}
install redis-server redis-server
install etcd etcd-server

# etcd-client compiles etcd's protos with protoc: use the vendored one our build already
# downloads (no system protoc).
cargo fetch --quiet
PROTOC=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*protoc-bin-vendored-linux-x86_64-*/bin/protoc' | head -n 1)
if [ -z "$PROTOC" ]; then
    echo "compare.sh: the vendored protoc was not found under ${CARGO_HOME:-$HOME/.cargo}/registry/src" >&2
    exit 1
fi
export PROTOC

cargo build --release -p revokd -p revokd-bench --features revokd-bench/compare --bin revokd --bin revokd-compare
REVOKD_BIN=$PWD/target/release/revokd ./target/release/revokd-compare "$@"
