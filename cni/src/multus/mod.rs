//! Multus semantics: the meta-plugin's config, the pod's network selection, how networks are
//! found, the DEL cache, and what the meta-plugin needs from Kubernetes.

pub mod cache;
pub mod cluster;
pub mod config;
pub mod devices;
pub(crate) mod keys;
pub mod kube;
pub mod resolve;
pub mod selection;
