//! Multus semantics: the meta-plugin's config, the pod's network selection, and how networks
//! are found.

pub mod config;
pub(crate) mod keys;
pub mod selection;
