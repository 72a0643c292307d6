#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, libFuzzer through libfuzzer-sys) and runs each for a fixed
# time; fails on the first crash, panic, timeout or memory blow-up, with the input that did it.
#
#   bash hack/fuzz.sh                 # every target, FUZZ_SECONDS (20) each: what CI runs
#   FUZZ_SECONDS=3600 bash hack/fuzz.sh cni_config     # one target, longer
#   FUZZ_MERGE=1 FUZZ_SECONDS=600 bash hack/fuzz.sh    # and keep what grew coverage in fuzz/corpus
#
# Stable Rust, no cargo-fuzz: the coverage instrumentation is plain -C flags, and --target keeps
# it off build scripts and proc macros (which would not link without libFuzzer), as cargo-fuzz
# does. No sanitizer (that needs nightly): what is looked for is panics, aborts, overflows
# (checked), hangs and unbounded allocation.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-20}
target=x86_64-unknown-linux-gnu
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(cni_config cni_env networks_annotation nad_config pools_config sysfs_values agent_frame)
fi

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
cargo build --release --locked --target "$target" --bins

work=$(mktemp -d /tmp/plexus-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
for name in "${targets[@]}"; do
    echo "== fuzzing $name for ${seconds}s"
    mkdir -p "$work/$name/corpus" "$work/$name/artifacts"
    # New inputs go to the scratch corpus (the first directory); the committed one is read.
    if ! "target/$target/release/$name" "$work/$name/corpus" "corpus/$name" \
        -max_total_time="$seconds" -timeout=5 -rss_limit_mb=1024 -max_len=16384 \
        -artifact_prefix="$work/$name/artifacts/" -print_final_stats=1 >"$work/$name/log" 2>&1; then
        tail -n 40 "$work/$name/log" >&2
        for input in "$work/$name/artifacts"/*; do
            [ -e "$input" ] || continue
            mkdir -p artifacts
            cp "$input" "artifacts/$name-$(basename "$input")"
            echo "the input: fuzz/artifacts/$name-$(basename "$input") (base64: $(base64 -w0 "$input"))" >&2
        done
        echo "fuzz target $name failed" >&2
        exit 1
    fi
    grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$work/$name/log" | tr '\n' ' '
    echo
    if [ "${FUZZ_MERGE:-0}" = 1 ]; then
        "target/$target/release/$name" -merge=1 "corpus/$name" "$work/$name/corpus" >/dev/null 2>&1
    fi
done
echo "no crash in ${#targets[@]} targets"
