//! Bonds: the options the bond CNI plugin's users set, in the kernel's terms, and the
//! RTM_NEWLINK request that makes one (`IFLA_INFO_KIND` "bond" with `IFLA_BOND_*` attributes
//! in `IFLA_INFO_DATA`), built from netlink-packet-route's typed `InfoBond`.

use rtnetlink::LinkBond;
use rtnetlink::packet_route::link::{
    BondAllPortActive, BondFailOverMac, BondMode, BondXmitHashPolicy, LinkMessage,
};

use crate::types::IfName;

/// A bond's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondOptions {
    /// `mode`.
    pub mode: BondMode,
    /// `miimon`, ms.
    pub miimon: Option<u32>,
    /// `fail_over_mac`: none, active, follow.
    pub fail_over_mac: Option<BondFailOverMac>,
    /// `xmit_hash_policy`.
    pub xmit_hash_policy: Option<BondXmitHashPolicy>,
    /// `all_slaves_active`: deliver frames received on inactive ports.
    pub all_slaves_active: Option<bool>,
    /// `tlb_dynamic_lb` (balance-tlb).
    pub tlb_dynamic_lb: Option<bool>,
    /// The bond's MTU.
    pub mtu: Option<u32>,
}

impl Default for BondOptions {
    fn default() -> Self {
        Self {
            mode: BondMode::BalanceRr,
            miimon: None,
            fail_over_mac: None,
            xmit_hash_policy: None,
            all_slaves_active: None,
            tlb_dynamic_lb: None,
            mtu: None,
        }
    }
}

/// A mode by the name the bonding driver and the bond CNI plugin use.
pub fn mode_named(name: &str) -> Option<BondMode> {
    Some(match name {
        "balance-rr" => BondMode::BalanceRr,
        "active-backup" => BondMode::ActiveBackup,
        "balance-xor" => BondMode::BalanceXor,
        "broadcast" => BondMode::Broadcast,
        "802.3ad" => BondMode::Ieee8023Ad,
        "balance-tlb" => BondMode::BalanceTlb,
        "balance-alb" => BondMode::BalanceAlb,
        _ => return None,
    })
}

/// A transmit hash policy by the driver's name.
pub fn xmit_hash_policy_named(name: &str) -> Option<BondXmitHashPolicy> {
    Some(match name {
        "layer2" => BondXmitHashPolicy::Layer2,
        "layer3+4" => BondXmitHashPolicy::Layer34,
        "layer2+3" => BondXmitHashPolicy::Layer23,
        "encap2+3" => BondXmitHashPolicy::Encap23,
        "encap3+4" => BondXmitHashPolicy::Encap34,
        "vlan+srcmac" => BondXmitHashPolicy::VlanSrcMac,
        _ => return None,
    })
}

/// `fail_over_mac` 0, 1, 2.
pub fn fail_over_mac_numbered(value: u8) -> Option<BondFailOverMac> {
    Some(match value {
        0 => BondFailOverMac::None,
        1 => BondFailOverMac::Active,
        2 => BondFailOverMac::Follow,
        _ => return None,
    })
}

/// The request creating bond `name` with `options`.
pub fn bond_message(name: &IfName, options: &BondOptions) -> LinkMessage {
    let mut builder = LinkBond::new(name.as_str()).mode(options.mode);
    if let Some(miimon) = options.miimon {
        builder = builder.miimon(miimon);
    }
    if let Some(policy) = options.fail_over_mac {
        builder = builder.fail_over_mac(policy);
    }
    if let Some(policy) = options.xmit_hash_policy {
        builder = builder.xmit_hash_policy(policy);
    }
    if let Some(all) = options.all_slaves_active {
        builder = builder.all_ports_active(if all {
            BondAllPortActive::Delivered
        } else {
            BondAllPortActive::Dropped
        });
    }
    if let Some(dynamic) = options.tlb_dynamic_lb {
        builder = builder.tlb_dynamic_lb(dynamic);
    }
    if let Some(mtu) = options.mtu {
        builder = builder.mtu(mtu);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rtnetlink::packet_core::Emitable;

    /// The attributes (type, value) of a run of netlink attributes.
    fn attributes(mut bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut found = Vec::new();
        while bytes.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
            let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & 0x3fff;
            found.push((kind, bytes[4..len].to_vec()));
            bytes = &bytes[(len + 3) & !3..];
        }
        found
    }

    fn value(attrs: &[(u16, Vec<u8>)], kind: u16) -> &[u8] {
        &attrs.iter().find(|(k, _)| *k == kind).unwrap_or_else(|| panic!("attribute {kind} missing")).1
    }

    #[test]
    fn every_ifla_bond_attribute_used_is_in_the_request_byte_for_byte() {
        let options = BondOptions {
            mode: mode_named("active-backup").unwrap(),
            miimon: Some(100),
            fail_over_mac: fail_over_mac_numbered(1),
            xmit_hash_policy: xmit_hash_policy_named("layer3+4"),
            all_slaves_active: Some(true),
            tlb_dynamic_lb: Some(false),
            mtu: Some(9000),
        };
        let message = bond_message(&"bond0".parse::<IfName>().unwrap(), &options);
        let mut bytes = vec![0u8; message.buffer_len()];
        message.emit(&mut bytes);
        // ifinfomsg is 16 bytes; then the link's attributes.
        let link = attributes(&bytes[16..]);
        assert_eq!(value(&link, 3), b"bond0\0", "IFLA_IFNAME");
        assert_eq!(value(&link, 4), 9000u32.to_ne_bytes(), "IFLA_MTU");
        let info = attributes(value(&link, 18)); // IFLA_LINKINFO
        assert_eq!(value(&info, 1), b"bond\0", "IFLA_INFO_KIND");
        let bond = attributes(value(&info, 2)); // IFLA_INFO_DATA
        assert_eq!(value(&bond, 1), [1], "IFLA_BOND_MODE: active-backup");
        assert_eq!(value(&bond, 3), 100u32.to_ne_bytes(), "IFLA_BOND_MIIMON");
        assert_eq!(value(&bond, 13), [1], "IFLA_BOND_FAIL_OVER_MAC: active");
        assert_eq!(value(&bond, 14), [1], "IFLA_BOND_XMIT_HASH_POLICY: layer3+4");
        assert_eq!(value(&bond, 17), [1], "IFLA_BOND_ALL_SLAVES_ACTIVE");
        assert_eq!(value(&bond, 27), [0], "IFLA_BOND_TLB_DYNAMIC_LB");
        assert_eq!(bond.len(), 6, "nothing else: {bond:?}");

        let plain = bond_message(&"bond1".parse::<IfName>().unwrap(), &BondOptions::default());
        let mut bytes = vec![0u8; plain.buffer_len()];
        plain.emit(&mut bytes);
        let info = attributes(value(&attributes(&bytes[16..]), 18));
        assert_eq!(attributes(value(&info, 2)), vec![(1, vec![0])], "only the mode (balance-rr)");
    }

    #[test]
    fn names_map_to_the_drivers_numbers() {
        let modes = [
            "balance-rr",
            "active-backup",
            "balance-xor",
            "broadcast",
            "802.3ad",
            "balance-tlb",
            "balance-alb",
        ];
        for (number, name) in modes.iter().enumerate() {
            assert_eq!(u8::from(mode_named(name).unwrap()), u8::try_from(number).unwrap(), "{name}");
        }
        assert_eq!(mode_named("round-robin"), None);
        let policies = ["layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4", "vlan+srcmac"];
        for (number, name) in policies.iter().enumerate() {
            assert_eq!(
                u8::from(xmit_hash_policy_named(name).unwrap()),
                u8::try_from(number).unwrap(),
                "{name}"
            );
        }
        assert_eq!(fail_over_mac_numbered(3), None);
    }
}
