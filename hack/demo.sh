#!/usr/bin/env bash
# The main job: `plexus-agent demo` on a simulated node. Builds the agent and the plexus CNI
# binary, then the demo simulates a node (4 PFs over 2 NUMA nodes, 4 VFs each, one bound to
# vfio-pci, veth links standing in for VF netdevs), runs the agent against a kubelet stand-in
# and an API-server stand-in, attaches three pods' VFs through the plexus binary and the agent,
# prints their network-status, NUMA placement and the agent's phase latencies, deletes it all
# and checks that nothing is left behind. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-deps.sh
cargo build --quiet --release -p plexus-agent
bash hack/build-plexus.sh --simulated-node --quiet --release
exec target/release/plexus-agent demo
