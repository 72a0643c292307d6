//! The CNI side of Plexus: the meta-plugin with Multus semantics and its built-in delegates.
//!
//! - [`entry`]: the edge: one call from environment and stdin to stdout and exit code; the
//!   only place errors become the spec's JSON.
//! - [`spec`]: the CNI specification's types: versions, the environment, configs, results,
//!   error codes.
//! - [`error`]: the call's typed errors and the teardown error list.
//! - [`keys`]: JSON objects read as Go reads them.
//! - [`log_file`]: a log file rotating as Multus's `logOptions` ask.
//! - [`paths`]: the default directories.
//! - [`delegate`]: running delegates, as binaries or in-process.
//! - [`multus`]: Multus's config, annotations, network resolution, the plan of an ADD, the
//!   verbs, the DEL cache, network-status, Kubernetes.
//! - [`routes`]: the pod's default route.
//! - [`ipam`]: IPAM for the built-in delegates: any plugin binary, or `static` and
//!   `host-local` in-process.
//! - [`sriov`], [`userspace`], [`bond`]: the built-in delegates.
//! - [`files`]: atomic writes and lock files.
//! - [`forward`]: the binary's way to the agent.
//! - [`phases`]: the time each phase of a call took.
//! - [`plugin_log`]: a delegate's own `logFile`, as the Go plugins write it.

pub mod bond;
pub mod delegate;
pub mod entry;
pub mod error;
pub mod files;
pub mod forward;
pub mod ipam;
pub mod keys;
pub mod log_file;
pub mod multus;
pub mod paths;
pub mod phases;
pub mod plugin_log;
pub mod plugin_process;
pub mod routes;
pub mod spec;
pub mod sriov;
pub mod userspace;

pub use error::{Error, ErrorList};
