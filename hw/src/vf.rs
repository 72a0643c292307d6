//! The PF side of a VF: its administrative MAC, VLAN, QoS and VLAN protocol, spoof checking,
//! trust, link state and rates, read from the PF's `IFLA_VFINFO_LIST` and set with
//! `RTM_SETLINK` on the PF.
//!
//! This is the narrow seam between Plexus and SR-IOV hardware: [`VfControl`] has a netlink
//! implementation ([`NetlinkVfControl`]) for real PFs, and a simulated one
//! ([`crate::sim::SimVfControl`]) for the simulated node, whose veth "PFs" answer VF requests
//! with EOPNOTSUPP. Everything above the seam runs the same code on both.

use std::fmt;

use rtnetlink::packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkHeader, LinkMessage, LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac,
    VfInfoRate, VfInfoSpoofCheck, VfInfoTrust, VfInfoVlan, VfLinkState, VfVlan, VfVlanInfo, VlanProtocol,
};
use serde::{Deserialize, Serialize};

use crate::types::{IfName, MacAddr, VfIndex};

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
    /// The kernel (or the simulator's store) failed the request.
    #[error("{what}: {message}")]
    Failed {
        /// The operation and its subject.
        what: String,
        /// Why.
        message: String,
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

/// The PF side of VFs.
pub trait VfControl: Send + Sync {
    /// Every VF of PF `pf` as the PF reports it.
    fn vfs(&self, pf: &IfName) -> Result<Vec<VfState>, VfError>;
    /// Changes VF `vf` of PF `pf`.
    fn set(&self, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), VfError>;

    /// The namespace holding the PFs' netdevs and the VF netdevs not given to a pod: the
    /// node's host namespace (`None`: the caller's).
    fn netns(&self) -> Option<&std::path::Path>;

    /// The current name of `vf`'s netdev in [`netns`](Self::netns), `None` when it is not
    /// there (it is in a pod's namespace, or the VF has no netdev). `sysfs` is the node's.
    fn host_netdev(
        &self,
        sysfs: &crate::SysfsRoot,
        vf: &crate::discover::VfLocation,
    ) -> Result<Option<IfName>, VfError>;

    /// One VF's state.
    fn vf(&self, pf: &IfName, vf: VfIndex) -> Result<VfState, VfError> {
        self.vfs(pf)?
            .into_iter()
            .find(|s| s.index == vf)
            .ok_or_else(|| VfError::NoSuchVf { pf: pf.to_string(), vf })
    }
}

/// The VF control for the node whose sysfs is at `root`: the simulator's when `root` holds a
/// simulated node, else netlink on the real PFs of the caller's namespace.
pub fn control_for(root: &crate::SysfsRoot) -> Result<std::sync::Arc<dyn VfControl>, VfError> {
    if root.path().join(crate::sim::STATE_FILE).exists() {
        let node = crate::sim::SimNode::load(root.path()).map_err(|e| VfError::Failed {
            what: "loading the simulated node".into(),
            message: e.to_string(),
        })?;
        return Ok(std::sync::Arc::new(crate::sim::SimVfControl::for_node(&node)));
    }
    Ok(std::sync::Arc::new(NetlinkVfControl::new(None)))
}

/// The netlink implementation, for real PFs: a socket opened in the namespace that holds the
/// PFs (the host's, or a given one), driven by a runtime of its own, so callers stay
/// synchronous (the CNI binary, or a blocking task of the agent).
#[derive(Debug, Clone, Default)]
pub struct NetlinkVfControl {
    netns: Option<std::path::PathBuf>,
}

impl NetlinkVfControl {
    /// PFs in the namespace at `netns`, or in the caller's when `None`.
    pub fn new(netns: Option<std::path::PathBuf>) -> Self {
        Self { netns }
    }

    fn run<T>(
        &self,
        what: impl Fn() -> String,
        f: impl AsyncFnOnce(&crate::netlink::Netlink) -> Result<T, crate::netlink::NetlinkError>,
    ) -> Result<T, VfError> {
        let failed = |message: String| VfError::Failed { what: what(), message };
        let netns = match &self.netns {
            Some(path) => Some(crate::netns::Netns::open(path).map_err(|e| failed(e.to_string()))?),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| failed(e.to_string()))?;
        runtime.block_on(async {
            let nl =
                crate::netlink::Netlink::connect(netns.as_ref()).await.map_err(|e| failed(e.to_string()))?;
            f(&nl).await.map_err(|e| match e {
                crate::netlink::NetlinkError::NoSuchLink(link) => VfError::NoSuchPf(link.to_string()),
                other => failed(other.to_string()),
            })
        })
    }
}

impl VfControl for NetlinkVfControl {
    fn netns(&self) -> Option<&std::path::Path> {
        self.netns.as_deref()
    }

    /// Sysfs shows a device's netdevs of the namespace it was mounted from (the host's), under
    /// their current names: a VF netdev the kernel handed back from a deleted pod namespace
    /// is found there, whatever it is called now.
    fn host_netdev(
        &self,
        sysfs: &crate::SysfsRoot,
        vf: &crate::discover::VfLocation,
    ) -> Result<Option<IfName>, VfError> {
        let located = crate::discover::locate_vf(sysfs, vf.address).map_err(|e| VfError::Failed {
            what: format!("reading VF {}", vf.address),
            message: e.to_string(),
        })?;
        Ok(located.and_then(|l| l.netdev))
    }

    fn vfs(&self, pf: &IfName) -> Result<Vec<VfState>, VfError> {
        self.run(|| format!("reading the VFs of {pf}"), async |nl| nl.vf_states(pf).await)
    }

    fn set(&self, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), VfError> {
        change.validate(pf.as_str(), vf)?;
        self.run(|| format!("setting VF {vf} of {pf}"), async |nl| nl.set_vf(pf, vf, change).await)
    }
}

/// The `RTM_GETLINK` request for PF link `pf_index` that asks for its VF list
/// (`IFLA_EXT_MASK` with `RTEXT_FILTER_VF`).
pub fn get_message(pf_index: u32) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = pf_index;
    message.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::Vf]));
    message
}

/// The `RTM_SETLINK` message that applies `change` to VF `vf` of PF link `pf_index`: one
/// `IFLA_VFINFO_LIST` with one `IFLA_VF_INFO` holding an attribute per setting. An 802.1ad VLAN
/// goes as `IFLA_VF_VLAN_LIST` (the only form that carries a protocol), an 802.1Q one as
/// `IFLA_VF_VLAN`, as iproute2 sends them.
pub fn set_message(pf_index: u32, vf: VfIndex, change: &VfChange) -> LinkMessage {
    let id = vf.0;
    let mut info = Vec::new();
    if let Some(mac) = change.mac {
        info.push(VfInfo::Mac(VfInfoMac::new(id, &mac.0)));
    }
    if let Some((vlan, qos, proto)) = change.vlan {
        match proto {
            VlanProto::Dot1Q => info.push(VfInfo::Vlan(VfInfoVlan::new(id, u32::from(vlan), u32::from(qos)))),
            VlanProto::Dot1Ad => info.push(VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                id,
                u32::from(vlan),
                u32::from(qos),
                VlanProtocol::Ieee8021Ad,
            ))])),
        }
    }
    if let Some((min, max)) = change.rate {
        info.push(VfInfo::Rate(VfInfoRate::new(id, min, max)));
    }
    if let Some(on) = change.spoofchk {
        info.push(VfInfo::SpoofCheck(VfInfoSpoofCheck::new(id, on)));
    }
    if let Some(on) = change.trust {
        info.push(VfInfo::Trust(VfInfoTrust::new(id, on)));
    }
    if let Some(mode) = change.link_state {
        let state = match mode {
            VfLinkMode::Auto => VfLinkState::Auto,
            VfLinkMode::Enable => VfLinkState::Enable,
            VfLinkMode::Disable => VfLinkState::Disable,
        };
        info.push(VfInfo::LinkState(VfInfoLinkState::new(id, state)));
    }
    let mut message = LinkMessage::default();
    message.header = LinkHeader { index: pf_index, ..Default::default() };
    message.attributes.push(LinkAttribute::VfInfoList(vec![LinkVfInfo(info)]));
    message
}

/// The VFs a PF's `RTM_NEWLINK` (the answer to [`get_message`]) reports.
pub fn parse_states(message: &LinkMessage) -> Vec<VfState> {
    let mut states = Vec::new();
    for attribute in &message.attributes {
        let LinkAttribute::VfInfoList(list) = attribute else {
            continue;
        };
        for LinkVfInfo(infos) in list {
            let mut state: Option<VfState> = None;
            let mut set = |id: u32, f: &mut dyn FnMut(&mut VfState)| {
                let state = state.get_or_insert_with(|| VfState::pristine(VfIndex(id)));
                f(state);
            };
            for info in infos {
                match info {
                    VfInfo::Mac(m) => set(m.vf_id, &mut |s| s.mac.0.copy_from_slice(&m.mac[..6])),
                    VfInfo::Vlan(v) => set(v.vf_id, &mut |s| {
                        s.vlan = u16::try_from(v.vlan_id).unwrap_or(u16::MAX);
                        s.qos = u8::try_from(v.qos).unwrap_or(u8::MAX);
                    }),
                    VfInfo::VlanList(list) => {
                        // The list has the protocol; the kernel reports one entry per VF.
                        for v in list.iter().filter_map(|v| match v {
                            VfVlan::Info(info) => Some(info),
                            _ => None,
                        }) {
                            set(v.vf_id, &mut |s| {
                                s.vlan = u16::try_from(v.vlan_id).unwrap_or(u16::MAX);
                                s.qos = u8::try_from(v.qos).unwrap_or(u8::MAX);
                                s.vlan_proto = if v.protocol == VlanProtocol::Ieee8021Ad {
                                    VlanProto::Dot1Ad
                                } else {
                                    VlanProto::Dot1Q
                                };
                            });
                        }
                    }
                    VfInfo::Rate(r) => {
                        set(r.vf_id, &mut |s| (s.min_tx_rate, s.max_tx_rate) = (r.min_tx_rate, r.max_tx_rate))
                    }
                    VfInfo::SpoofCheck(c) => set(c.vf_id, &mut |s| s.spoofchk = c.enabled),
                    VfInfo::Trust(t) => set(t.vf_id, &mut |s| s.trust = t.enabled),
                    VfInfo::LinkState(l) => set(l.vf_id, &mut |s| {
                        s.link_state = match l.state {
                            VfLinkState::Enable => VfLinkMode::Enable,
                            VfLinkState::Disable => VfLinkMode::Disable,
                            _ => VfLinkMode::Auto,
                        }
                    }),
                    _ => {}
                }
            }
            states.extend(state);
        }
    }
    states.sort_by_key(|s| s.index);
    states
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{Emitable, Parseable};

    // From include/uapi/linux/if_link.h and rtnetlink.h.
    const IFLA_VFINFO_LIST: u16 = 22;
    const IFLA_EXT_MASK: u16 = 29;
    const IFLA_VF_INFO: u16 = 1;
    const IFLA_VF_MAC: u16 = 1;
    const IFLA_VF_VLAN: u16 = 2;
    const IFLA_VF_SPOOFCHK: u16 = 4;
    const IFLA_VF_LINK_STATE: u16 = 5;
    const IFLA_VF_RATE: u16 = 6;
    const IFLA_VF_TRUST: u16 = 9;
    const IFLA_VF_VLAN_LIST: u16 = 12;
    const IFLA_VF_VLAN_INFO: u16 = 1;
    const RTEXT_FILTER_VF: u32 = 1;

    /// A netlink attribute: length (header included), type, payload padded to 4 bytes. Nested
    /// attributes go without NLA_F_NESTED: the kernel parses IFLA_VFINFO_LIST the legacy way,
    /// which does not need it, and iproute2 does not set it either.
    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + payload.len()).unwrap();
        let mut out = [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        out.extend_from_slice(payload);
        out.resize(out.len().div_ceil(4) * 4, 0);
        out
    }

    fn u32s(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    /// struct ifinfomsg: family, pad, type, index, flags, change.
    fn ifinfomsg(index: i32) -> Vec<u8> {
        let mut out = vec![0u8, 0, 0, 0];
        out.extend(index.to_ne_bytes());
        out.extend([0u8; 8]);
        out
    }

    fn emit(message: &LinkMessage) -> Vec<u8> {
        let mut buf = vec![0u8; message.buffer_len()];
        message.emit(&mut buf);
        buf
    }

    fn parse(bytes: &[u8]) -> LinkMessage {
        LinkMessage::parse(bytes).unwrap()
    }

    fn vf_info_attrs(vf: u32) -> Vec<u8> {
        // struct ifla_vf_mac { __u32 vf; __u8 mac[32]; }
        let mut mac = u32s(&[vf]);
        mac.extend([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        mac.resize(36, 0);
        [
            nla(IFLA_VF_MAC, &mac),
            // struct ifla_vf_vlan { __u32 vf; __u32 vlan; __u32 qos; }
            nla(IFLA_VF_VLAN, &u32s(&[vf, 100, 5])),
            // struct ifla_vf_rate { __u32 vf; __u32 min_tx_rate; __u32 max_tx_rate; }
            nla(IFLA_VF_RATE, &u32s(&[vf, 1000, 5000])),
            // struct ifla_vf_spoofchk { __u32 vf; __u32 setting; }
            nla(IFLA_VF_SPOOFCHK, &u32s(&[vf, 0])),
            // struct ifla_vf_trust { __u32 vf; __u32 setting; }
            nla(IFLA_VF_TRUST, &u32s(&[vf, 1])),
            // struct ifla_vf_link_state { __u32 vf; __u32 link_state; } (auto 0, enable 1, disable 2)
            nla(IFLA_VF_LINK_STATE, &u32s(&[vf, 2])),
        ]
        .concat()
    }

    fn full_change() -> VfChange {
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
    fn set_message_is_the_kernels_layout_byte_for_byte() {
        let got = emit(&set_message(7, VfIndex(3), &full_change()));
        let vf_info = nla(IFLA_VF_INFO, &vf_info_attrs(3));
        let expected = [ifinfomsg(7), nla(IFLA_VFINFO_LIST, &vf_info)].concat();
        assert_eq!(got, expected);
    }

    #[test]
    fn an_802_1ad_vlan_goes_as_a_vlan_list() {
        let change = VfChange { vlan: Some((200, 3, VlanProto::Dot1Ad)), ..Default::default() };
        let got = emit(&set_message(9, VfIndex(1), &change));
        // struct ifla_vf_vlan_info { __u32 vf; __u32 vlan; __u32 qos; __be16 vlan_proto; }:
        // sizeof is 16, the __be16 padded to the struct's 4-byte alignment, and the kernel's
        // policy wants exactly that length.
        let mut info = u32s(&[1, 200, 3]);
        info.extend(0x88a8u16.to_be_bytes());
        info.resize(16, 0);
        let list = nla(IFLA_VF_VLAN_LIST, &nla(IFLA_VF_VLAN_INFO, &info));
        let expected = [ifinfomsg(9), nla(IFLA_VFINFO_LIST, &nla(IFLA_VF_INFO, &list))].concat();
        assert_eq!(got, expected);
    }

    #[test]
    fn get_message_asks_for_the_vf_list() {
        let expected = [ifinfomsg(4), nla(IFLA_EXT_MASK, &RTEXT_FILTER_VF.to_ne_bytes())].concat();
        assert_eq!(emit(&get_message(4)), expected);
    }

    #[test]
    fn decodes_what_the_kernel_reports_for_each_vf() {
        // Two VFs as a PF answers RTM_GETLINK: VF 0 with every attribute, VF 1 with its VLAN
        // in the list form (802.1ad).
        let mut vlan_info = u32s(&[1, 300, 0]);
        vlan_info.extend(0x88a8u16.to_be_bytes());
        vlan_info.resize(16, 0);
        let vf1 = [
            nla(IFLA_VF_VLAN_LIST, &nla(IFLA_VF_VLAN_INFO, &vlan_info)),
            nla(IFLA_VF_SPOOFCHK, &u32s(&[1, 1])),
            nla(IFLA_VF_LINK_STATE, &u32s(&[1, 1])),
        ]
        .concat();
        let list = [nla(IFLA_VF_INFO, &vf_info_attrs(0)), nla(IFLA_VF_INFO, &vf1)].concat();
        let bytes = [ifinfomsg(7), nla(IFLA_VFINFO_LIST, &list)].concat();
        let states = parse_states(&parse(&bytes));
        assert_eq!(states.len(), 2);
        assert_eq!(
            states[0],
            VfState {
                index: VfIndex(0),
                mac: "02:11:22:33:44:55".parse().unwrap(),
                vlan: 100,
                qos: 5,
                vlan_proto: VlanProto::Dot1Q,
                spoofchk: false,
                trust: true,
                link_state: VfLinkMode::Disable,
                min_tx_rate: 1000,
                max_tx_rate: 5000,
            }
        );
        assert_eq!(
            (states[1].vlan, states[1].vlan_proto, states[1].link_state),
            (300, VlanProto::Dot1Ad, VfLinkMode::Enable)
        );
        // And what we send decodes back to the state it sets.
        let sent = parse(&emit(&set_message(7, VfIndex(0), &full_change())));
        assert_eq!(parse_states(&sent), [states[0].clone()]);
    }

    #[test]
    fn the_kernel_is_asked_for_real_and_a_veth_says_it_has_no_vfs() {
        // Root: a veth in a namespace of the test's own stands in for a PF without SR-IOV.
        let ns = crate::netns::Netns::create_unique("plexus-vf-test").unwrap();
        let out = std::process::Command::new("ip")
            .args([
                "-n",
                ns.name().unwrap(),
                "link",
                "add",
                "pxpf0",
                "type",
                "veth",
                "peer",
                "name",
                "pxpf0p",
            ])
            .status()
            .unwrap();
        assert!(out.success());
        let control = NetlinkVfControl::new(Some(ns.path().to_owned()));
        let pf: IfName = "pxpf0".parse().unwrap();
        assert_eq!(control.vfs(&pf).unwrap(), []);
        let err = control.set(&pf, VfIndex(0), &full_change()).unwrap_err().to_string();
        assert!(err.starts_with("setting VF 0 of pxpf0: "), "{err}");
        let err = control.vfs(&"nosuchpf".parse().unwrap()).unwrap_err();
        assert!(matches!(err, VfError::NoSuchPf(_)), "{err}");
        // Bad values never reach the kernel.
        let bad = VfChange { vlan: Some((5000, 0, VlanProto::Dot1Q)), ..Default::default() };
        assert!(matches!(control.set(&pf, VfIndex(0), &bad), Err(VfError::Invalid { .. })));
        ns.delete().unwrap();
    }

    #[test]
    fn restore_is_every_setting_and_ranges_are_checked() {
        let before = VfState::pristine(VfIndex(2));
        let after = before.with(&full_change());
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
