#!/usr/bin/env bash
# The main job, for now: discovery and VF pools on a freshly simulated node. Builds the agent, simulates a
# node with 4 PFs over 2 NUMA nodes (8 VFs each, 2 of them bound to vfio-pci) with real veth
# links in a namespace of its own, shows what discovery finds (table and JSON) and which
# devices the pools of hack/demo-pools.json get, then removes
# the node and checks that nothing is left behind. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-deps.sh
cargo build --quiet --release -p plexus-agent
agent=target/release/plexus-agent

# tmpfs, like sysfs: a fake tree on disk takes seconds to write on slow disks.
work=$(mktemp -d "${TMPDIR:-/dev/shm}/plexus-demo-XXXXXX")
root=$work/sys
netns=plexus-demo-$$
cleanup() {
    "$agent" sim down --root "$root" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== simulating a node"
"$agent" sim up --root "$root" --pfs 4 --numa-nodes 2 --vfs 8 --vfio 2 --netns "$netns"
echo
echo "== plexus-agent discover --sysfs-root $root"
"$agent" discover --sysfs-root "$root"
echo
echo "== plexus-agent discover --output json (the first 40 lines)"
"$agent" discover --sysfs-root "$root" --output json > "$work/discovery.json"
head -n 40 "$work/discovery.json"
echo "   ... $(wc -l < "$work/discovery.json") lines"
echo
echo "== plexus-agent pools --pools hack/demo-pools.json (the SR-IOV device plugin's config format)"
"$agent" pools --pools hack/demo-pools.json --sysfs-root "$root" --route-file /dev/null
echo
echo "== the VF netdevs are real links in namespace $netns"
ip -n "$netns" -br link show | sort | head -8
echo "   ... $(ip -n "$netns" -o link show | wc -l) links"
echo
echo "== removing the node"
"$agent" sim down --root "$root"
if ip netns list | grep -q "^$netns\b" || [ -e "$root" ]; then
    echo "left behind: namespace $netns or $root" >&2
    exit 1
fi
echo "nothing left behind"
