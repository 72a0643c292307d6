//! The kubelet device plugin of Plexus: SR-IOV VF pools advertised as extended resources.
//!
//! - [`config`]: the pool config (the SR-IOV device plugin's format).
//! - [`pools`]: which discovered devices each pool gets, and why others were left out.
//! - [`allocator`]: NUMA-aligned, PF-spreading preferred allocation.
//! - [`allocate`]: `Allocate` responses and device-info files.
//! - [`service`]: the `DevicePlugin` gRPC service of a pool.
//! - [`plugin`]: the runner: sockets, registration, re-discovery, health, kubelet restarts.
//! - [`podresources`]: the kubelet's PodResources API: which devices a pod got.
//! - [`proto`], [`transport`]: the kubelet's gRPC APIs over unix sockets.

pub mod allocate;
pub mod allocator;
pub mod config;
pub mod plugin;
pub mod podresources;
pub mod pools;
pub mod proto;
pub mod service;
pub mod transport;
