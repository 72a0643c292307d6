//! The CNI side of Plexus: the meta-plugin with Multus semantics and its built-in delegates.
//!
//! - [`spec`]: the CNI specification's types.
//! - [`delegate`]: running delegates, as binaries or in-process.
//! - [`multus`]: Multus's config, annotations and network resolution.

pub mod delegate;
pub mod multus;
pub mod spec;
