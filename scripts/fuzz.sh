#!/usr/bin/env bash
# Fuzzes revokd's input boundaries with cargo-fuzz (libFuzzer + AddressSanitizer), starting
# from the corpus kept in the repo:
#
#   request_decode   gRPC request bodies: prost decoding, then the node's field validation
#   apply            state machine: postcard-encoded commands applied on two replicas
#   snapshot_decode  snapshot files and chunks: decode, re-encode, decode
#   token_parse      JWTs: the validator on arbitrary strings
#
#   scripts/fuzz.sh                 every target for FUZZ_SECONDS each (default 60)
#   scripts/fuzz.sh apply token_parse
#
# Needs cargo-fuzz (installed if missing). Its sanitizer flags are nightly-only: the script
# sets RUSTC_BOOTSTRAP=1 so the stable toolchain accepts them. Inputs that reach new coverage
# are added to crates/revokd-fuzz/corpus/<target>/ (commit them after `cargo fuzz cmin`);
# a crash is saved under crates/revokd-fuzz/artifacts/<target>/ and fails the script, with
# the command that replays it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=crates/revokd-fuzz
seconds=${FUZZ_SECONDS:-60}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_decode apply snapshot_decode token_parse)
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir "$dir" -O
for t in "${targets[@]}"; do
    mkdir -p "$dir/corpus/$t"
    echo "== fuzz $t for ${seconds}s (corpus: $(find "$dir/corpus/$t" -type f | wc -l) inputs)"
    if ! cargo fuzz run --fuzz-dir "$dir" -O "$t" "$dir/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 -print_final_stats=1 2>&1 \
        | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY|Test unit written)"; then
        :
    fi
    if compgen -G "$dir/artifacts/$t/crash-*" >/dev/null || compgen -G "$dir/artifacts/$t/oom-*" >/dev/null \
        || compgen -G "$dir/artifacts/$t/timeout-*" >/dev/null; then
        echo "!! $t found a failing input; replay with:" >&2
        for f in "$dir"/artifacts/"$t"/*; do
            echo "   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir $dir -O $t $f" >&2
        done
        exit 1
    fi
done
echo "fuzzing found nothing"
