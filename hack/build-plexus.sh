#!/usr/bin/env bash
# Builds the CNI binaries: plexus (plexus-shim: no libc, no std, so its binary-only feature
# and -C panic=abort, which only `cargo rustc` gives one target; see shim/Cargo.toml) and
# plexus-standalone. `--simulated-node` first builds plexus-standalone with the simulated node
# (the agent's demo and tests); the other arguments go to both cargo commands (--release,
# --locked, --quiet).
set -euo pipefail
cd "$(dirname "$0")/.."
standalone=()
if [ "${1:-}" = --simulated-node ]; then
    standalone=(--features simulated-node)
    shift
fi
"${CARGO:-cargo}" rustc -p plexus-shim --bin plexus --features bin "$@" -- -C panic=abort
"${CARGO:-cargo}" build -p plexus-cni --bin plexus-standalone "${standalone[@]}" "$@"
