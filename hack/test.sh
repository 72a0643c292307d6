#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test of the workspace
# (unit, end-to-end, and each criterion bench once in test mode), then each fuzz target for a
# short fixed time. Run as root: the network namespace tests run for real, each in namespaces
# of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-deps.sh
# Namespaces that exist before the run are not the tests' doing.
before=$(ip netns list | awk '{print $1}' | grep -E '^plexus-' | sort || true)

echo "== cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The plexus binary is left out of workspace builds (no std: shim/Cargo.toml): checked alone.
cargo clippy -p plexus-shim --features bin --bin plexus --locked -- -D warnings -C panic=abort
echo "== cargo test"
cargo test --workspace --all-targets --locked
# Doc tests are not part of --all-targets.
cargo test --workspace --doc --locked

echo "== the kernel lab: the tests that need a stock kernel (netdevsim, bonding), in a QEMU guest"
bash hack/lab-tests.sh

echo "== fuzzing: every parser of outside input, 20 s each"
bash hack/fuzz.sh

echo "== nothing left behind"
after=$(ip netns list | awk '{print $1}' | grep -E '^plexus-' | sort || true)
leftover=$(comm -13 <(echo "$before") <(echo "$after") | grep . || true)
if [ -n "$leftover" ]; then
    echo "network namespaces left behind by the tests:" >&2
    echo "$leftover" >&2
    exit 1
fi
echo "no plexus-* namespace left"
