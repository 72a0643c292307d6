//! The pool config: the SR-IOV network device plugin's `config.json`, read unchanged.
//!
//! `{"resourceList": [{"resourceName": ..., "resourcePrefix": ..., "deviceType": "netDevice",
//! "excludeTopology": false, "selectors": {...} or [{...}, ...], "additionalInfo": {...}}]}`
//!
//! Read as the device plugin's Go decoding reads it: keys match case-insensitively (the SR-IOV
//! operator renders `IsRdma`, `NeedVhostNet`), `null` is an absent key, and an unknown key
//! (`SelectorObj`) is ignored with a warning naming it. Everything is checked before the agent
//! starts: a bad value is an error that names the file, the pool and the key; so is a selector
//! of the device plugin that Plexus does not implement.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;

use plexus_hw::{PciAddress, PciId};
use serde_json::Value;

/// The resource prefix when neither the pool nor the command line gives one, as the SR-IOV
/// device plugin has it.
pub const DEFAULT_PREFIX: &str = "intel.com";

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The config file.
        path: String,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path}: not valid JSON: {error}")]
    Json {
        /// The config file.
        path: String,
        /// Where and why parsing stopped.
        error: serde_json::Error,
    },
    /// A key or value is wrong.
    #[error("{path}: {location}: {message}")]
    Invalid {
        /// The config file.
        path: String,
        /// The pool and key (`resourceList[1] (sriov_dpdk): selectors[0].vendors`).
        location: String,
        /// What is wrong.
        message: String,
    },
}

/// All pools, in the order of the file (a device goes to the first pool that selects it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolConfig {
    /// The pools.
    pub pools: Vec<PoolSpec>,
}

/// One resource pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// `resourceName`.
    pub name: String,
    /// `resourcePrefix`, else the command line's, else `intel.com`.
    pub prefix: String,
    /// `excludeTopology`: advertise no NUMA node for the pool's devices.
    pub exclude_topology: bool,
    /// The selector objects, OR-ed in order.
    pub selectors: Vec<Selector>,
    /// `additionalInfo`: per device ID (or `*` for all), extra key/values for the device's
    /// info in the container's environment.
    pub additional_info: BTreeMap<String, BTreeMap<String, String>>,
}

impl PoolSpec {
    /// The extended resource name, `<prefix>/<name>`.
    pub fn resource_name(&self) -> String {
        format!("{}/{}", self.prefix, self.name)
    }
}

/// A PF named by netdev name or PCI address, optionally limited to some VF indexes
/// (`ens1f0#0-3,7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfRef<T> {
    /// The PF.
    pub pf: T,
    /// The VF indexes, all when `None`.
    pub vfs: Option<Vec<RangeInclusive<u32>>>,
}

impl<T> PfRef<T> {
    /// True when VF `index` is within the ranges.
    pub fn includes(&self, index: u32) -> bool {
        self.vfs.as_ref().is_none_or(|ranges| ranges.iter().any(|r| r.contains(&index)))
    }
}

/// One `netDevice` selector object; every non-empty field must match (AND).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// `vendors`.
    pub vendors: Vec<PciId>,
    /// `devices`.
    pub devices: Vec<PciId>,
    /// `drivers`.
    pub drivers: Vec<String>,
    /// `pciAddresses`.
    pub pci_addresses: Vec<PciAddress>,
    /// `pfNames`, compared case-insensitively (stored lower-case).
    pub pf_names: Vec<PfRef<String>>,
    /// `rootDevices`.
    pub root_devices: Vec<PfRef<PciAddress>>,
    /// `linkTypes` (`ether`, `infiniband`, ...).
    pub link_types: Vec<String>,
    /// `isRdma`: the device must have an RDMA device, and the container gets its character
    /// devices. False is no filter, as in the device plugin (every mlx5 VF has one).
    pub is_rdma: bool,
    /// `needVhostNet`: the devices it selects get `/dev/vhost-net` and `/dev/net/tun`.
    pub need_vhost_net: bool,
}

/// The keys of a pool object.
const POOL_KEYS: [&str; 6] =
    ["resourceName", "resourcePrefix", "deviceType", "excludeTopology", "selectors", "additionalInfo"];

/// Selectors of the SR-IOV device plugin that Plexus does not implement: refused by name (a
/// pool that silently selected more than asked would be worse).
const UNSUPPORTED_SELECTOR_KEYS: [&str; 5] = ["acpiIndexes", "ddpProfiles", "pKeys", "vdpaType", "auxTypes"];

/// Every selector key the device plugin knows: the others are ignored with a warning.
const SELECTOR_KEYS_ALL: [&str; 14] = [
    "vendors",
    "devices",
    "drivers",
    "pciAddresses",
    "pfNames",
    "rootDevices",
    "linkTypes",
    "isRdma",
    "needVhostNet",
    "acpiIndexes",
    "ddpProfiles",
    "pKeys",
    "vdpaType",
    "auxTypes",
];

/// The object's value at `key`, matched as Go matches a struct field (the exact key first,
/// else any case); `None` when absent or `null`.
fn lookup<'a>(object: &'a serde_json::Map<String, Value>, key: &str) -> Option<(&'a String, &'a Value)> {
    object
        .get_key_value(key)
        .or_else(|| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
        .filter(|(_, v)| !v.is_null())
}

/// The object's value at `key` as a `T`, `None` when absent; a wrong type names the key.
fn field<T: serde::de::DeserializeOwned>(
    object: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<T>, (String, String)> {
    match lookup(object, key) {
        None => Ok(None),
        Some((name, value)) => T::deserialize(value).map(Some).map_err(|e| (name.clone(), e.to_string())),
    }
}

/// Logs each key not in `known` (in any case) as ignored, as the device plugin ignores it.
fn warn_unknown(object: &serde_json::Map<String, Value>, known: &[&str], place: &Place<'_>, inner: &str) {
    for key in object.keys().filter(|k| !known.iter().any(|known| known.eq_ignore_ascii_case(k))) {
        tracing::warn!("{}: {}{inner}: ignoring the unknown key {key:?}", place.path, place.location);
    }
}

/// Builds an `Invalid` error for one location.
struct Place<'a> {
    path: &'a str,
    location: String,
}

impl Place<'_> {
    fn err(&self, key: &str, message: impl fmt::Display) -> ConfigError {
        let location =
            if key.is_empty() { self.location.clone() } else { format!("{}: {key}", self.location) };
        ConfigError::Invalid { path: self.path.to_owned(), location, message: message.to_string() }
    }
}

impl PoolConfig {
    /// Reads and checks the config file at `path`; pools without `resourcePrefix` get
    /// `default_prefix`.
    pub fn load(path: &Path, default_prefix: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.display().to_string(), error })?;
        Self::parse(&text, &path.display().to_string(), default_prefix)
    }

    /// Checks config text; `path` names it in errors.
    pub fn parse(text: &str, path: &str, default_prefix: &str) -> Result<Self, ConfigError> {
        let top = Place { path, location: "top level".to_owned() };
        check_prefix(default_prefix).map_err(|m| top.err("--resource-prefix", m))?;
        let value: Value =
            serde_json::from_str(text).map_err(|error| ConfigError::Json { path: path.to_owned(), error })?;
        let Value::Object(object) = value else {
            return Err(top.err("", "expected an object with \"resourceList\""));
        };
        warn_unknown(&object, &["resourceList"], &top, "");
        let list = match lookup(&object, "resourceList") {
            Some((_, Value::Array(list))) => list,
            Some((key, _)) => return Err(top.err(key, "expected a list of pools")),
            None => return Err(top.err("resourceList", "missing")),
        };
        let mut pools = Vec::with_capacity(list.len());
        let mut seen = BTreeSet::new();
        for (i, raw) in list.iter().enumerate() {
            let name = raw
                .as_object()
                .and_then(|o| lookup(o, "resourceName"))
                .and_then(|(_, v)| v.as_str())
                .map_or_else(|| "?".into(), shortened);
            let place = Place { path, location: format!("resourceList[{i}] ({name})") };
            let pool = parse_pool(raw, &place, default_prefix)?;
            if !seen.insert(pool.resource_name()) {
                return Err(place.err("resourceName", format!("{} is defined twice", pool.resource_name())));
            }
            pools.push(pool);
        }
        Ok(Self { pools })
    }
}

fn parse_pool(raw: &Value, place: &Place<'_>, default_prefix: &str) -> Result<PoolSpec, ConfigError> {
    let Value::Object(object) = raw else {
        return Err(place.err("", "expected an object"));
    };
    let at = |(key, message): (String, String)| place.err(&key, message);
    warn_unknown(object, &POOL_KEYS, place, "");
    let name: String =
        field(object, "resourceName").map_err(at)?.ok_or_else(|| place.err("resourceName", "missing"))?;
    check_name(&name).map_err(|m| place.err("resourceName", m))?;
    let prefix =
        field::<String>(object, "resourcePrefix").map_err(at)?.unwrap_or_else(|| default_prefix.to_owned());
    check_prefix(&prefix).map_err(|m| place.err("resourcePrefix", m))?;
    match field::<String>(object, "deviceType").map_err(at)?.as_deref() {
        None | Some("netDevice") => {}
        Some(other) => {
            return Err(place.err("deviceType", format!("{other:?} is not supported (only \"netDevice\")")));
        }
    }
    let exclude_topology = field(object, "excludeTopology").map_err(at)?.unwrap_or(false);
    let additional_info = field(object, "additionalInfo").map_err(at)?.unwrap_or_default();
    let raw_selectors = match lookup(object, "selectors") {
        None => return Err(place.err("selectors", "missing")),
        Some((_, Value::Array(list))) => list.clone(),
        Some((_, one @ Value::Object(_))) => vec![one.clone()],
        Some((key, _)) => return Err(place.err(key, "expected an object or a list of objects")),
    };
    if raw_selectors.is_empty() {
        return Err(place.err("selectors", "empty list: the pool would select nothing"));
    }
    let mut selectors = Vec::with_capacity(raw_selectors.len());
    for (j, value) in raw_selectors.iter().enumerate() {
        let err = |key: &str, message: String| {
            let key =
                if key.is_empty() { format!("selectors[{j}]") } else { format!("selectors[{j}].{key}") };
            place.err(&key, message)
        };
        let Value::Object(object) = value else {
            return Err(err("", "expected an object".into()));
        };
        warn_unknown(object, &SELECTOR_KEYS_ALL, place, &format!(": selectors[{j}]"));
        selectors.push(parse_selector(object, &err)?);
    }
    Ok(PoolSpec { name, prefix, exclude_topology, selectors, additional_info })
}

fn parse_selector(
    object: &serde_json::Map<String, Value>,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Selector, ConfigError> {
    // An operator renders every field: an empty list or string asks for nothing.
    let used = |v: &Value| !matches!(v, Value::Array(a) if a.is_empty()) && v.as_str() != Some("");
    if let Some((key, _)) =
        UNSUPPORTED_SELECTOR_KEYS.iter().find_map(|k| lookup(object, k).filter(|(_, v)| used(v)))
    {
        return Err(err(key, "this selector of the SR-IOV device plugin is not supported by Plexus".into()));
    }
    let at = |(key, message): (String, String)| err(&key, message);
    let strings = |key: &str| -> Result<Vec<String>, ConfigError> {
        let values: Vec<String> = field(object, key).map_err(at)?.unwrap_or_default();
        match values.iter().find(|v| v.trim().is_empty()) {
            Some(_) => Err(err(key, "empty string".into())),
            None => Ok(values),
        }
    };
    let ids = |key: &str| -> Result<Vec<PciId>, ConfigError> {
        strings(key)?
            .iter()
            .map(|v| {
                // The SR-IOV device plugin compares the text with sysfs's digits: "0x8086"
                // would select nothing there, so it is refused here rather than read kindly.
                if v.starts_with("0x") || v.starts_with("0X") {
                    let hint = v[2..].to_owned();
                    return Err(err(key, format!("{v:?}: write PCI IDs without 0x (\"{hint}\")")));
                }
                PciId::parse(v).ok_or_else(|| err(key, format!("{v:?} is not a PCI ID (4 hex digits)")))
            })
            .collect()
    };
    let link_types = strings("linkTypes")?
        .into_iter()
        .map(|t| {
            let known =
                ["ether", "infiniband", "loopback", "none"].contains(&t.as_str()) || t.parse::<u16>().is_ok();
            if known {
                Ok(t)
            } else {
                Err(err(
                    "linkTypes",
                    format!("{t:?} is not a link type (ether, infiniband, loopback, none or a number)"),
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Selector {
        vendors: ids("vendors")?,
        devices: ids("devices")?,
        drivers: strings("drivers")?,
        pci_addresses: strings("pciAddresses")?
            .iter()
            .map(|a| a.parse::<PciAddress>().map_err(|e| err("pciAddresses", e.to_string())))
            .collect::<Result<_, _>>()?,
        pf_names: strings("pfNames")?
            .iter()
            .map(|v| {
                parse_pf_ref(v, |name| (!name.is_empty()).then(|| name.to_lowercase()))
                    .map_err(|m| err("pfNames", m))
            })
            .collect::<Result<_, _>>()?,
        root_devices: strings("rootDevices")?
            .iter()
            .map(|v| {
                parse_pf_ref(v, |addr| addr.parse::<PciAddress>().ok()).map_err(|m| err("rootDevices", m))
            })
            .collect::<Result<_, _>>()?,
        link_types,
        is_rdma: field(object, "isRdma").map_err(at)?.unwrap_or(false),
        need_vhost_net: field(object, "needVhostNet").map_err(at)?.unwrap_or(false),
    })
}

/// Parses `pf` or `pf#0-3,7`.
fn parse_pf_ref<T>(value: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<PfRef<T>, String> {
    let (pf, ranges) = match value.split_once('#') {
        Some((pf, ranges)) => (pf, Some(ranges)),
        None => (value, None),
    };
    let pf = parse(pf).ok_or_else(|| format!("{value:?}: {pf:?} does not name a PF"))?;
    let vfs = match ranges {
        None => None,
        Some(text) => Some(
            text.split(',')
                .map(|part| {
                    let bad = || format!("{value:?}: bad VF range {part:?} (expected N or N-M, N <= M)");
                    let (lo, hi) = part.split_once('-').unwrap_or((part, part));
                    let (lo, hi) = (
                        lo.trim().parse::<u32>().map_err(|_| bad())?,
                        hi.trim().parse::<u32>().map_err(|_| bad())?,
                    );
                    if lo > hi {
                        return Err(bad());
                    }
                    Ok(lo..=hi)
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(PfRef { pf, vfs })
}

/// `text`, or its first 40 characters and its length when it is longer: an error shows it.
fn shortened(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
        None => text.to_owned(),
    }
}

/// The name part of an extended resource, as Kubernetes checks it (a qualified name's name:
/// at most 63 characters, letters and digits at both ends, `-`, `_` and `.` between).
fn check_name(name: &str) -> Result<(), String> {
    const MAX: usize = 63;
    let shown = format!("{:?}", shortened(name));
    if name.len() > MAX {
        return Err(format!("{shown} is longer than {MAX} characters"));
    }
    let inner = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last))
            if first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| inner(*b)) =>
        {
            Ok(())
        }
        _ => Err(format!("{shown} must match ^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")),
    }
}

/// A resource prefix is a DNS subdomain, as Kubernetes requires of extended resource domains.
fn check_prefix(prefix: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    // Kubernetes's own resources: an extended resource cannot be in its domain.
    if prefix == "kubernetes.io" || prefix.ends_with(".kubernetes.io") {
        return Err(format!("{prefix:?} is Kubernetes's own domain, not one for extended resources"));
    }
    if prefix.len() <= 253 && prefix.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("{prefix:?} is not a DNS subdomain (lower-case letters, digits, '-' and '.')"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PoolConfig, ConfigError> {
        PoolConfig::parse(text, "pools.json", DEFAULT_PREFIX)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_the_sriov_device_plugin_format() {
        let config = parse(
            r#"{"resourceList": [
                {"resourceName": "intel_sriov_netdevice",
                 "selectors": {"vendors": ["8086"], "devices": ["154c", "10ed"], "drivers": ["iavf", "i40evf"],
                               "pfNames": ["ens1f0#0-3,7", "ENS2F1"], "linkTypes": ["ether"]}},
                {"resourceName": "intel_sriov_dpdk", "resourcePrefix": "example.org", "deviceType": "netDevice",
                 "excludeTopology": true,
                 "selectors": [{"drivers": ["vfio-pci"]}, {"rootDevices": ["0000:20:00.1#2-3"], "isRdma": false, "needVhostNet": true}],
                 "additionalInfo": {"*": {"token": "abc"}}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(config.pools.len(), 2);
        let first = &config.pools[0];
        assert_eq!(first.resource_name(), "intel.com/intel_sriov_netdevice");
        assert_eq!(first.selectors.len(), 1);
        let s = &first.selectors[0];
        assert_eq!(s.vendors, [PciId(0x8086)]);
        assert_eq!(s.devices, [PciId(0x154c), PciId(0x10ed)]);
        assert_eq!(s.pf_names[0].pf, "ens1f0");
        assert_eq!(s.pf_names[0].vfs, Some(vec![0..=3, 7..=7]));
        assert!(s.pf_names[0].includes(7) && !s.pf_names[0].includes(4));
        assert_eq!(s.pf_names[1].pf, "ens2f1", "PF names compare case-insensitively");
        assert!(s.pf_names[1].includes(99));
        let second = &config.pools[1];
        assert_eq!(second.resource_name(), "example.org/intel_sriov_dpdk");
        assert!(second.exclude_topology);
        assert_eq!(second.selectors.len(), 2);
        assert_eq!(second.selectors[1].root_devices[0].pf, "0000:20:00.1".parse().unwrap());
        assert!(!second.selectors[1].is_rdma);
        assert!(second.selectors[1].need_vhost_net);
        assert_eq!(second.additional_info["*"]["token"], "abc");
    }

    #[test]
    fn reads_operator_rendered_configs_as_the_device_plugin_does() {
        // The SR-IOV network operator's rendering: Go field names, nulls, every field present,
        // keys the device plugin ignores.
        let config = parse(
            r#"{"ResourceList": [
                {"resourceName": "mlnx_rdma", "ResourcePrefix": "openshift.io", "SelectorObj": null,
                 "selectors": {"Vendors": ["15b3"], "Devices": ["101e"], "Drivers": null, "PfNames": ["ens3f0"],
                               "RootDevices": null, "LinkTypes": [], "DDPProfiles": [], "IsRdma": true,
                               "NeedVhostNet": false, "vdpaType": "", "pKeys": null, "colour": "blue"},
                 "excludeTopology": false},
                {"resourcename": "mlnx_dpdk", "SELECTORS": [{"isRdma": false, "drivers": ["mlx5_core"]}]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(config.pools[0].resource_name(), "openshift.io/mlnx_rdma");
        let s = &config.pools[0].selectors[0];
        assert_eq!((s.vendors.clone(), s.devices.clone()), (vec![PciId(0x15b3)], vec![PciId(0x101e)]));
        assert!(s.drivers.is_empty() && s.root_devices.is_empty() && s.link_types.is_empty());
        assert!(s.is_rdma && !s.need_vhost_net);
        assert_eq!(config.pools[1].resource_name(), "intel.com/mlnx_dpdk");
        assert!(!config.pools[1].selectors[0].is_rdma, "false is no filter");
        // What Plexus does not implement is still refused by name, whatever its case.
        let err = error(r#"{"resourceList": [{"resourceName": "p", "selectors": {"DDPPROFILES": ["x"]}}]}"#);
        assert!(err.contains("DDPPROFILES") && err.contains("not supported"), "{err}");
    }

    #[test]
    fn command_line_prefix_applies_unless_the_pool_has_one() {
        let text = r#"{"resourceList": [{"resourceName": "a", "selectors": {}},
                                         {"resourceName": "b", "resourcePrefix": "x.io", "selectors": {}}]}"#;
        let config = PoolConfig::parse(text, "p", "plexus.dev").unwrap();
        assert_eq!(config.pools[0].resource_name(), "plexus.dev/a");
        assert_eq!(config.pools[1].resource_name(), "x.io/b");
        let err = PoolConfig::parse(text, "p", "Bad_Prefix").unwrap_err().to_string();
        assert!(err.contains("--resource-prefix") && err.contains("Bad_Prefix"), "{err}");
    }

    #[test]
    fn a_huge_resource_name_is_refused_and_shown_short() {
        let name = "a".repeat(1 << 20);
        let text = format!(r#"{{"resourceList": [{{"resourceName": "{name}", "selectors": {{}}}}]}}"#);
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("longer than 63 characters") && err.len() < 400,
            "{}",
            &err[..err.len().min(400)]
        );
        assert!(parse(&text.replace(&name, &"a".repeat(63))).is_ok());
    }

    #[test]
    fn errors_name_the_file_pool_and_key() {
        let cases = [
            (
                r#"{"resourceList": [{"resourceName": "p1", "selectors": {}}, {"resourceName": "p2", "selectors": [{}, {"vendors": ["80861"]}]}]}"#,
                ["pools.json", "resourceList[1] (p2)", "selectors[1].vendors", "\"80861\""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "bad name", "selectors": {}}]}"#,
                [
                    "resourceList[0] (bad name)",
                    "resourceName",
                    "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
                    "",
                ],
            ),
            (
                r#"{"resourceList": [{"resourceName": "_p", "selectors": {}}]}"#,
                ["resourceList[0] (_p)", "resourceName", "must match", ""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "p", "selectors": {"vendors": ["0x8086"]}}]}"#,
                ["resourceList[0] (p)", "selectors[0].vendors", "write PCI IDs without 0x", "\"8086\""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "p", "resourcePrefix": "kubernetes.io", "selectors": {}}]}"#,
                ["resourceList[0] (p)", "resourcePrefix", "Kubernetes's own domain", ""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "p", "selectors": {"pfNames": ["ens1f0#3-1"]}}]}"#,
                ["(p)", "selectors[0].pfNames", "bad VF range", "\"3-1\""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "p", "selectors": {"rootDevices": ["0000:20:00#1"]}}]}"#,
                ["(p)", "selectors[0].rootDevices", "does not name a PF", ""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "p", "selectors": {"pciAddresses": ["20:02.0"]}}]}"#,
                ["(p)", "selectors[0].pciAddresses", "expected dddd:bb:dd.f", ""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "p", "selectors": {"linkTypes": ["eth"]}}]}"#,
                ["(p)", "selectors[0].linkTypes", "\"eth\"", ""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "p", "selectors": {"ddpProfiles": ["x"]}}]}"#,
                ["(p)", "selectors[0].ddpProfiles", "not supported", ""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "p", "deviceType": "accelerator", "selectors": {}}]}"#,
                ["(p)", "deviceType", "\"accelerator\"", ""],
            ),
            (r#"{"resourceList": [{"resourceName": "p"}]}"#, ["(p)", "selectors: missing", "", ""]),
            (
                r#"{"resourceList": [{"resourceName": "p", "selectors": []}]}"#,
                ["(p)", "selectors: empty list", "", ""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "p", "selectors": {"isRdma": "yes"}}]}"#,
                ["(p)", "selectors[0].isRdma", "expected a boolean", ""],
            ),
            (
                r#"{"resourceList": [{"resourceName": "p", "selectors": {}}, {"resourceName": "p", "selectors": {}}]}"#,
                ["resourceList[1] (p)", "intel.com/p is defined twice", "", ""],
            ),
            (r#"{"resourceList": {}}"#, ["top level: resourceList", "expected a list", "", ""]),
            (r#"{"resourceList": [ }"#, ["pools.json", "not valid JSON", "line 1", ""]),
        ];
        for (text, wanted) in cases {
            let err = error(text);
            for part in wanted {
                assert!(err.contains(part), "{err:?} should contain {part:?}");
            }
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = PoolConfig::load(Path::new("/nonexistent/pools.json"), DEFAULT_PREFIX).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/pools.json: "), "{err}");
    }
}
