//! The bond delegate on a kernel with the bonding driver (root): two veth ends in a pod's
//! namespace bonded and released for real. This machine's kernel has no bonding driver: the
//! test is then reported ignored, with the reason, never as passed. The logic is tested
//! through the netlink seam in `bond::tests`, the requests at the message level in
//! `plexus_hw::bond`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use plexus_cni::bond::{Bond, NetlinkPodLinks, PodLinks};
use plexus_cni::spec::Invocation;
use plexus_hw::netns::Netns;
use serde_json::json;

#[test]
#[cfg_attr(not(plexus_kernel_bonding), ignore = "this kernel has no bonding driver (modprobe bonding fails)")]
fn a_bond_of_two_links_in_the_pod_is_made_and_released() {
    let pod = Netns::create_unique("plexus-bond-pod").unwrap();
    let name = pod.name().unwrap().to_owned();
    for (a, b) in [("net1", "peer1"), ("net2", "peer2")] {
        let status = std::process::Command::new("ip")
            .args(["-n", &name, "link", "add", a, "type", "veth", "peer", "name", b])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let env = |command: &'static str| {
        let netns = pod.path().display().to_string();
        move |k: &str| match k {
            "CNI_COMMAND" => Some(command.to_owned()),
            "CNI_CONTAINERID" => Some("bond-test".to_owned()),
            "CNI_NETNS" => Some(netns.clone()),
            "CNI_IFNAME" => Some("bond0".to_owned()),
            "CNI_PATH" => Some("/usr/lib/cni".to_owned()),
            _ => None,
        }
    };
    let config = json!({"cniVersion": "1.0.0", "name": "bond-net", "type": "bond", "mode": "active-backup",
                        "miimon": "100", "linksInContainer": true, "links": [{"name": "net1"}, {"name": "net2"}],
                        "ipam": {"type": "static", "addresses": [{"address": "10.9.0.2/24"}]}});
    let links = NetlinkPodLinks::open(&pod.path().display().to_string()).unwrap();
    let add = Invocation::from_env(env("ADD")).unwrap();
    Bond::add_with(&links, &add, "bond0", &config).unwrap();
    let bond = links.link("bond0").unwrap().expect("the bond");
    for slave in ["net1", "net2"] {
        assert_eq!(links.link(slave).unwrap().unwrap().controller, Some(bond.index), "{slave}");
    }
    let del = Invocation::from_env(env("DEL")).unwrap();
    Bond::del_with(Some(&links), &del, "bond0", &config).unwrap();
    assert!(links.link("bond0").unwrap().is_none());
    assert_eq!(links.link("net1").unwrap().unwrap().controller, None);
    Bond::del_with(Some(&links), &del, "bond0", &config).unwrap();
    pod.delete().unwrap();
}
