//! The SR-IOV CNI plugin's config keys, read unchanged so existing NADs work: `deviceID`,
//! `vlan`, `vlanQoS`, `vlanProto`, `mac`, `spoofchk`, `trust`, `link_state`, `min_tx_rate`,
//! `max_tx_rate`, `ipam`; plus `mtu` (that plugin cannot set it) and `runtimeConfig.mac` /
//! `runtimeConfig.ips` from the pod's selection. Keys match case-insensitively, as Go's JSON
//! does; a bad value is an error naming the key and the value.

use plexus_hw::vf::{VfChange, VfLinkMode, VlanProto};
use plexus_hw::{MacAddr, PciAddress};
use serde_json::{Map, Value};

use crate::keys::Keys;
use crate::spec::ConfigError;
use crate::spec::result::IpPrefix;

/// An `"type": "sriov"` network config.
#[derive(Debug, Clone, PartialEq)]
pub struct SriovConfig {
    /// The VF, from `deviceID` (injected by the meta-plugin from the pod's allocation) or
    /// `runtimeConfig.deviceID`.
    pub device_id: PciAddress,
    /// The PF-side settings the config asks for.
    pub change: VfChange,
    /// The MAC the VF netdev gets in the pod: `runtimeConfig.mac`, else `mac`.
    pub mac: Option<MacAddr>,
    /// The VF netdev's MTU in the pod.
    pub mtu: Option<u32>,
    /// The IPAM config.
    pub ipam: Option<Map<String, Value>>,
    /// Addresses the pod asked for (`runtimeConfig.ips`), for the IPAM.
    pub ips: Vec<IpPrefix>,
    /// Where attachment records are kept (`dataDir`), when not the default.
    pub data_dir: Option<std::path::PathBuf>,
}

fn invalid(key: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid("sriov config", format!("{key}: {message}"))
}

fn number(keys: &Keys<'_>, key: &str, max: u64) -> Result<Option<u64>, ConfigError> {
    match keys.value(key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v <= max => Ok(Some(v)),
            _ => Err(invalid(key, format!("{n} is out of range (0-{max})"))),
        },
        Some(other) => Err(invalid(key, format!("{other} is not a number"))),
    }
}

fn on_off(keys: &Keys<'_>, key: &str) -> Result<Option<bool>, ConfigError> {
    match keys.string(key)?.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("on") => Ok(Some(true)),
        Some("off") => Ok(Some(false)),
        Some(other) => Err(invalid(key, format!("{other:?} must be \"on\" or \"off\""))),
    }
}

impl SriovConfig {
    /// Reads the plugin config a delegate gets.
    pub fn parse(config: &Value) -> Result<Self, ConfigError> {
        let Value::Object(map) = config else {
            return Err(ConfigError::invalid("sriov config", "must be a JSON object"));
        };
        let keys = Keys::new(map, "sriov config");
        let runtime = keys.object("runtimeConfig")?;
        let runtime_keys = Keys::new(&runtime, "sriov config: runtimeConfig");

        let device = runtime_keys.string("deviceID")?.or(keys.string("deviceID")?).ok_or_else(|| {
            invalid("deviceID", "missing (the VF's PCI address, from the pod's allocation)")
        })?;
        let device_id = device.parse::<PciAddress>().map_err(|e| invalid("deviceID", e))?;

        let vlan = number(&keys, "vlan", 4094)?;
        let qos = number(&keys, "vlanQoS", 7)?;
        let proto = match keys.string("vlanProto")?.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("802.1q") => VlanProto::Dot1Q,
            Some("802.1ad") => VlanProto::Dot1Ad,
            Some(other) => {
                return Err(invalid("vlanProto", format!("{other:?} must be \"802.1q\" or \"802.1ad\"")));
            }
        };
        let vlan = match (vlan, qos) {
            (None, Some(_)) => return Err(invalid("vlanQoS", "needs a vlan")),
            (None, None) if keys.value("vlanProto").is_some() => {
                return Err(invalid("vlanProto", "needs a vlan"));
            }
            (Some(0), Some(q)) if q > 0 => return Err(invalid("vlanQoS", "needs a vlan other than 0")),
            (None, None) => None,
            (Some(v), q) => Some((v as u16, q.unwrap_or(0) as u8, proto)),
        };

        let link_state = match keys.string("link_state")?.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("auto") => Some(VfLinkMode::Auto),
            Some("enable") => Some(VfLinkMode::Enable),
            Some("disable") => Some(VfLinkMode::Disable),
            Some(other) => {
                return Err(invalid(
                    "link_state",
                    format!("{other:?} must be \"auto\", \"enable\" or \"disable\""),
                ));
            }
        };
        let min = number(&keys, "min_tx_rate", u64::from(u32::MAX))?;
        let max = number(&keys, "max_tx_rate", u64::from(u32::MAX))?;
        if let (Some(min), Some(max)) = (min, max)
            && max != 0
            && min > max
        {
            return Err(invalid("min_tx_rate", format!("{min} is above max_tx_rate {max}")));
        }
        // The kernel takes both rates at once; one not given stays 0 (no limit), as the SR-IOV
        // CNI plugin sets them.
        let rate =
            (min.is_some() || max.is_some()).then(|| (min.unwrap_or(0) as u32, max.unwrap_or(0) as u32));

        // Refused here, naming the key: the kernel would say only "Cannot assign requested
        // address" for a multicast, broadcast or zero MAC.
        let mac_of = |k: &Keys<'_>, key: &str, name: &str| -> Result<Option<MacAddr>, ConfigError> {
            k.string(key)?.map(|m| MacAddr::parse_assignable(&m).map_err(|e| invalid(name, e))).transpose()
        };
        let admin_mac = mac_of(&keys, "mac", "mac")?;
        let mac = mac_of(&runtime_keys, "mac", "runtimeConfig.mac")?.or(admin_mac);
        let mtu = number(&keys, "mtu", 65535)?.map(|m| m as u32);
        if let Some(m) = mtu
            && m < 68
        {
            return Err(invalid("mtu", format!("{m} is below 68, the least IPv4 allows")));
        }
        let ips = runtime_keys
            .strings("ips")?
            .unwrap_or_default()
            .iter()
            .map(|ip| ip.parse::<IpPrefix>().map_err(|e| invalid("runtimeConfig.ips", e)))
            .collect::<Result<_, _>>()?;
        let ipam = match keys.value("ipam") {
            None => None,
            Some(Value::Object(ipam)) if ipam.is_empty() => None,
            Some(Value::Object(ipam)) => Some(ipam.clone()),
            Some(_) => return Err(invalid("ipam", "must be an object")),
        };
        Ok(Self {
            device_id,
            change: VfChange {
                // The PF-side MAC follows the MAC the pod gets, as the SR-IOV CNI plugin sets it.
                mac,
                vlan,
                spoofchk: on_off(&keys, "spoofchk")?,
                trust: on_off(&keys, "trust")?,
                link_state,
                rate,
            },
            mac,
            mtu,
            ipam,
            ips,
            data_dir: keys.string("dataDir")?.map(std::path::PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_sriov_cni_nad_config_reads_unchanged() {
        let config = SriovConfig::parse(&json!({
            "cniVersion": "1.0.0", "name": "sriov-net", "type": "sriov", "deviceID": "0000:3b:02.1",
            "vlan": 100, "vlanQoS": 3, "vlanProto": "802.1ad", "spoofchk": "off", "trust": "on",
            "link_state": "enable", "min_tx_rate": 100, "max_tx_rate": 1000, "mtu": 9000,
            "ipam": {"type": "static", "addresses": [{"address": "10.56.217.2/24"}]},
            "runtimeConfig": {"mac": "02:00:00:00:00:07", "ips": ["10.56.217.9/24"]}
        }))
        .unwrap();
        assert_eq!(config.device_id.to_string(), "0000:3b:02.1");
        assert_eq!(config.change.vlan, Some((100, 3, VlanProto::Dot1Ad)));
        assert_eq!((config.change.spoofchk, config.change.trust), (Some(false), Some(true)));
        assert_eq!(config.change.link_state, Some(VfLinkMode::Enable));
        assert_eq!(config.change.rate, Some((100, 1000)));
        assert_eq!(
            config.mac.map(|m| m.to_string()).as_deref(),
            Some("02:00:00:00:00:07"),
            "runtimeConfig.mac wins"
        );
        assert_eq!(config.change.mac, config.mac);
        assert_eq!(config.mtu, Some(9000));
        assert_eq!(config.ips[0].to_string(), "10.56.217.9/24");
        assert_eq!(config.ipam.unwrap()["type"], "static");
    }

    #[test]
    fn unset_keys_change_nothing() {
        let config =
            SriovConfig::parse(&json!({"type": "sriov", "DeviceID": "0000:3b:02.0", "ipam": {}})).unwrap();
        assert_eq!(config.change, VfChange::default());
        assert_eq!((config.mac, config.mtu, config.ipam), (None, None, None));
        let rate =
            SriovConfig::parse(&json!({"type": "sriov", "deviceID": "0000:3b:02.0", "max_tx_rate": 500}))
                .unwrap();
        assert_eq!(rate.change.rate, Some((0, 500)));
    }

    #[test]
    fn bad_values_name_the_key() {
        let base = json!({"type": "sriov", "deviceID": "0000:3b:02.0"});
        let cases = [
            (json!({"deviceID": null}), "deviceID: missing"),
            (json!({"deviceID": "3b:02.0"}), "deviceID: invalid PCI address"),
            (json!({"vlan": 4095}), "vlan: 4095 is out of range (0-4094)"),
            (json!({"vlan": "100"}), "vlan: \"100\" is not a number"),
            (json!({"vlanQoS": 2}), "vlanQoS: needs a vlan"),
            (json!({"vlan": 10, "vlanQoS": 8}), "vlanQoS: 8 is out of range (0-7)"),
            (json!({"vlan": 10, "vlanProto": "802.1x"}), "vlanProto: \"802.1x\""),
            (json!({"vlanProto": "802.1ad"}), "vlanProto: needs a vlan"),
            (json!({"spoofchk": "yes"}), "spoofchk: \"yes\" must be \"on\" or \"off\""),
            (json!({"link_state": "up"}), "link_state: \"up\""),
            (json!({"min_tx_rate": 500, "max_tx_rate": 100}), "min_tx_rate: 500 is above max_tx_rate 100"),
            (json!({"mac": "02:00:00"}), "mac: invalid MAC"),
            (json!({"mac": "ff:ff:ff:ff:ff:ff"}), "mac: ff:ff:ff:ff:ff:ff is the broadcast address"),
            (json!({"mac": "01:00:5e:00:00:01"}), "mac: 01:00:5e:00:00:01 is a multicast address"),
            (json!({"mac": "00:00:00:00:00:00"}), "mac: 00:00:00:00:00:00 is all zero"),
            (
                json!({"runtimeConfig": {"mac": "33:33:00:00:00:01"}}),
                "runtimeConfig.mac: 33:33:00:00:00:01 is a multicast",
            ),
            (json!({"mtu": 40}), "mtu: 40 is below 68"),
            (json!({"ipam": "static"}), "ipam: must be an object"),
            (json!({"runtimeConfig": {"ips": ["10.0.0.1"]}}), "runtimeConfig.ips"),
        ];
        for (patch, want) in cases {
            let mut config = base.clone();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    config.as_object_mut().unwrap().remove(k);
                } else {
                    config[k] = v.clone();
                }
            }
            let err = SriovConfig::parse(&config).unwrap_err();
            assert_eq!(crate::error::Failure::code(&err), 7);
            assert!(err.to_string().contains(want), "{err} should contain {want:?}");
        }
    }
}
