#!/usr/bin/env bash
# The whole test suite: unit and property tests, openraft's storage conformance suite, the
# end-to-end tests over real revokd processes (node, client crate, chaos harness), doc tests,
# the deterministic simulation over 500 seeds, smoke runs of the benchmarks, the chaos smoke,
# and the local cluster script. Everything builds once, in release mode, in one target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step says how far into the run it starts, so that a slow run shows where its time went.
step() { echo "== [$SECONDS s] $*"; }

step "build (release, every target)"
cargo build --release --workspace --all-targets

# Tokens minted by an independent JWT library: fresh keys and tokens from PyJWT when it is
# installed (.ci/run installs it), else the committed ones.
if python3 -c "import jwt, cryptography" >/dev/null 2>&1; then
    fixtures=$(mktemp -d)
    python3 scripts/gen-jwt-fixtures.py "$fixtures" >/dev/null
    export REVOKD_JWT_FIXTURES=$fixtures
    echo "== PyJWT fixtures generated fresh in $fixtures"
else
    echo "== PyJWT not installed: the validator tests use the committed fixtures"
fi

# The simulation runs on its own below: its hundreds of seeds would hold a core away from
# the timing-sensitive cluster tests.
step "unit, property, storage-conformance and end-to-end tests"
cargo nextest run --release --workspace --profile ci -E 'not package(revokd-sim)'
step "doc tests"
cargo test --release --workspace --doc

step "deterministic simulation: ${SIM_SEEDS:-500} seeds of 3 nodes + replicas under seeded faults,"
echo "   a determinism check (same seed, same history byte for byte) and the regression seeds"
# Through the workspace, so that it runs on the build above (`-p revokd-sim` would unify
# features differently and compile its dependencies again).
cargo nextest run --release --workspace --profile ci -E 'package(revokd-sim)' --no-capture

step "benchmark smoke run"
./target/release/revokd-bench --duration-secs 1 --entries 20000 --failovers 1 --write-clients 1,20 --check-clients 4 > /dev/null

step "client benchmark smoke run (Redis rows need redis-server; skipped and said so without)"
./target/release/revokd-client-bench --smoke > /dev/null

step "security benchmark smoke run (plaintext, TLS, TLS + tokens, TLS + admin certificates)"
./target/release/revokd-security-bench --secs 1 --clients 4 > /dev/null

# Fuzzing (scripts/fuzz.sh) is not part of this suite: its sanitizer build alone takes about
# 6 minutes, which the CI budget cannot spare next to the simulation. Run it by hand.
step "chaos smoke: 3 nodes behind link proxies; kill the leader twice, cut a follower off, pause"
echo "   one, with writers, replicas and linearizable checkers running; every invariant checked"
./target/release/revokd-harness chaos smoke --out target/chaos/smoke
step "the same with TLS on every link (mutual TLS between nodes, clients trusting the CA)"
./target/release/revokd-harness chaos smoke --tls --out target/chaos/smoke-tls

step "Docker: the compose cluster from locally built images (leader's container killed under"
echo "   writes, every node checked), then the chaos smoke on containers; both on TLS, both skip"
echo "   without Docker"
scripts/compose-smoke.sh
if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
    ./target/release/revokd-harness chaos smoke --backend docker --tls --out target/chaos/smoke-docker
else
    echo "docker chaos smoke skipped: docker is not installed or its daemon does not answer"
fi

step "scripts/cluster.sh up/down"
smoke_dir=$(mktemp -d)
# The binary built above (a `-p revokd` build would compile it again with other features).
REVOKD_BIN=$PWD/target/release/revokd REVOKD_CLUSTER_DIR=$smoke_dir REVOKD_BASE_PORT=17401 scripts/cluster.sh up 3
REVOKD_CLUSTER_DIR=$smoke_dir REVOKD_BASE_PORT=17401 scripts/cluster.sh down
rm -rf "$smoke_dir"
step "all tests passed"
