//! The agent runs privileged (a DaemonSet pod), but keeps only the capabilities its work needs
//! once it has started:
//!
//! - `CAP_NET_ADMIN`: links, addresses, routes, VF settings, moving links between namespaces;
//! - `CAP_SYS_ADMIN`: `setns` into pod network namespaces, bind mounts;
//! - `CAP_SYS_PTRACE`: opening `/proc/<pid>/ns/net` of a container whose processes run as
//!   another user (runtimes that name the netns by pid do so);
//! - `CAP_NET_RAW`: for the delegate plugins the agent runs, which send gratuitous ARPs;
//! - `CAP_CHOWN`: giving a vhost-user socket to the group a NAD names (`vhost.group`);
//! - with `--chroot-dir` only, `CAP_SYS_CHROOT`: executing delegates in the node's root.
//!
//! Capabilities belong to threads, and a thread gets its creator's when it is made: so they are
//! dropped before the runtime starts its first thread, and every later thread has only these.
//! The bounding set is cut too: a root process that execs a plugin would otherwise hand the
//! plugin everything still in the bounding set.

use caps::{CapSet, Capability, CapsHashSet};

/// What the agent keeps.
pub const KEPT: [Capability; 5] = [
    Capability::CAP_CHOWN,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_NET_RAW,
];

/// Drops every capability of the calling thread but [`KEPT`] and `extra` from all its sets;
/// returns what it keeps (the part of those it had). Call it before any other thread exists.
pub fn drop_to_kept(extra: &[Capability]) -> Result<CapsHashSet, caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let kept: CapsHashSet = KEPT.iter().chain(extra).copied().filter(|cap| permitted.contains(cap)).collect();
    // Cutting the bounding set needs CAP_SETPCAP, which goes with the rest just after.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)? {
        for cap in caps::read(None, CapSet::Bounding)? {
            if !kept.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
    } else {
        tracing::warn!(
            "without CAP_SETPCAP the bounding set stays as it is: plugins run by the agent may get more"
        );
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    // Effective first: it must stay within the permitted set at every step.
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    Ok(kept)
}
