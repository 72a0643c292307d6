//! IPAM for the built-in delegates. `static` and `host-local` run in-process (no fork/exec,
//! and the demo needs no plugin binary); any other type runs as a plugin binary by the CNI
//! exec protocol, found on CNI_PATH, with the network's whole config on its stdin as the
//! reference plugins pass it.

pub mod host_local;
pub mod static_ip;

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::delegate::{Delegator, Registry};
use crate::multus::keys::Keys;
use crate::spec::result::{CniResult, IpPrefix, Route};
use crate::spec::{CniError, Command, ErrorCode, Invocation};

/// One IPAM call: the network config a delegate got, its `ipam` object, the invocation.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The delegate's whole config (the IPAM's stdin, were it a binary).
    pub network: &'a Value,
    /// Its `ipam` object.
    pub ipam: &'a Map<String, Value>,
    /// The CNI environment.
    pub invocation: &'a Invocation,
    /// The interface the addresses are for.
    pub ifname: &'a str,
}

pub(crate) fn invalid(key: &str, message: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, format!("ipam config: {key}: {message}"))
}

pub(crate) fn io_error(what: &str, e: std::io::Error) -> CniError {
    CniError::new(ErrorCode::Io, what.to_owned()).with_details(e.to_string())
}

impl<'a> Request<'a> {
    /// The request for `network`, `None` when it has no IPAM (no `ipam`, or `{}`).
    pub fn new(
        network: &'a Value,
        invocation: &'a Invocation,
        ifname: &'a str,
    ) -> Result<Option<Self>, CniError> {
        match network.get("ipam") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(ipam)) if ipam.is_empty() => Ok(None),
            Some(Value::Object(ipam)) => Ok(Some(Self { network, ipam, invocation, ifname })),
            Some(_) => Err(invalid("ipam", "must be an object")),
        }
    }

    /// The IPAM `type`.
    pub fn plugin_type(&self) -> Result<String, CniError> {
        Keys::new(self.ipam, "ipam").string("type")?.ok_or_else(|| invalid("type", "missing"))
    }

    /// The network's `name`.
    pub(crate) fn network_name(&self) -> Result<String, CniError> {
        self.network
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| CniError::new(ErrorCode::InvalidNetworkConfig, "network config: name: missing"))
    }

    /// The `routes` of the IPAM config.
    pub(crate) fn routes(&self) -> Result<Vec<Route>, CniError> {
        match Keys::new(self.ipam, "ipam").value("routes") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(routes) => serde_json::from_value(routes.clone()).map_err(|e| invalid("routes", e)),
        }
    }

    /// Addresses the pod asked for, as the reference plugins take them: `runtimeConfig.ips`
    /// (the `ips` capability), `args.cni.ips`, and CNI_ARGS `IP=` (comma-separated). The
    /// prefix length, where one is given, is the plugin's to check, not the address's.
    pub(crate) fn requested(&self) -> Result<Vec<IpPrefix>, CniError> {
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
    pub(crate) fn requested_ips(&self) -> Result<Vec<IpAddr>, CniError> {
        Ok(self.requested()?.into_iter().map(|p| p.addr).collect())
    }

    fn exec(&self, command: Command) -> Result<Option<Value>, CniError> {
        let delegator = Delegator::new(None, &self.invocation.path, Registry::default());
        let plugin_type = self.plugin_type()?;
        delegator
            .exec(&plugin_type, command, self.invocation, self.ifname, self.network)
            .map_err(|e| e.context(format!("ipam {plugin_type}")))
    }
}

/// ADD: the addresses, routes and DNS for the interface.
pub fn add(request: &Request<'_>) -> Result<CniResult, CniError> {
    match request.plugin_type()?.as_str() {
        "static" => static_ip::add(request),
        "host-local" => host_local::add(request),
        other => {
            let value = request
                .exec(Command::Add)?
                .ok_or_else(|| CniError::new(ErrorCode::Decode, format!("ipam {other} printed no result")))?;
            CniResult::from_value(&value).map_err(|e| e.context(format!("ipam {other}")))
        }
    }
}

/// DEL: releases what ADD took; nothing taken is fine.
pub fn del(request: &Request<'_>) -> Result<(), CniError> {
    match request.plugin_type()?.as_str() {
        "static" => Ok(()),
        "host-local" => host_local::del(request),
        _ => request.exec(Command::Del).map(|_| ()),
    }
}

/// CHECK: what ADD took is still held.
pub fn check(request: &Request<'_>) -> Result<(), CniError> {
    match request.plugin_type()?.as_str() {
        "static" => static_ip::add(request).map(|_| ()),
        "host-local" => host_local::check(request),
        _ => request.exec(Command::Check).map(|_| ()),
    }
}

/// Puts an IPAM result on link `index` (addresses, then routes), as the reference plugins'
/// `ConfigureIface` does: a route without a gateway goes via the gateway of the first
/// address of its family that has one.
pub async fn configure(
    nl: &plexus_hw::netlink::Netlink,
    index: u32,
    result: &CniResult,
) -> Result<(), CniError> {
    let failed = |e: plexus_hw::netlink::NetlinkError| CniError::new(ErrorCode::Plugin, e.to_string());
    for ip in &result.ips {
        nl.add_address(index, ip.address.addr, ip.address.len).await.map_err(failed)?;
    }
    for route in &result.routes {
        let v4 = route.dst.is_ipv4();
        let gateway = route
            .gw
            .or_else(|| result.ips.iter().filter(|ip| ip.address.is_ipv4() == v4).find_map(|ip| ip.gateway));
        nl.add_route(route.dst.addr, route.dst.len, gateway, index).await.map_err(failed)?;
    }
    Ok(())
}
