#!/usr/bin/env bash
# The long chaos scenarios, for anyone to reproduce the figures in RELIABILITY.md.
#
#   scripts/chaos.sh                  every named scenario on its own topology, then
#                                     `random` for 2 minutes of faults (seed 1)
#   scripts/chaos.sh kill-leader ...  only these scenarios
#
# Environment: CHAOS_SEED (default 1) and CHAOS_DURATION (default 2m) for `random`;
# CHAOS_OUT (default target/chaos) holds each run's report.md, report.json and timeline.svg;
# HARNESS_BIN / REVOKD_BIN use these binaries instead of building them.
# Exit status: 0 when every invariant held in every run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${CHAOS_OUT:-$root/target/chaos}
seed=${CHAOS_SEED:-1}
duration=${CHAOS_DURATION:-2m}
if [ -z "${HARNESS_BIN:-}" ]; then
    cargo build --release -p revokd -p revokd-harness --quiet
fi
harness=${HARNESS_BIN:-$root/target/release/revokd-harness}
export REVOKD_BIN=${REVOKD_BIN:-$root/target/release/revokd}

scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
    scenarios=(kill-leader kill-follower pause-leader isolate-leader partition-region one-way
               latency-spike rolling-restart random)
fi
dirs=()
failed=0
for s in "${scenarios[@]}"; do
    dir=$out/$s-$seed
    if ! "$harness" chaos "$s" --seed "$seed" --duration "$duration" --out "$dir"; then
        echo "!! $s: invariants broken or the run failed (see $dir)" >&2
        failed=1
    fi
    [ -f "$dir/report.json" ] && dirs+=("$dir")
done
echo
echo "== summary ($(date -u +%Y-%m-%d), $(nproc) cores, seed $seed)"
"$harness" summary "${dirs[@]}" | tee "$out/summary.md"
exit $failed
