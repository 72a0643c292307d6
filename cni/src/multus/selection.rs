//! The pod's network selection: the `k8s.v1.cni.cncf.io/networks` annotation, as a comma list
//! (`ns/name@ifname, other`) or a JSON list of selection elements.

use std::net::IpAddr;

use plexus_hw::{IfName, MacAddr};
use serde_json::{Map, Value};

use crate::keys::Keys;
use crate::spec::ConfigError;
use crate::spec::result::IpPrefix;

/// The annotation with the secondary networks.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The annotation that replaces the cluster network.
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// One element of the selection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkSelection {
    /// The NetworkAttachmentDefinition's name.
    pub name: String,
    /// Its namespace, when given.
    pub namespace: Option<String>,
    /// The interface name wanted in the pod.
    pub interface: Option<String>,
    /// A MAC for the interface (`runtimeConfig.mac`).
    pub mac: Option<String>,
    /// Addresses for the interface (`runtimeConfig.ips`).
    pub ips: Vec<String>,
    /// `default-route`: gateways whose default route this attachment keeps (empty: keep the
    /// delegate's own).
    pub default_route: Option<Vec<IpAddr>>,
    /// `portMappings`.
    pub port_mappings: Option<Value>,
    /// `bandwidth`.
    pub bandwidth: Option<Value>,
    /// `cni-args`: given to every plugin of the network as `args.cni`.
    pub cni_args: Option<Map<String, Value>>,
    /// `infiniband-guid`.
    pub infiniband_guid: Option<String>,
    /// `deviceID`.
    pub device_id: Option<String>,
}

const KNOWN: [&str; 11] = [
    "name",
    "namespace",
    "interface",
    "mac",
    "ips",
    "default-route",
    "portMappings",
    "bandwidth",
    "cni-args",
    "infiniband-guid",
    "deviceID",
];

fn bad(annotation: &str, index: usize, element: &str, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{annotation}[{index}] ({element})"), msg.to_string())
}

/// Parses `text` of `annotation`. An element with a bad name, interface, MAC or address is an
/// error naming it.
pub fn parse(annotation: &str, text: &str) -> Result<Vec<NetworkSelection>, ConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let elements = if text.starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(text)
            .map_err(|error| ConfigError::Decode { what: annotation.to_owned(), error })?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| from_json(annotation, i, item))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        text.split(',')
            .map(str::trim)
            .enumerate()
            .map(|(i, item)| from_short(annotation, i, item))
            .collect::<Result<Vec<_>, _>>()?
    };
    for (i, element) in elements.iter().enumerate() {
        validate(annotation, i, element)?;
    }
    Ok(elements)
}

/// `ns/name@ifname`, each part but the name optional.
fn from_short(annotation: &str, index: usize, item: &str) -> Result<NetworkSelection, ConfigError> {
    if item.is_empty() {
        return Err(bad(annotation, index, item, "empty element"));
    }
    let (rest, interface) = match item.split_once('@') {
        Some((rest, interface)) => (rest, Some(interface.to_owned())),
        None => (item, None),
    };
    let (namespace, name) = match rest.split_once('/') {
        Some((namespace, name)) => (Some(namespace.to_owned()), name.to_owned()),
        None => (None, rest.to_owned()),
    };
    Ok(NetworkSelection { name, namespace, interface, ..Default::default() })
}

fn from_json(annotation: &str, index: usize, item: &Value) -> Result<NetworkSelection, ConfigError> {
    let Value::Object(map) = item else {
        return Err(bad(annotation, index, &item.to_string(), "must be an object"));
    };
    let what = format!("{annotation}[{index}]");
    let keys = Keys::new(map, &what);
    // Multus decodes elements with Go's encoding/json: other keys (its own examples have
    // "gateway", its tests "ipRequest") are ignored.
    keys.warn_unknown(&KNOWN);
    let name = keys.string("name")?.ok_or_else(|| bad(annotation, index, &item.to_string(), "no name"))?;
    let default_route = match keys.value("default-route") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|gw| {
                    gw.as_str().and_then(|s| s.parse::<IpAddr>().ok()).ok_or_else(|| {
                        bad(annotation, index, &name, format!("default-route: {gw} is not an IP address"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(keys.wrong("default-route", "a list of IP addresses")),
    };
    Ok(NetworkSelection {
        namespace: keys.string("namespace")?,
        interface: keys.string("interface")?,
        mac: keys.string("mac")?,
        ips: keys.strings("ips")?.unwrap_or_default(),
        default_route,
        port_mappings: keys.value("portMappings").cloned(),
        bandwidth: keys.value("bandwidth").cloned(),
        cni_args: match keys.value("cni-args") {
            None => None,
            Some(Value::Object(args)) => Some(args.clone()),
            Some(_) => return Err(keys.wrong("cni-args", "an object")),
        },
        infiniband_guid: keys.string("infiniband-guid")?,
        device_id: keys.string("deviceID")?,
        name,
    })
}

/// A DNS-1123 label: at most 63 lower-case letters, digits and '-', alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters (object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn validate(annotation: &str, index: usize, e: &NetworkSelection) -> Result<(), ConfigError> {
    let element = match &e.namespace {
        Some(ns) => format!("{ns}/{}", e.name),
        None => e.name.clone(),
    };
    let fail = |msg: String| Err(bad(annotation, index, &element, msg));
    if !is_dns1123_subdomain(&e.name) {
        return fail(format!("network name {:?} is not a DNS-1123 subdomain", e.name));
    }
    if let Some(ns) = &e.namespace
        && !is_dns1123_label(ns)
    {
        return fail(format!("namespace {ns:?} is not a DNS-1123 label"));
    }
    if let Some(interface) = &e.interface
        && let Err(err) = interface.parse::<IfName>()
    {
        return fail(err.to_string());
    }
    if let Some(mac) = &e.mac
        && let Err(err) = MacAddr::parse_assignable(mac)
    {
        return fail(format!("mac: {err}"));
    }
    for ip in &e.ips {
        if let Err(err) = ip.parse::<IpPrefix>() {
            return fail(format!("ips: {err}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_list_form() {
        let got = parse(NETWORKS_ANNOTATION, "net-a, other-ns/net-b@fast0,net-c@eth9").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].name.as_str(), got[0].namespace.as_deref(), got[0].interface.as_deref()),
            ("net-a", None, None)
        );
        assert_eq!(
            (got[1].name.as_str(), got[1].namespace.as_deref(), got[1].interface.as_deref()),
            ("net-b", Some("other-ns"), Some("fast0"))
        );
        assert_eq!(got[2].interface.as_deref(), Some("eth9"));
        assert!(parse(NETWORKS_ANNOTATION, "  ").unwrap().is_empty());
    }

    #[test]
    fn json_form_with_every_key() {
        let got = parse(
            NETWORKS_ANNOTATION,
            r#"[{"name": "sriov-a", "namespace": "ns1", "interface": "vf0", "mac": "02:00:00:00:00:01",
                 "ips": ["10.1.1.5/24", "fd00::5/64"], "default-route": ["10.1.1.1"],
                 "portMappings": [{"hostPort": 8080, "containerPort": 80}], "bandwidth": {"ingressRate": 100},
                 "cni-args": {"foo": "bar"}, "infiniband-guid": "c2:11:22:33:44:55:66:77", "deviceID": "0000:3b:02.0"},
                {"Name": "plain"}]"#,
        )
        .unwrap();
        let a = &got[0];
        assert_eq!(a.ips, ["10.1.1.5/24", "fd00::5/64"]);
        assert_eq!(a.default_route, Some(vec!["10.1.1.1".parse().unwrap()]));
        assert_eq!(a.cni_args.as_ref().unwrap()["foo"], "bar");
        assert_eq!(a.device_id.as_deref(), Some("0000:3b:02.0"));
        assert_eq!(got[1].name, "plain", "keys match case-insensitively, as Go's JSON");
    }

    #[test]
    fn unknown_keys_are_ignored_as_multus_ignores_them() {
        // The shape of Multus's examples/macvlan-pod.yml ("gateway") and its tests ("ipRequest").
        let got = parse(
            NETWORKS_ANNOTATION,
            r#"[{"name": "macvlan-conf", "ips": ["10.1.1.101/24"], "mac": "c2:b0:57:49:47:f1",
                 "gateway": ["10.1.1.1"]},
                {"name": "net2", "ipRequest": ["10.2.0.5/24"]}]"#,
        )
        .unwrap();
        assert_eq!(got[0].ips, ["10.1.1.101/24"]);
        assert_eq!(got[0].mac.as_deref(), Some("c2:b0:57:49:47:f1"));
        assert_eq!(got[1], NetworkSelection { name: "net2".into(), ..Default::default() });
    }

    #[test]
    fn bad_elements_are_named() {
        let cases = [
            ("net-a,Bad_Name", "[1] (Bad_Name): network name \"Bad_Name\""),
            ("net-a@this-name-is-too-long", "[0] (net-a): invalid interface name"),
            ("NS/net", "namespace \"NS\""),
            ("a,,b", "[1] (): empty element"),
            (r#"[{"name": "x", "mac": "zz"}]"#, "[0] (x): mac: invalid MAC"),
            (
                r#"[{"name": "x", "mac": "ff:ff:ff:ff:ff:ff"}]"#,
                "[0] (x): mac: ff:ff:ff:ff:ff:ff is the broadcast",
            ),
            (r#"[{"name": "x", "ips": ["10.0.0.1"]}]"#, "[0] (x): ips:"),
            (r#"[{"name": "x", "interface": "a b"}]"#, "[0] (x): invalid interface name"),
            (r#"[{"name": "x", "default-route": ["gw"]}]"#, "default-route: \"gw\""),
            (r#"[{"namespace": "x"}]"#, "no name"),
            ("[{", "not valid JSON"),
        ];
        for (text, want) in cases {
            let err = parse(NETWORKS_ANNOTATION, text).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(want) && msg.starts_with(NETWORKS_ANNOTATION),
                "{msg} should contain {want:?}"
            );
        }
    }
}
