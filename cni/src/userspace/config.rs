//! The userspace CNI plugin's NAD keys, for the OVS-DPDK engine and vhost-user interfaces:
//! `host` and `container` objects (`engine`, `iftype`, `netType`, `vhost {mode, group,
//! socketfile}`, `bridge {bridgeName, vlanId}`), `sharedDir` and `ipam`; plus Plexus's
//! `ovsdbSocket` and `ovsRunDir`.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::keys::Keys;
use crate::paths;
use crate::spec::ConfigError;

/// Which side of the vhost-user socket OVS is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhostMode {
    /// OVS connects (`dpdkvhostuserclient`): the pod's application listens. OVS reconnects by
    /// itself when either side restarts, so this is the mode to prefer.
    Client,
    /// OVS listens (`dpdkvhostuser`) in its run directory; the socket is shown in the pod's.
    Server,
}

impl VhostMode {
    /// As the NADs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }

    /// The other side's mode.
    pub fn peer(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }
}

/// A userspace network, as Plexus runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserspaceConfig {
    /// The network's name.
    pub name: String,
    /// OVS's mode on the socket (`host.vhost.mode`, default client).
    pub mode: VhostMode,
    /// `host.vhost.group`: the socket's group (server mode, or the directory in client mode).
    pub group: Option<String>,
    /// `host.vhost.socketfile`: the socket's file name, default the port name.
    pub socket_file: Option<String>,
    /// `host.bridge.bridgeName`, default `br0`.
    pub bridge: String,
    /// `host.bridge.vlanId`: the port's VLAN tag.
    pub vlan: Option<u16>,
    /// `host.netType`: `bridge` or `interface` (OVS has no port outside a bridge: both are
    /// ports of the bridge).
    pub net_type: String,
    /// `sharedDir`: where sockets go when the pod has no `shared-dir` volume.
    pub shared_dir: PathBuf,
    /// The `container` object, as the pod's application is told it.
    pub container: Map<String, Value>,
    /// The whole config, for IPAM.
    pub raw: Value,
    /// `ovsdbSocket`.
    pub ovsdb_socket: Option<PathBuf>,
    /// `ovsRunDir`.
    pub ovs_run_dir: Option<PathBuf>,
}

fn invalid(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid("userspace config", format!("{key}: {why}"))
}

/// Checks `engine` and `iftype` of the `host` or `container` object `side`.
fn check_side(side: &str, object: &Map<String, Value>) -> Result<(), ConfigError> {
    let keys = Keys::new(object, "userspace config");
    match keys.string("engine")?.as_deref() {
        Some("ovs-dpdk") | None => {}
        Some("vpp") => {
            return Err(invalid(
                &format!("{side}.engine"),
                "\"vpp\" is not supported: Plexus attaches vhost-user interfaces to OVS-DPDK only",
            ));
        }
        Some(other) => {
            return Err(invalid(&format!("{side}.engine"), format!("{other:?} is not \"ovs-dpdk\"")));
        }
    }
    match keys.string("iftype")?.as_deref() {
        Some("vhostuser") | None => Ok(()),
        Some("memif") => {
            Err(invalid(&format!("{side}.iftype"), "\"memif\" needs VPP, which Plexus does not support"))
        }
        Some(other) => Err(invalid(&format!("{side}.iftype"), format!("{other:?} is not \"vhostuser\""))),
    }
}

impl UserspaceConfig {
    /// Reads the plugin config a delegate gets.
    pub fn parse(config: &Value) -> Result<Self, ConfigError> {
        let Value::Object(map) = config else {
            return Err(ConfigError::invalid("userspace config", "must be a JSON object"));
        };
        let keys = Keys::new(map, "userspace config");
        let name = keys.string("name")?.unwrap_or_default();
        let host = keys.object("host")?;
        if host.is_empty() {
            return Err(invalid("host", "missing (engine, iftype, vhost, bridge of the host side)"));
        }
        check_side("host", &host)?;
        let container = keys.object("container")?;
        check_side("container", &container)?;
        let host_keys = Keys::new(&host, "userspace config: host");
        let net_type = host_keys.string("netType")?.unwrap_or_else(|| "bridge".to_owned());
        if !["bridge", "interface"].contains(&net_type.as_str()) {
            return Err(invalid("host.netType", format!("{net_type:?} is not \"bridge\" or \"interface\"")));
        }
        let vhost = host_keys.object("vhost")?;
        let vhost_keys = Keys::new(&vhost, "userspace config: host.vhost");
        let mode = match vhost_keys.string("mode")?.as_deref() {
            None | Some("client") => VhostMode::Client,
            Some("server") => VhostMode::Server,
            Some(other) => {
                return Err(invalid("host.vhost.mode", format!("{other:?} is not \"client\" or \"server\"")));
            }
        };
        let socket_file = vhost_keys.string("socketfile")?;
        if let Some(file) = &socket_file
            && (file.is_empty() || file.contains('/') || file == "." || file == "..")
        {
            return Err(invalid("host.vhost.socketfile", format!("{file:?} must be a file name")));
        }
        let bridge = host_keys.object("bridge")?;
        let bridge_keys = Keys::new(&bridge, "userspace config: host.bridge");
        let vlan = match bridge_keys.value("vlanId") {
            None => None,
            Some(value) => match value.as_u64() {
                Some(0) => None,
                Some(id @ 1..=4094) => u16::try_from(id).ok(),
                _ => return Err(invalid("host.bridge.vlanId", format!("{value} is not a VLAN ID (1-4094)"))),
            },
        };
        let bridge_name = bridge_keys.string("bridgeName")?.unwrap_or_else(|| "br0".to_owned());
        if bridge_name.is_empty() || bridge_name.len() > 15 || bridge_name.contains(['/', ' ']) {
            return Err(invalid("host.bridge.bridgeName", format!("{bridge_name:?} is not a bridge name")));
        }
        Ok(Self {
            name,
            mode,
            group: vhost_keys.string("group")?,
            socket_file,
            bridge: bridge_name,
            vlan,
            net_type,
            shared_dir: PathBuf::from(
                keys.string("sharedDir")?.unwrap_or_else(|| paths::SHARED_DIR.to_owned()),
            ),
            container,
            raw: config.clone(),
            ovsdb_socket: keys.string("ovsdbSocket")?.map(PathBuf::from),
            ovs_run_dir: keys.string("ovsRunDir")?.map(PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_userspace_plugins_keys() {
        let config = UserspaceConfig::parse(&json!({
            "cniVersion": "1.0.0", "name": "vhost-net", "type": "userspace",
            "host": {"engine": "ovs-dpdk", "iftype": "vhostuser", "netType": "bridge",
                     "vhost": {"mode": "server", "group": "hugetlbfs"},
                     "bridge": {"bridgeName": "br-dpdk", "vlanId": 300}},
            "container": {"engine": "ovs-dpdk", "iftype": "vhostuser", "netType": "interface",
                          "vhost": {"mode": "client"}},
            "sharedDir": "/run/vhost"}))
        .unwrap();
        assert_eq!(config.mode, VhostMode::Server);
        assert_eq!((config.bridge.as_str(), config.vlan), ("br-dpdk", Some(300)));
        assert_eq!(config.group.as_deref(), Some("hugetlbfs"));
        assert_eq!(config.shared_dir, PathBuf::from("/run/vhost"));
        assert_eq!(config.container["vhost"]["mode"], "client");

        let minimal = UserspaceConfig::parse(&json!({"name": "n", "host": {"engine": "ovs-dpdk"}})).unwrap();
        assert_eq!((minimal.mode, minimal.bridge.as_str(), minimal.vlan), (VhostMode::Client, "br0", None));
        assert_eq!(minimal.shared_dir, PathBuf::from(paths::SHARED_DIR));
    }

    #[test]
    fn refuses_vpp_memif_and_bad_values_naming_the_key() {
        for (config, key) in [
            (json!({"host": {"engine": "vpp", "iftype": "memif"}}), "host.engine"),
            (json!({"host": {"engine": "ovs-dpdk", "iftype": "memif"}}), "host.iftype"),
            (json!({"host": {"engine": "ovs-dpdk"}, "container": {"engine": "vpp"}}), "container.engine"),
            (json!({"host": {"vhost": {"mode": "both"}}}), "host.vhost.mode"),
            (json!({"host": {"bridge": {"vlanId": 4095}}}), "host.bridge.vlanId"),
            (json!({"host": {"netType": "l3"}}), "host.netType"),
            (json!({"host": {"vhost": {"socketfile": "../x"}}}), "host.vhost.socketfile"),
            (json!({"name": "n"}), "host"),
        ] {
            let err = UserspaceConfig::parse(&config).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
        let vpp = UserspaceConfig::parse(&json!({"host": {"engine": "vpp"}})).unwrap_err();
        assert!(vpp.to_string().contains("not supported"), "{vpp}");
    }
}
