//! IPAM for the built-in delegates. `static` and `host-local` run in-process (no fork/exec,
//! and the demo needs no plugin binary); any other type runs as a plugin binary by the CNI
//! exec protocol, found on CNI_PATH, with the network's whole config on its stdin as the
//! reference plugins pass it.

pub mod host_local;
pub mod static_ip;

use std::net::IpAddr;

use plexus_hw::kernel::{Kernel, KernelError, RouteTo, Side};
use serde_json::{Map, Value};

use crate::delegate::{Binaries, DelegateError};
use crate::error::Error;
use crate::keys::Keys;
use crate::spec::result::{CniResult, IpPrefix, Route};
use crate::spec::{CniVersion, Command, ConfigError, ErrorCode, Invocation};

/// An IPAM failure other than its config's.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// host-local's store could not be read or written.
    #[error("{what}: {error}")]
    Store {
        /// The operation and its file.
        what: String,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// An address cannot be given (a duplicate, a requested address taken, one not held).
    #[error("{0}")]
    Unavailable(String),
    /// A range has no free address left (the spec's "try again later").
    #[error("{0}")]
    Exhausted(String),
    /// An IPAM plugin binary.
    #[error("ipam {plugin}: {error}")]
    Plugin {
        /// Its type.
        plugin: String,
        /// What went wrong.
        error: DelegateError,
    },
    /// An IPAM plugin's result.
    #[error("ipam {plugin}: {error}")]
    Result {
        /// Its type.
        plugin: String,
        /// What is wrong with what it printed.
        error: ConfigError,
    },
    /// Putting a result on a link.
    #[error("{0}")]
    Configure(#[from] KernelError),
}

impl crate::error::Failure for IpamError {
    /// An IPAM binary's own code when it failed with one.
    fn code(&self) -> u32 {
        match self {
            Self::Store { .. } => ErrorCode::Io.into(),
            Self::Unavailable(_) | Self::Configure(_) => ErrorCode::Plugin.into(),
            Self::Exhausted(_) => ErrorCode::TryAgainLater.into(),
            Self::Plugin { error, .. } => error.code(),
            Self::Result { error, .. } => error.code(),
        }
    }
}

/// One IPAM call: the network config a delegate got, its `ipam` object, the delegate's
/// invocation (its interface is the one the addresses are for).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The delegate's whole config (the IPAM's stdin, were it a binary).
    pub network: &'a Value,
    /// Its `ipam` object.
    pub ipam: &'a Map<String, Value>,
    /// The delegate's invocation.
    pub invocation: &'a Invocation,
}

pub(crate) fn invalid(key: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid("ipam config", format!("{key}: {message}"))
}

pub(crate) fn io_error(what: &str, error: std::io::Error) -> IpamError {
    IpamError::Store { what: what.to_owned(), error }
}

impl<'a> Request<'a> {
    /// The request for `network`, `None` when it has no IPAM (no `ipam`, or `{}`).
    pub fn new(network: &'a Value, invocation: &'a Invocation) -> Result<Option<Self>, ConfigError> {
        match network.get("ipam") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(ipam)) if ipam.is_empty() => Ok(None),
            Some(Value::Object(ipam)) => Ok(Some(Self { network, ipam, invocation })),
            Some(_) => Err(invalid("ipam", "must be an object")),
        }
    }

    /// The interface the addresses are for.
    pub fn ifname(&self) -> &str {
        self.invocation.ifname.as_str()
    }

    /// The IPAM `type`.
    pub fn plugin_type(&self) -> Result<String, ConfigError> {
        Keys::new(self.ipam, "ipam").string("type")?.ok_or_else(|| invalid("type", "missing"))
    }

    /// The network's `name`.
    pub(crate) fn network_name(&self) -> Result<String, ConfigError> {
        self.network
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ConfigError::invalid("network config", "name: missing"))
    }

    /// The `routes` of the IPAM config.
    pub(crate) fn routes(&self) -> Result<Vec<Route>, ConfigError> {
        match Keys::new(self.ipam, "ipam").value("routes") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(routes) => serde_json::from_value(routes.clone()).map_err(|e| invalid("routes", e)),
        }
    }

    /// Addresses the pod asked for, as the reference plugins take them: `runtimeConfig.ips`
    /// (the `ips` capability), `args.cni.ips`, and CNI_ARGS `IP=` (comma-separated). The
    /// prefix length, where one is given, is the plugin's to check, not the address's.
    pub(crate) fn requested(&self) -> Result<Vec<IpPrefix>, ConfigError> {
        let mut found: Vec<String> = Vec::new();
        let network = self.network.as_object();
        let nested = |outer: &str, inner: &str| -> Option<Vec<String>> {
            let value = network?.get(outer)?.get(inner)?;
            Some(value.as_array()?.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        };
        found.extend(nested("runtimeConfig", "ips").unwrap_or_default());
        if let Some(args) =
            network.and_then(|n| n.get("args")).and_then(|a| a.get("cni")).and_then(|c| c.get("ips"))
        {
            found.extend(args.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)));
        }
        if let Some(ips) = self.invocation.cni_arg("IP") {
            found.extend(ips.split(',').map(|ip| ip.trim().to_owned()).filter(|ip| !ip.is_empty()));
        }
        // Multus gives a pod's `ips` both ways when the network has the capability.
        let mut seen = std::collections::HashSet::new();
        found.retain(|ip| seen.insert(ip.clone()));
        found
            .iter()
            .map(|text| match text.parse::<IpPrefix>() {
                Ok(prefix) => Ok(prefix),
                Err(_) => text
                    .parse::<IpAddr>()
                    .map(|addr| IpPrefix { addr, len: if addr.is_ipv4() { 32 } else { 128 } })
                    .map_err(|_| invalid("ips", format!("{text:?} is not an IP address"))),
            })
            .collect()
    }

    /// The requested addresses without prefix lengths.
    pub(crate) fn requested_ips(&self) -> Result<Vec<IpAddr>, ConfigError> {
        Ok(self.requested()?.into_iter().map(|p| p.addr).collect())
    }

    /// Runs the IPAM binary with the network's config, as the reference plugins run theirs.
    fn exec(&self, command: Command) -> Result<Option<Value>, Error> {
        let plugin = self.plugin_type()?;
        let binaries = Binaries::new(None, &self.invocation.path);
        let mut invocation = self.invocation.clone();
        invocation.command = command;
        let env = invocation.env(&binaries.path_env());
        binaries
            .exec(&plugin, command, env, self.network)
            .map_err(|error| IpamError::Plugin { plugin, error }.into())
    }
}

/// ADD: the addresses, routes and DNS for the interface.
pub fn add(request: &Request<'_>) -> Result<CniResult, Error> {
    match request.plugin_type()?.as_str() {
        "static" => Ok(static_ip::add(request)?),
        "host-local" => host_local::add(request),
        other => {
            let plugin = || other.to_owned();
            let value = request.exec(Command::Add)?.ok_or_else(|| IpamError::Plugin {
                plugin: plugin(),
                error: DelegateError::NoResult(plugin()),
            })?;
            Ok(CniResult::from_value(&value)
                .map_err(|error| IpamError::Result { plugin: plugin(), error })?)
        }
    }
}

/// DEL: releases what ADD took; nothing taken is fine.
pub fn del(request: &Request<'_>) -> Result<(), Error> {
    match request.plugin_type()?.as_str() {
        "static" => Ok(()),
        "host-local" => host_local::del(request),
        _ => request.exec(Command::Del).map(|_| ()),
    }
}

/// The version a delegate's result is given in: its config's `cniVersion`. A 0.1.0 or 0.2.0
/// result has no form without an address, so such a config needs an IPAM; checked before
/// the delegate changes anything (SR-IOV CNI finds out only when it prints its result).
pub fn result_version(network: &Value, what: &str) -> Result<CniVersion, ConfigError> {
    let version = CniVersion::of_config(network, what)?;
    let has_ipam = matches!(network.get("ipam"), Some(Value::Object(ipam)) if !ipam.is_empty());
    if version.legacy_result() && !has_ipam {
        return Err(ConfigError::invalid(
            what,
            format!(
                "a CNI {version} result must carry an IP address: give the network an ipam, or a cniVersion of 0.3.0 or later"
            ),
        ));
    }
    Ok(version)
}

/// DEL of the IPAM a delegate's config names, if any: what every delegate's DEL and undo does.
pub fn release(network: &Value, invocation: &Invocation) -> Result<(), Error> {
    match Request::new(network, invocation)? {
        Some(request) => del(&request),
        None => Ok(()),
    }
}

/// CHECK: what ADD took is still held.
pub fn check(request: &Request<'_>) -> Result<(), Error> {
    match request.plugin_type()?.as_str() {
        "static" => static_ip::add(request).map(|_| ()).map_err(Error::from),
        "host-local" => host_local::check(request),
        _ => request.exec(Command::Check).map(|_| ()),
    }
}

/// Puts an IPAM result on link `index` on `side` (addresses, then routes), as the reference
/// plugins' `ConfigureIface` does: a route without a gateway goes via the gateway of the first
/// address of its family that has one.
pub fn configure(kernel: &dyn Kernel, side: Side, index: u32, result: &CniResult) -> Result<(), IpamError> {
    for ip in &result.ips {
        kernel.add_address(side, index, (ip.address.addr, ip.address.len))?;
    }
    for route in &result.routes {
        let v4 = route.dst.is_ipv4();
        let gateway = route
            .gw
            .or_else(|| result.ips.iter().filter(|ip| ip.address.is_ipv4() == v4).find_map(|ip| ip.gateway));
        let to = RouteTo { destination: route.dst.addr, prefix_len: route.dst.len, gateway };
        kernel.add_route(side, index, to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_0_2_0_delegate_without_ipam_is_refused_before_it_starts() {
        let sriov = json!({"cniVersion": "0.2.0", "type": "sriov", "name": "n"});
        let err = result_version(&sriov, "sriov config").unwrap_err();
        assert!(
            err.to_string().starts_with("sriov config: a CNI 0.2.0 result must carry an IP address"),
            "{err}"
        );
        let with_ipam = json!({"cniVersion": "0.2.0", "type": "sriov", "ipam": {"type": "host-local"}});
        assert_eq!(result_version(&with_ipam, "sriov config").unwrap(), CniVersion::V0_2_0);
        let unversioned = json!({"type": "sriov"});
        assert_eq!(result_version(&unversioned, "sriov config").unwrap(), CniVersion::V1_0_0);
    }
}
