//! The VF messages on the wire: `RTM_GETLINK` with `IFLA_EXT_MASK` asking a PF for its
//! `IFLA_VFINFO_LIST`, `RTM_SETLINK` with one `IFLA_VF_INFO` changing a VF, and the decoding of
//! what the PF reports, built from netlink-packet-route's `VfInfo` types and checked byte for
//! byte against the kernel's `if_link.h` layouts.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkHeader, LinkMessage, LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac,
    VfInfoRate, VfInfoSpoofCheck, VfInfoTrust, VfInfoVlan, VfLinkState, VfVlan, VfVlanInfo, VlanProtocol,
};

use super::{Netlink, NetlinkError, request};
use crate::types::{IfName, VfIndex};
use crate::vf::{VfChange, VfLinkMode, VfState, VlanProto};

impl Netlink {
    /// The VFs PF link `pf` reports in its `IFLA_VFINFO_LIST`.
    pub async fn vf_states(&self, pf: &IfName) -> Result<Vec<VfState>, NetlinkError> {
        let index = self.link_index(pf).await?;
        let mut get = self.handle.link().get().match_index(index);
        *get.message_mut() = get_message(index);
        let links: Vec<LinkMessage> =
            get.execute().try_collect().await.map_err(request(|| format!("reading the VFs of {pf}")))?;
        Ok(links.iter().flat_map(parse_states).collect())
    }

    /// Applies `change` to VF `vf` of PF link `pf`.
    pub async fn set_vf(&self, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), NetlinkError> {
        let index = self.link_index(pf).await?;
        self.handle
            .link()
            .set(set_message(index, vf, change))
            .execute()
            .await
            .map_err(request(|| format!("setting VF {vf} of {pf}")))
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
    use crate::vf::settings::tests::every_setting;
    use crate::vf::{VfLinkMode, VfState};
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

    #[test]
    fn set_message_is_the_kernels_layout_byte_for_byte() {
        let got = emit(&set_message(7, VfIndex(3), &every_setting()));
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
        let sent = parse(&emit(&set_message(7, VfIndex(0), &every_setting())));
        assert_eq!(parse_states(&sent), [states[0].clone()]);
    }
}
