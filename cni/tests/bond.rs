//! The bond delegate on a kernel with the bonding driver (root): two veth ends in a pod's
//! namespace bonded and released for real. This machine's kernel has no bonding driver: the
//! test is then reported ignored, with the reason, never as passed, and `hack/test.sh` runs it
//! in the kernel lab (`hack/lab-tests.sh`), on Debian's stock kernel. The logic is tested
//! against the in-memory kernel in `bond::tests`, the requests at the message level in
//! `plexus_hw::bond`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use plexus_cni::bond::Bond;
use plexus_cni::delegate::{Request, call_in_process};
use plexus_cni::spec::{Command, Invocation};
use plexus_hw::kernel::{Kernel, Side};
use plexus_hw::netns::Netns;
use plexus_hw::{Node, SysfsRoot};
use serde_json::json;

#[test]
#[cfg_attr(
    not(plexus_kernel_bonding),
    ignore = "this kernel has no bonding driver: runs in the kernel lab (hack/lab-tests.sh)"
)]
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
    let config = json!({"cniVersion": "1.0.0", "name": "bond-net", "type": "bond", "mode": "active-backup",
                        "miimon": "100", "linksInContainer": true, "links": [{"name": "net1"}, {"name": "net2"}],
                        "ipam": {"type": "static", "addresses": [{"address": "10.9.0.2/24"}]}});
    let kernel = Node::real(SysfsRoot::default()).session(Some(pod.path()));
    let call = |command: Command| {
        let invocation = Invocation {
            command,
            container_id: "bond-test".into(),
            netns: Some(pod.path().to_owned()),
            ifname: "bond0".parse().unwrap(),
            args: String::new(),
            path: vec!["/usr/lib/cni".into()],
        };
        let request = Request { invocation: &invocation, config: &config, cluster: None, kernel: &kernel };
        call_in_process(&Bond, "bond", &request)
    };
    call(Command::Add).unwrap();
    let link = |name: &str| kernel.link(Side::Pod, &name.parse().unwrap()).unwrap();
    let bond = link("bond0").expect("the bond");
    for slave in ["net1", "net2"] {
        assert_eq!(link(slave).unwrap().controller, Some(bond.index), "{slave}");
    }
    call(Command::Del).unwrap();
    assert!(link("bond0").is_none());
    assert_eq!(link("net1").unwrap().controller, None);
    call(Command::Del).unwrap();
    pod.delete().unwrap();
}
