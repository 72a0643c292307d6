//! The Plexus node agent, as a library: the `plexus-agent` binary parses its command line and
//! calls [`cli::exec`]; tests drive the parts directly.
//!
//! - [`run`]: the daemon (`plexus-agent run`): it wires the device plugin, the CNI server,
//!   the Kubernetes watches, the metrics and the CNI config keeper together.
//! - [`cni_server`]: the socket the `plexus` binary forwards calls to; [`metrics`]: per-phase
//!   latency and the recent calls `trace` shows.
//! - [`kube_cache`]: the watch caches of the node's pods and of NADs; [`devices`]: the pods'
//!   allocated devices from the kubelet.
//! - [`autoconf`]: the node's CNI config wrapping the primary one.
//! - [`privileges`]: the capabilities the daemon keeps.
//! - [`discover`], [`pools`], [`sim`], [`install`], [`demo`]: the other commands.
//! - [`cli`]: the command line; [`logging`], [`table`]: output.

pub mod autoconf;
pub mod cli;
pub mod cni_server;
pub mod daemon_config;
pub mod demo;
pub mod devices;
pub mod discover;
pub mod install;
pub mod kube_cache;
pub mod logging;
pub mod metrics;
pub mod pools;
pub mod privileges;
pub mod run;
pub mod sim;
pub mod table;
