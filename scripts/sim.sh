#!/usr/bin/env bash
# Runs the deterministic simulation (crates/revokd-sim) over many seeds: 3 revokd nodes and
# client replicas on a simulated network and clock, under seeded faults (partitions, held
# messages, loss, latency, crashes losing unflushed writes, replica disconnects), with every
# invariant checked on every run. Prints how many seeds ran and how long they took; a failing
# seed prints itself, its fault schedule and the end of its history.
#
#   scripts/sim.sh [COUNT] [START]      default 10000 seeds from 0
#   SIM_SEED=N scripts/sim.sh           replay one seed, printing its whole history
#   SIM_TRACE=info SIM_SEED=N scripts/sim.sh   ... with the nodes' and clients' logs
set -euo pipefail
cd "$(dirname "$0")/.."
export SIM_SEEDS=${1:-${SIM_SEEDS:-10000}}
export SIM_START=${2:-${SIM_START:-0}}
# `--workspace` so that it shares the build of the test suite (features unify the same way).
exec cargo test --release --workspace --test seeds -- --nocapture seeds
