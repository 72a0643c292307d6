//! A VF's settings on the PF side, as data: what the PF reports of a VF ([`VfState`]), a
//! change to make ([`VfChange`], checked as the kernel checks it), and the seam's error.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{MacAddr, VfIndex};

/// A failed VF operation, naming the PF and VF.
#[derive(Debug, thiserror::Error)]
pub enum VfError {
    /// The PF has no such VF.
    #[error("{pf}: no VF {vf}")]
    NoSuchVf {
        /// The PF netdev.
        pf: String,
        /// The VF index.
        vf: VfIndex,
    },
    /// The PF does not exist.
    #[error("no PF netdev {0}")]
    NoSuchPf(String),
    /// A value is out of range.
    #[error("{pf} VF {vf}: {message}")]
    Invalid {
        /// The PF netdev.
        pf: String,
        /// The VF index.
        vf: VfIndex,
        /// What is wrong.
        message: String,
    },
    /// The kernel refused a request; its error already names the request and its subject
    /// (`setting VF 4 of ens1f0: ...`), so it is shown as it is.
    #[error(transparent)]
    Kernel(Box<dyn std::error::Error + Send + Sync>),
    /// The kernel (or the simulator's store) failed the request.
    #[error("{what}: {source}")]
    Failed {
        /// The operation and its subject.
        what: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The VLAN protocol of a VF's VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VlanProto {
    /// 802.1Q (the default).
    #[default]
    #[serde(rename = "802.1q")]
    Dot1Q,
    /// 802.1ad (QinQ).
    #[serde(rename = "802.1ad")]
    Dot1Ad,
}

impl fmt::Display for VlanProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dot1Q => "802.1q",
            Self::Dot1Ad => "802.1ad",
        })
    }
}

/// A VF's administrative link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VfLinkMode {
    /// Follows the PF's link.
    #[default]
    Auto,
    /// Always up.
    Enable,
    /// Always down.
    Disable,
}

/// Everything the PF reports of one VF: what ADD records before changing anything, and what
/// DEL puts back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfState {
    /// The VF.
    pub index: VfIndex,
    /// Administrative MAC (00:00:00:00:00:00 when none was set).
    pub mac: MacAddr,
    /// VLAN ID, 0 for none.
    pub vlan: u16,
    /// VLAN priority.
    pub qos: u8,
    /// VLAN protocol.
    pub vlan_proto: VlanProto,
    /// Spoof checking.
    pub spoofchk: bool,
    /// Trusted (may change its MAC, enter promiscuous mode).
    pub trust: bool,
    /// Administrative link state.
    pub link_state: VfLinkMode,
    /// Minimum TX rate, Mb/s (0: none).
    pub min_tx_rate: u32,
    /// Maximum TX rate, Mb/s (0: none).
    pub max_tx_rate: u32,
}

impl VfState {
    /// The state of a VF nobody has configured.
    pub fn pristine(index: VfIndex) -> Self {
        Self {
            index,
            mac: MacAddr([0; 6]),
            vlan: 0,
            qos: 0,
            vlan_proto: VlanProto::Dot1Q,
            spoofchk: true,
            trust: false,
            link_state: VfLinkMode::Auto,
            min_tx_rate: 0,
            max_tx_rate: 0,
        }
    }

    /// The change that puts every setting back to this state.
    pub fn as_change(&self) -> VfChange {
        VfChange {
            mac: Some(self.mac),
            vlan: Some((self.vlan, self.qos, self.vlan_proto)),
            spoofchk: Some(self.spoofchk),
            trust: Some(self.trust),
            link_state: Some(self.link_state),
            rate: Some((self.min_tx_rate, self.max_tx_rate)),
        }
    }

    /// This state with `change` applied.
    pub fn with(&self, change: &VfChange) -> Self {
        let mut next = self.clone();
        if let Some(mac) = change.mac {
            next.mac = mac;
        }
        if let Some((vlan, qos, proto)) = change.vlan {
            (next.vlan, next.qos, next.vlan_proto) = (vlan, qos, proto);
        }
        if let Some(on) = change.spoofchk {
            next.spoofchk = on;
        }
        if let Some(on) = change.trust {
            next.trust = on;
        }
        if let Some(mode) = change.link_state {
            next.link_state = mode;
        }
        if let Some((min, max)) = change.rate {
            (next.min_tx_rate, next.max_tx_rate) = (min, max);
        }
        next
    }
}

/// Settings to change on a VF; `None` leaves one as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VfChange {
    /// Administrative MAC.
    pub mac: Option<MacAddr>,
    /// VLAN ID, QoS and protocol, set together as the kernel takes them.
    pub vlan: Option<(u16, u8, VlanProto)>,
    /// Spoof checking.
    pub spoofchk: Option<bool>,
    /// Trust.
    pub trust: Option<bool>,
    /// Link state.
    pub link_state: Option<VfLinkMode>,
    /// Minimum and maximum TX rate, set together as the kernel takes them.
    pub rate: Option<(u32, u32)>,
}

impl VfChange {
    /// Checks the ranges the kernel checks (VLAN 0-4094, QoS 0-7 and only with a VLAN).
    pub fn validate(&self, pf: &str, vf: VfIndex) -> Result<(), VfError> {
        let invalid = |message: String| Err(VfError::Invalid { pf: pf.to_owned(), vf, message });
        if let Some((vlan, qos, _)) = self.vlan {
            if vlan > 4094 {
                return invalid(format!("vlan {vlan} is out of range (0-4094)"));
            }
            if qos > 7 {
                return invalid(format!("vlan QoS {qos} is out of range (0-7)"));
            }
            if qos > 0 && vlan == 0 {
                return invalid("vlan QoS needs a vlan".into());
            }
        }
        if let Some((min, max)) = self.rate
            && max != 0
            && min > max
        {
            return invalid(format!("min_tx_rate {min} is above max_tx_rate {max}"));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A change of every setting, for the tests of the seam and of its messages.
    pub(crate) fn every_setting() -> VfChange {
        VfChange {
            mac: Some("02:11:22:33:44:55".parse().unwrap()),
            vlan: Some((100, 5, VlanProto::Dot1Q)),
            spoofchk: Some(false),
            trust: Some(true),
            link_state: Some(VfLinkMode::Disable),
            rate: Some((1000, 5000)),
        }
    }

    #[test]
    fn restore_is_every_setting_and_ranges_are_checked() {
        let before = VfState::pristine(VfIndex(2));
        let after = before.with(&every_setting());
        assert_eq!(after.with(&before.as_change()), before, "restoring puts back everything");
        for (change, text) in [
            (VfChange { vlan: Some((4095, 0, VlanProto::Dot1Q)), ..Default::default() }, "vlan 4095"),
            (VfChange { vlan: Some((10, 8, VlanProto::Dot1Q)), ..Default::default() }, "QoS 8"),
            (VfChange { vlan: Some((0, 3, VlanProto::Dot1Q)), ..Default::default() }, "needs a vlan"),
            (VfChange { rate: Some((500, 100)), ..Default::default() }, "above max_tx_rate"),
        ] {
            let err = change.validate("ens1f0", VfIndex(2)).unwrap_err().to_string();
            assert!(err.starts_with("ens1f0 VF 2: ") && err.contains(text), "{err}");
        }
    }
}
