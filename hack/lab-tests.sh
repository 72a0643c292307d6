#!/usr/bin/env bash
# The tests that need a stock kernel (netdevsim's VF operations, the bonding driver), run in
# the kernel lab (hack/lab.sh): the test binaries the workspace build made, in one guest boot.
# Outside the lab these tests are ignored, with the reason; here a lab that cannot start fails
# the run, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

# The executables of the workspace's test targets, as `cargo test` built them (no rebuild).
targets=$(cargo test --workspace --all-targets --locked --no-run --message-format=json 2>/dev/null)
executable() {
    echo "$targets" | grep -F "\"src_path\":\"$PWD/$1\"" | grep -F '"executable":"' |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | head -1
}
hw_lab=$(executable hw/tests/lab.rs)
sriov=$(executable cni/tests/sriov.rs)
bond=$(executable cni/tests/bond.rs)
[ -n "$hw_lab" ] && [ -n "$bond" ] && [ -n "$sriov" ] || { echo "lab-tests: the test binaries were not found" >&2; exit 2; }

start=$SECONDS
bash hack/lab.sh setup
echo "lab-tests: the lab is ready after $((SECONDS - start)) s"
guest=$SECONDS
bash hack/lab.sh run bash -c "set -e
    $hw_lab --ignored --test-threads 1
    $bond --ignored --test-threads 1
    $sriov --ignored --test-threads 1"
echo "lab-tests: the guest ran the tests in $((SECONDS - guest)) s; the lab added $((SECONDS - start)) s"
