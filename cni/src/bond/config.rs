//! The bond CNI plugin's keys: `mode`, `miimon` (string or number), `mtu` (default 1500),
//! `failOverMac` (0-2), `linksInContainer`, `links` (two or more `{"name": ...}`),
//! `allSlavesActive`, `tlbDynamicLb`, `xmitHashPolicy`, `ipam`.

use plexus_hw::IfName;
use plexus_hw::bond::{self, BondOptions};
use serde_json::Value;

use crate::keys::Keys;
use crate::spec::ConfigError;

/// A bond network.
#[derive(Debug, Clone, PartialEq)]
pub struct BondConfig {
    /// The bond's options, its MTU among them.
    pub options: BondOptions,
    /// The MTU the bond gets (no slave may have less).
    pub mtu: u32,
    /// The slaves' names.
    pub links: Vec<IfName>,
    /// The slaves are in the pod's namespace already (earlier attachments); else in the host's,
    /// and moved in.
    pub links_in_container: bool,
}

fn invalid(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid("bond config", format!("{key}: {why}"))
}

/// A number given as a number or a string (`"miimon": "100"`), as the bond plugin takes it.
fn number(keys: &Keys<'_>, key: &str) -> Result<Option<u64>, ConfigError> {
    match keys.value(key) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            n.as_u64().map(Some).ok_or_else(|| invalid(key, format!("{n} is not a count")))
        }
        Some(Value::String(s)) => {
            s.trim().parse().map(Some).map_err(|_| invalid(key, format!("{s:?} is not a number")))
        }
        Some(other) => Err(invalid(key, format!("{other} is not a number"))),
    }
}

/// A flag given as true/false or 0/1.
fn flag(keys: &Keys<'_>, key: &str) -> Result<Option<bool>, ConfigError> {
    match keys.value(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => match number(keys, key)? {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            other => Err(invalid(key, format!("{other:?} is not 0 or 1"))),
        },
    }
}

impl BondConfig {
    /// Reads the plugin config a delegate gets.
    pub fn parse(config: &Value) -> Result<Self, ConfigError> {
        let Value::Object(map) = config else {
            return Err(ConfigError::invalid("bond config", "must be a JSON object"));
        };
        let keys = Keys::new(map, "bond config");
        let mode_name = keys.string("mode")?.unwrap_or_else(|| "balance-rr".to_owned());
        let mode = bond::mode_named(&mode_name).ok_or_else(|| {
            invalid("mode", format!("{mode_name:?} is not one of balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb, balance-alb"))
        })?;
        let miimon = number(&keys, "miimon")?
            .map(|m| u32::try_from(m).map_err(|_| invalid("miimon", m)))
            .transpose()?;
        let mtu = match number(&keys, "mtu")? {
            None => 1500,
            Some(m @ 68..=65535) => u32::try_from(m).unwrap_or(1500),
            Some(m) => return Err(invalid("mtu", format!("{m} is not an MTU (68-65535)"))),
        };
        let fail_over_mac = match number(&keys, "failOverMac")? {
            None => None,
            Some(n) => Some(
                u8::try_from(n)
                    .ok()
                    .and_then(bond::fail_over_mac_numbered)
                    .ok_or_else(|| invalid("failOverMac", format!("{n} is not 0, 1 or 2")))?,
            ),
        };
        let xmit_hash_policy = match keys.string("xmitHashPolicy")? {
            None => None,
            Some(name) => Some(bond::xmit_hash_policy_named(&name).ok_or_else(|| {
                invalid(
                    "xmitHashPolicy",
                    format!(
                        "{name:?} is not one of layer2, layer3+4, layer2+3, encap2+3, encap3+4, vlan+srcmac"
                    ),
                )
            })?),
        };
        let links = match keys.value("links") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let name = item.get("name").and_then(Value::as_str).ok_or_else(|| {
                        invalid(&format!("links[{i}]"), "needs a \"name\" (an interface name)")
                    })?;
                    name.parse::<IfName>().map_err(|e| invalid(&format!("links[{i}].name"), e))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(invalid("links", "must be a list of {\"name\": ...}")),
            None => Vec::new(),
        };
        if links.len() < 2 {
            return Err(invalid("links", format!("a bond needs at least two links, {} given", links.len())));
        }
        Ok(Self {
            options: BondOptions {
                mode,
                miimon,
                fail_over_mac,
                xmit_hash_policy,
                all_slaves_active: flag(&keys, "allSlavesActive")?,
                tlb_dynamic_lb: flag(&keys, "tlbDynamicLb")?,
                mtu: Some(mtu),
            },
            mtu,
            links,
            links_in_container: keys.bool("linksInContainer")?.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_bond_plugins_keys() {
        let config = BondConfig::parse(&json!({
            "name": "bond-net", "type": "bond", "mode": "active-backup", "miimon": "100", "mtu": 9000,
            "failOverMac": 1, "linksInContainer": true, "links": [{"name": "net1"}, {"name": "net2"}],
            "allSlavesActive": 1, "tlbDynamicLb": 0, "xmitHashPolicy": "layer3+4"}))
        .unwrap();
        assert_eq!(config.options.mode, bond::mode_named("active-backup").unwrap());
        assert_eq!((config.options.miimon, config.mtu), (Some(100), 9000));
        assert_eq!(config.options.fail_over_mac, bond::fail_over_mac_numbered(1));
        assert_eq!(
            (config.options.all_slaves_active, config.options.tlb_dynamic_lb),
            (Some(true), Some(false))
        );
        assert_eq!(config.links.iter().map(IfName::as_str).collect::<Vec<_>>(), ["net1", "net2"]);
        assert!(config.links_in_container);
        let minimal =
            BondConfig::parse(&json!({"links": [{"name": "a"}, {"name": "b"}], "miimon": 50})).unwrap();
        assert_eq!(
            (minimal.mtu, minimal.options.miimon, minimal.links_in_container),
            (1500, Some(50), false)
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let two = json!([{"name": "a"}, {"name": "b"}]);
        for (config, key) in [
            (json!({"links": two, "mode": "round-robin"}), "mode"),
            (json!({"links": two, "miimon": "often"}), "miimon"),
            (json!({"links": two, "mtu": 20}), "mtu"),
            (json!({"links": two, "failOverMac": 3}), "failOverMac"),
            (json!({"links": two, "xmitHashPolicy": "layer9"}), "xmitHashPolicy"),
            (json!({"links": two, "allSlavesActive": 2}), "allSlavesActive"),
            (json!({"links": [{"name": "a"}]}), "links"),
            (json!({"links": [{"name": "a"}, {"nom": "b"}]}), "links[1]"),
        ] {
            let err = BondConfig::parse(&config).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }
}
