//! The built-in `sriov` delegate: a hardware VF into the pod, configured, and restored exactly.
//! So far its config; the attachment builds on `plexus_hw::vf` and `plexus_hw::netlink`.

pub mod config;
