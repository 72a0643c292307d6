//! The CNI side of Plexus: the meta-plugin with Multus semantics and its built-in delegates.
//!
//! - [`spec`]: the CNI specification's types.
//! - [`delegate`]: running delegates, as binaries or in-process.
//! - [`multus`]: Multus's config, annotations, network resolution, the DEL cache, Kubernetes.
//! - [`meta`]: the meta-plugin's verbs.
//! - [`routes`]: the pod's default route.
//! - [`ipam`]: IPAM for the built-in delegates: any plugin binary, or `static` and
//!   `host-local` in-process.
//! - [`sriov`]: the built-in `sriov` delegate.
//! - [`files`]: atomic writes and lock files.
//! - [`forward`]: the binary's way to the agent.
//! - [`phases`]: the time each phase of a call took.

pub mod bond;
pub mod delegate;
pub mod entry;
pub mod files;
pub mod forward;
pub mod ipam;
pub mod meta;
pub mod multus;
pub mod phases;
pub mod routes;
pub mod spec;
pub mod sriov;
pub mod userspace;
