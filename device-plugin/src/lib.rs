//! The kubelet device plugin of Plexus: SR-IOV VF pools advertised as extended resources.
//!
//! - [`config`]: the pool config (the SR-IOV device plugin's format).
//! - [`pools`]: which discovered devices each pool gets, and why others were left out.
//! - [`allocator`]: NUMA-aligned, PF-spreading preferred allocation.
//! - [`proto`]: the kubelet's gRPC APIs.

pub mod allocate;
pub mod allocator;
pub mod config;
pub mod pools;
pub mod proto;
