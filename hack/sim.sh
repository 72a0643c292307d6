#!/usr/bin/env bash
# A simulated SR-IOV node on this machine, for trying Plexus without SR-IOV hardware.
#   hack/sim.sh up DIR [--netns NAME] [--pfs N] [--numa-nodes M] [--vfs K] [--vfio J]
#   hack/sim.sh down DIR
# `up` writes a fake sysfs tree into DIR (use it as --sysfs-root, and for `plexus-agent run` with
# --simulated-node; PLEXUS_SYSFS_ROOT=DIR for the plexus binary); with --netns it also makes
# real links (root): a bridge per PF and a veth per VF netdev, in that network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1 dir=$2
shift 2
case "$action" in
    up|down) ;;
    *) usage ;;
esac
cargo build --quiet --release -p plexus-agent
exec target/release/plexus-agent sim "$action" --root "$dir" "$@"
