//! Multus semantics: the meta-plugin's config, the pod's network selection, how networks are
//! found, what an ADD attaches, the verbs, the DEL cache, network-status, and what the
//! meta-plugin needs from Kubernetes.
//!
//! - [`config`]: the meta-plugin's config; [`selection`]: the pod's annotations.
//! - [`resolve`]: a network by NAD, by name in `confDir`, by directory or file; `conf_cache`
//!   keeps the conf files it read while they stay as they were.
//! - [`plan`]: what an ADD attaches, checked before anything is made; [`auxiliary`]: the
//!   auxiliary CNI chain every pod gets.
//! - [`meta`]: the verbs (ADD, DEL, CHECK, STATUS, GC).
//! - [`cache`]: the DEL cache; [`status`]: network-status and Events.
//! - [`cluster`]: Kubernetes as the meta-plugin sees it; [`kube`]: thin mode's kube-rs client.
//! - [`devices`]: the pod's allocated devices and device-info files.

pub mod auxiliary;
pub mod cache;
pub mod cluster;
mod conf_cache;
pub mod config;
pub mod devices;
pub mod kube;
pub mod meta;
pub mod plan;
pub mod resolve;
pub mod selection;
pub mod status;
