//! CNI results: one representation (the 1.1.0 shape), read from and written as any supported
//! version.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::conf::ConfigError;
use super::version::CniVersion;

/// An address with its prefix length (`10.1.2.3/24`, `fd00::2/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl IpPrefix {
    /// True for 0.0.0.0/0 and ::/0.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// True for an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl FromStr for IpPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?} is not an address/prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
        let len: u8 = len.parse().map_err(|_| format!("{s:?}: bad prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("{s:?}: prefix length above {max}"));
        }
        Ok(Self { addr, len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An interface a plugin made or touched.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC, when it has one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Its MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path it is in; empty for a host interface.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// A vhost-user or similar socket (1.1.0).
    #[serde(default, rename = "socketPath", skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// The PCI address of a device given to the sandbox (1.1.0).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address given to an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The address and prefix.
    pub address: IpPrefix,
    /// The gateway, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination.
    pub dst: IpPrefix,
    /// The next hop; the interface's gateway when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Route details of 1.1.0 (`mtu`, `advmss`, `priority`, `table`, `scope`), kept as given.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl Route {
    /// True for a default route.
    pub fn is_default(&self) -> bool {
        self.dst.is_default()
    }
}

/// DNS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A plugin's ADD result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CniResult {
    /// Interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS.
    #[serde(default)]
    pub dns: Dns,
}

/// Keys a 1.1.0 result may carry that older versions do not know.
const NEW_INTERFACE_KEYS: [&str; 3] = ["mtu", "socketPath", "pciID"];
const NEW_ROUTE_KEYS: [&str; 5] = ["mtu", "advmss", "priority", "table", "scope"];

impl CniResult {
    /// Reads a result of any supported version (0.3.x and 0.4.0 IPs carry a `version`, which
    /// the address itself already says; 0.1.0 and 0.2.0 have one `ip4` and one `ip6`).
    pub fn from_value(value: &Value) -> Result<Self, ConfigError> {
        let what = || "result".to_owned();
        let version = match value.get("cniVersion").and_then(Value::as_str) {
            Some(version) => Some(
                version
                    .parse::<CniVersion>()
                    .map_err(|error| ConfigError::Version { what: what(), error })?,
            ),
            None => None,
        };
        let legacy = match version {
            Some(version) => version.legacy_result(),
            // A plugin that says no version: its shape says it.
            None => value.get("ips").is_none() && (value.get("ip4").is_some() || value.get("ip6").is_some()),
        };
        if legacy {
            return from_legacy(value).map_err(|error| ConfigError::Decode { what: what(), error });
        }
        let mut value = value.clone();
        if let Some(ips) = value.get_mut("ips").and_then(Value::as_array_mut) {
            for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                ip.remove("version");
            }
        }
        serde_json::from_value(value).map_err(|error| ConfigError::Decode { what: what(), error })
    }

    /// The result as JSON of `version`. 0.1.0 and 0.2.0 hold the first IPv4 and the first
    /// IPv6 address with their routes, as libcni converts; a result with no address has no
    /// such form (libcni refuses it too).
    pub fn to_value(&self, version: CniVersion) -> Result<Value, ConfigError> {
        if version.legacy_result() {
            return self.to_legacy(version);
        }
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        let Some(object) = value.as_object_mut() else {
            return Ok(value);
        };
        if version < CniVersion::V1_1_0 {
            strip(object.get_mut("interfaces"), &NEW_INTERFACE_KEYS);
            strip(object.get_mut("routes"), &NEW_ROUTE_KEYS);
        }
        if version.ips_have_version()
            && let Some(ips) = object.get_mut("ips").and_then(Value::as_array_mut)
        {
            for (ip, config) in ips.iter_mut().zip(&self.ips) {
                if let Some(ip) = ip.as_object_mut() {
                    let family = if config.address.is_ipv4() { "4" } else { "6" };
                    ip.insert("version".into(), Value::String(family.into()));
                }
            }
        }
        let mut out = Map::new();
        out.insert("cniVersion".into(), Value::String(version.as_str().into()));
        out.extend(std::mem::take(object));
        Ok(Value::Object(out))
    }

    fn to_legacy(&self, version: CniVersion) -> Result<Value, ConfigError> {
        let mut out = Map::new();
        out.insert("cniVersion".into(), Value::String(version.as_str().into()));
        for (key, v4) in [("ip4", true), ("ip6", false)] {
            let Some(ip) = self.ips.iter().find(|ip| ip.address.is_ipv4() == v4) else { continue };
            let routes: Vec<Value> = self
                .routes
                .iter()
                .filter(|r| r.dst.is_ipv4() == v4)
                .map(|r| {
                    let mut route = serde_json::json!({"dst": r.dst});
                    if let Some(gw) = r.gw {
                        route["gw"] = serde_json::json!(gw);
                    }
                    route
                })
                .collect();
            let mut config = serde_json::json!({"ip": ip.address});
            if let Some(gateway) = ip.gateway {
                config["gateway"] = serde_json::json!(gateway);
            }
            if !routes.is_empty() {
                config["routes"] = Value::Array(routes);
            }
            out.insert(key.into(), config);
        }
        if out.len() == 1 {
            return Err(ConfigError::invalid(
                "result",
                format!(
                    "has no IP address, which a CNI {version} result must have (give the network an ipam)"
                ),
            ));
        }
        if !self.dns.is_empty() {
            out.insert("dns".into(), serde_json::to_value(&self.dns).unwrap_or(Value::Null));
        }
        Ok(Value::Object(out))
    }
}

/// A 0.1.0/0.2.0 result (`ip4`, `ip6`: `ip`, `gateway`, `routes`; `dns`), as libcni converts
/// it up: the addresses and routes in order, no interfaces.
fn from_legacy(value: &Value) -> Result<CniResult, serde_json::Error> {
    #[derive(Deserialize)]
    struct Legacy {
        #[serde(default)]
        ip4: Option<LegacyIp>,
        #[serde(default)]
        ip6: Option<LegacyIp>,
        #[serde(default)]
        dns: Dns,
    }
    #[derive(Deserialize)]
    struct LegacyIp {
        ip: IpPrefix,
        #[serde(default)]
        gateway: Option<IpAddr>,
        #[serde(default)]
        routes: Vec<Route>,
    }
    let legacy: Legacy = serde_json::from_value(value.clone())?;
    let mut result = CniResult { dns: legacy.dns, ..Default::default() };
    for ip in [legacy.ip4, legacy.ip6].into_iter().flatten() {
        result.ips.push(IpConfig { address: ip.ip, gateway: ip.gateway, interface: None });
        result.routes.extend(ip.routes);
    }
    Ok(result)
}

fn strip(list: Option<&mut Value>, keys: &[&str]) {
    for item in list.and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(item) = item.as_object_mut() {
            for key in keys {
                item.remove(*key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "cni0", "mac": "0a:58:0a:f4:00:01"},
                           {"name": "eth0", "mac": "0a:58:0a:f4:00:02", "mtu": 1450, "sandbox": "/var/run/netns/x", "pciID": "0000:3b:02.0"}],
            "ips": [{"address": "10.244.0.2/24", "gateway": "10.244.0.1", "interface": 1},
                    {"address": "fd00::2/64", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1", "priority": 100}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        })
    }

    #[test]
    fn converts_between_versions() {
        let result = CniResult::from_value(&sample()).unwrap();
        assert_eq!(result.to_value(CniVersion::V1_1_0).unwrap(), sample());
        let v04 = result.to_value(CniVersion::V0_4_0).unwrap();
        assert_eq!(v04["cniVersion"], "0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert!(v04["interfaces"][1].get("mtu").is_none() && v04["interfaces"][1].get("pciID").is_none());
        assert!(v04["routes"][0].get("priority").is_none());
        let v10 = result.to_value(CniVersion::V1_0_0).unwrap();
        assert!(v10["ips"][0].get("version").is_none());
        // Back up from 0.4.0: the version keys go, the rest stays.
        let again = CniResult::from_value(&v04).unwrap();
        assert_eq!(again.ips, result.ips);
        assert_eq!(again.interfaces[0], result.interfaces[0]);
    }

    #[test]
    fn converts_to_and_from_the_0_2_0_shape_as_libcni() {
        let result = CniResult::from_value(&sample()).unwrap();
        let v02 = result.to_value(CniVersion::V0_2_0).unwrap();
        assert_eq!(
            v02,
            json!({"cniVersion": "0.2.0",
                   "ip4": {"ip": "10.244.0.2/24", "gateway": "10.244.0.1",
                           "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}]},
                   "ip6": {"ip": "fd00::2/64"},
                   "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}})
        );
        let back = CniResult::from_value(&v02).unwrap();
        assert!(back.interfaces.is_empty());
        assert_eq!(
            back.ips.iter().map(|ip| ip.address.to_string()).collect::<Vec<_>>(),
            ["10.244.0.2/24", "fd00::2/64"]
        );
        assert_eq!(back.ips[0].gateway, Some("10.244.0.1".parse().unwrap()));
        assert_eq!(back.routes.len(), 1);
        assert_eq!(back.dns, result.dns);
        // A plugin that prints the old shape without a version is read by its shape; 0.1.0 too.
        let unversioned = CniResult::from_value(&json!({"ip4": {"ip": "10.1.0.5/16"}})).unwrap();
        assert_eq!(unversioned.ips[0].address.to_string(), "10.1.0.5/16");
        assert_eq!(result.to_value(CniVersion::V0_1_0).unwrap()["cniVersion"], "0.1.0");
        // No address: no 0.2.0 form.
        let err = CniResult::default().to_value(CniVersion::V0_2_0).unwrap_err();
        assert!(err.to_string().contains("no IP address"), "{err}");
    }

    #[test]
    fn refuses_bad_results() {
        let err = CniResult::from_value(&json!({"cniVersion": "0.2.0", "ip4": {}})).unwrap_err();
        assert!(err.to_string().contains("missing field `ip`"), "{err}");
        let err = CniResult::from_value(&json!({"cniVersion": "0.9.0", "ips": []})).unwrap_err();
        assert_eq!(crate::error::Failure::code(&err), 1);
        let err = CniResult::from_value(&json!({"ips": [{"address": "10.0.0.1"}]})).unwrap_err();
        assert_eq!(crate::error::Failure::code(&err), 6);
        assert!(err.to_string().contains("not an address/prefix"), "{err:?}");
    }
}
