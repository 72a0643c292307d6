//! The PF side of VFs against a stock kernel that implements it: netdevsim, in the kernel lab
//! (`hack/lab.sh run`, which `hack/test.sh` runs these in). Outside the lab they are ignored,
//! never passed: this machine's kernel has no netdevsim.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap fails the test

use plexus_hw::kernel::NetlinkKernel;
use plexus_hw::netns::Netns;
use plexus_hw::vf::{NetlinkVfControl, VfChange, VfControl, VfError, VfLinkMode, VfState, VlanProto};
use plexus_hw::{IfName, VfIndex};
use plexus_sim::netdevsim::Netdevsim;
use serde_json::Value;

const VFS: u32 = 4;

/// What `ip -d -j link show` says of VF `vf` of `pf` (in namespace `ns`, else here).
fn ip_vf(ns: Option<&str>, pf: &IfName, vf: u32) -> Value {
    let links = plexus_sim::ip::json(ns, &["-d", "link", "show", pf.as_str()]);
    links[0]["vfinfo_list"].as_array().unwrap().iter().find(|v| v["vf"] == vf).cloned().unwrap()
}

/// `state` as iproute2 shows a VF: MAC, VLAN, QoS, protocol, spoof checking, trust, link
/// state, rates; checked field by field against what `ip` read from the kernel.
fn assert_ip_agrees(ip: &Value, state: &VfState) {
    assert_eq!(ip["address"].as_str().unwrap(), state.mac.to_string(), "{ip}");
    let (vlan, qos, proto) = match ip["vlan_list"].as_array().and_then(|l| l.first()) {
        Some(v) => (&v["vlan"], &v["qos"], v["protocol"].as_str().unwrap_or("802.1Q")),
        None => (&ip["vlan"], &ip["qos"], "802.1Q"),
    };
    assert_eq!(vlan.as_u64().unwrap_or(0), u64::from(state.vlan), "{ip}");
    assert_eq!(qos.as_u64().unwrap_or(0), u64::from(state.qos), "{ip}");
    if state.vlan != 0 {
        let want = match state.vlan_proto {
            VlanProto::Dot1Q => "802.1Q",
            VlanProto::Dot1Ad => "802.1ad",
        };
        assert_eq!(proto, want, "{ip}");
    }
    assert_eq!(ip["spoofchk"].as_bool(), Some(state.spoofchk), "{ip}");
    assert_eq!(ip["trust"].as_bool(), Some(state.trust), "{ip}");
    let link = match state.link_state {
        VfLinkMode::Auto => "auto",
        VfLinkMode::Enable => "enable",
        VfLinkMode::Disable => "disable",
    };
    assert_eq!(ip["link_state"].as_str(), Some(link), "{ip}");
    assert_eq!(ip["rate"]["max_tx"].as_u64(), Some(u64::from(state.max_tx_rate)), "{ip}");
    assert_eq!(ip["rate"]["min_tx"].as_u64(), Some(u64::from(state.min_tx_rate)), "{ip}");
}

/// Every setting alone, then all together, on VF 1 of `pf`: read back by Plexus and by `ip`,
/// the other VFs untouched, then restored exactly from the recorded state.
fn every_change_read_back_and_restored(kernel: &NetlinkKernel, ns: Option<&str>, pf: &IfName) {
    let control = NetlinkVfControl;
    let before = control.vfs(kernel, pf).unwrap();
    assert_eq!(before.len(), VFS as usize, "{before:?}");
    let vf = VfIndex(1);
    let changes = [
        ("mac", VfChange { mac: Some("02:11:22:33:44:55".parse().unwrap()), ..Default::default() }),
        ("vlan + qos, 802.1Q", VfChange { vlan: Some((100, 5, VlanProto::Dot1Q)), ..Default::default() }),
        ("vlan, 802.1ad", VfChange { vlan: Some((200, 0, VlanProto::Dot1Ad)), ..Default::default() }),
        ("spoofchk off", VfChange { spoofchk: Some(false), ..Default::default() }),
        ("spoofchk on", VfChange { spoofchk: Some(true), ..Default::default() }),
        ("trust", VfChange { trust: Some(true), ..Default::default() }),
        ("link state enable", VfChange { link_state: Some(VfLinkMode::Enable), ..Default::default() }),
        ("link state disable", VfChange { link_state: Some(VfLinkMode::Disable), ..Default::default() }),
        ("link state auto", VfChange { link_state: Some(VfLinkMode::Auto), ..Default::default() }),
        ("rates", VfChange { rate: Some((1000, 5000)), ..Default::default() }),
        (
            "all together",
            VfChange {
                mac: Some("02:aa:bb:cc:dd:01".parse().unwrap()),
                vlan: Some((4094, 7, VlanProto::Dot1Q)),
                spoofchk: Some(false),
                trust: Some(true),
                link_state: Some(VfLinkMode::Disable),
                rate: Some((100, 10_000)),
            },
        ),
    ];
    for (what, change) in &changes {
        let prior = control.vf(kernel, pf, vf).unwrap();
        control.set(kernel, pf, vf, change).unwrap_or_else(|e| panic!("{what}: {e}"));
        let now = control.vfs(kernel, pf).unwrap();
        let want = prior.with(change);
        assert_eq!(now[1], want, "{what}: Plexus reads back what it set");
        assert_ip_agrees(&ip_vf(ns, pf, 1), &want);
        for other in [0, 2, 3] {
            assert_eq!(now[other], before[other], "{what}: VF {other} untouched");
        }
        eprintln!("lab: {what}: set, read back by Plexus and by ip");
    }
    // Restored from the state recorded before anything changed.
    control.set(kernel, pf, vf, &before[1].as_change()).unwrap();
    assert_eq!(control.vfs(kernel, pf).unwrap(), before, "restored exactly");
    assert_ip_agrees(&ip_vf(ns, pf, 1), &before[1]);

    // The kernel's refusals name the VF and the PF, once.
    let err = control.set(kernel, pf, VfIndex(VFS), &changes[0].1).unwrap_err().to_string();
    let prefix = format!("setting VF {VFS} of {pf}");
    assert_eq!(err.matches(&prefix).count(), 1, "{err}");
    let multicast = VfChange { mac: Some("01:00:5e:00:00:01".parse().unwrap()), ..Default::default() };
    let err = control.set(kernel, pf, vf, &multicast).unwrap_err();
    assert!(matches!(err, VfError::Kernel(_)), "{err}");
    assert_eq!(err.to_string().matches(&format!("setting VF 1 of {pf}")).count(), 1, "{err}");
    assert_eq!(control.vfs(kernel, pf).unwrap(), before, "a refused change changes nothing");
}

#[test]
#[ignore = "runs in the kernel lab (hack/lab.sh run): needs netdevsim"]
fn netlink_vf_control_against_a_netdevsim_pf_here_and_in_another_namespace() {
    let device = Netdevsim::new(11, VFS).unwrap();
    let pf = device.netdev.clone();
    // The PF in this (the host) namespace.
    every_change_read_back_and_restored(&NetlinkKernel::new(None, None), None, &pf);
    // The PF in another namespace: the session's host side is that namespace.
    let ns = Netns::create_unique("plexus-lab").unwrap();
    let name = ns.name().unwrap().to_owned();
    plexus_sim::ip::run(None, &["link", "set", pf.as_str(), "netns", &name]).unwrap();
    let kernel = NetlinkKernel::new(Some(ns.path().to_owned()), None);
    every_change_read_back_and_restored(&kernel, Some(&name), &pf);
    plexus_sim::ip::run(Some(&name), &["link", "set", pf.as_str(), "netns", "1"]).unwrap();
    ns.delete().unwrap();
}
