#!/usr/bin/env bash
# The whole test suite: unit and property tests, openraft's storage conformance suite, the
# end-to-end tests over real revokd processes, doc tests, a smoke run of the benchmark, and
# the local cluster script. Everything builds once, in release mode, in one target dir.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --all-targets
cargo nextest run --release --workspace --profile ci
cargo test --release --workspace --doc

echo "== benchmark smoke run"
./target/release/revokd-bench --duration-secs 1 --entries 20000 --failovers 1 --write-clients 1,20 --check-clients 4 > /dev/null

echo "== scripts/cluster.sh up/down"
smoke_dir=$(mktemp -d)
# The binary built above (a `-p revokd` build would compile it again with other features).
REVOKD_BIN=$PWD/target/release/revokd REVOKD_CLUSTER_DIR=$smoke_dir REVOKD_BASE_PORT=17401 scripts/cluster.sh up 3
REVOKD_CLUSTER_DIR=$smoke_dir REVOKD_BASE_PORT=17401 scripts/cluster.sh down
rm -rf "$smoke_dir"
echo "all tests passed"
