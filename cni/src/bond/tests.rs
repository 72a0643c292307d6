//! The bond logic on the in-memory kernel, which answers as the kernel does where it matters
//! (a bond takes no port that is up; deleting a bond frees its ports; a moved link arrives
//! down).
#![allow(clippy::unwrap_used)]

use nix::errno::Errno;
use plexus_hw::kernel::{Kernel, LinkSettings, Side};
use plexus_sim::kernel::{FakeKernel, LinkKind};
use serde_json::json;

use super::*;
use crate::spec::{Command, Invocation};

/// A pod with VF netdevs `net1` and `net2` (up, with these MTUs); the second shares the first's
/// MAC when `same_mac`. Returns the kernel and the two indexes.
fn pod_with_vfs(mtus: [u32; 2], same_mac: bool) -> (FakeKernel, u32, u32) {
    let kernel = FakeKernel::new();
    let second = if same_mac { [2, 0, 0, 0, 0, 1] } else { [2, 0, 0, 0, 0, 2] };
    let mut indexes = Vec::new();
    for (i, (name, mac)) in [("net1", [2, 0, 0, 0, 0, 1]), ("net2", second)].into_iter().enumerate() {
        let device = format!("0000:20:02.{i}").parse().unwrap();
        let index = kernel.add_device(Side::Pod, name, device, Some(MacAddr(mac)), true);
        kernel.configure(Side::Pod, index, LinkSettings { mtu: Some(mtus[i]), ..LinkSettings::UP }).unwrap();
        indexes.push(index);
    }
    (kernel, indexes[0], indexes[1])
}

fn invocation(command: Command) -> Invocation {
    Invocation {
        command,
        container_id: "c1".into(),
        netns: Some("/run/netns/pod".into()),
        ifname: "bond0".parse().unwrap(),
        args: String::new(),
        path: vec!["/opt/cni/bin".into()],
    }
}

fn config(extra: Value) -> Value {
    let mut config = json!({"cniVersion": "1.0.0", "name": "bond-net", "type": "bond", "mode": "active-backup",
                            "miimon": "100", "linksInContainer": true, "links": [{"name": "net1"}, {"name": "net2"}],
                            "ipam": {"type": "static", "addresses": [{"address": "10.9.0.2/24"}]}});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

fn call(kernel: &FakeKernel, command: Command, config: &Value) -> Result<Option<Value>, Error> {
    let invocation = invocation(command);
    let request = Request { invocation: &invocation, config, cluster: None, kernel };
    crate::delegate::call_in_process(&Bond, "bond", &request)
}

#[test]
fn add_enslaves_the_pods_links_down_then_up_and_del_releases_them() {
    let (kernel, a, b) = pod_with_vfs([1500, 1500], false);
    let before = kernel.log().len();
    let result = call(&kernel, Command::Add, &config(json!({}))).unwrap().unwrap();
    assert_eq!(result["interfaces"][0]["name"], "bond0");
    assert_eq!(result["interfaces"][0]["sandbox"], "/run/netns/pod");
    assert_eq!(result["ips"][0], json!({"address": "10.9.0.2/24", "interface": 0}));
    let bond = kernel.find(Side::Pod, "bond0").unwrap();
    let LinkKind::Bond(options) = &bond.kind else { panic!("{bond:?}") };
    assert_eq!(
        (options.mode, options.miimon, options.mtu),
        (plexus_hw::bond::mode_named("active-backup").unwrap(), Some(100), Some(1500))
    );
    let n = bond.index;
    assert_eq!(
        kernel.log()[before..],
        [
            "add bond bond0 on pod".to_owned(),
            format!("configure #{a} on pod"),
            format!("controller #{a} Some({n}) on pod"),
            format!("configure #{a} on pod"),
            format!("configure #{b} on pod"),
            format!("controller #{b} Some({n}) on pod"),
            format!("configure #{b} on pod"),
            format!("configure #{n} on pod"),
            format!("address 10.9.0.2/24 on #{n} on pod"),
        ]
    );
    let link = |name: &str| kernel.find(Side::Pod, name).unwrap();
    assert_eq!((link("net1").controller, link("net2").controller), (Some(n), Some(n)));
    assert!(link("bond0").up && link("net1").up && link("net2").up);
    call(&kernel, Command::Check, &config(json!({}))).unwrap();

    let before = kernel.log().len();
    call(&kernel, Command::Del, &config(json!({}))).unwrap();
    assert_eq!(
        kernel.log()[before..],
        [
            format!("controller #{a} None on pod"),
            format!("configure #{a} on pod"),
            format!("controller #{b} None on pod"),
            format!("configure #{b} on pod"),
            format!("delete #{n} on pod"),
        ]
    );
    assert!(kernel.find(Side::Pod, "bond0").is_none());
    assert_eq!((link("net1").controller, link("net2").up), (None, true));
    let err = call(&kernel, Command::Check, &config(json!({}))).unwrap_err();
    assert!(err.to_string().contains("no bond bond0"), "{err}");
    // Twice, and with the namespace gone.
    call(&kernel, Command::Del, &config(json!({}))).unwrap();
    kernel.kill_pod();
    call(&kernel, Command::Del, &config(json!({}))).unwrap();
}

#[test]
fn slaves_sharing_a_mac_get_distinct_ones() {
    let (kernel, _, _) = pod_with_vfs([1500, 1500], true);
    call(&kernel, Command::Add, &config(json!({}))).unwrap();
    let mac = |name: &str| kernel.find(Side::Pod, name).unwrap().mac.unwrap();
    let (a, b) = (mac("net1"), mac("net2"));
    assert_ne!(a, b);
    assert_eq!(a, MacAddr([2, 0, 0, 0, 0, 1]), "the first keeps its own");
    assert_eq!(b.0[0] & 0x03, 0x02, "locally administered, unicast: {b}");
}

#[test]
fn a_bond_mtu_above_a_slaves_fails_before_anything_is_made() {
    let (kernel, _, _) = pod_with_vfs([9000, 1500], false);
    let before = kernel.log().len();
    let err = call(&kernel, Command::Add, &config(json!({"mtu": 9000}))).unwrap_err();
    assert!(err.to_string().contains("mtu: 9000 is above the MTU of link net2 (1500)"), "{err}");
    assert_eq!(err.code(), 7);
    assert_eq!(kernel.log().len(), before, "{:?}", kernel.log());
}

#[test]
fn a_failure_half_way_releases_what_was_done() {
    let (kernel, _, b) = pod_with_vfs([1500, 1500], false);
    kernel.fail_next(&format!("controller #{b} Some"), Errno::EIO);
    let err = call(&kernel, Command::Add, &config(json!({}))).unwrap_err();
    assert!(err.to_string().contains("Input/output error") || err.to_string().contains("EIO"), "{err}");
    assert!(kernel.find(Side::Pod, "bond0").is_none(), "the bond is deleted");
    let link = |name: &str| kernel.find(Side::Pod, name).unwrap();
    assert_eq!(link("net1").controller, None, "net1 released");
    assert!(link("net1").up && link("net2").up);
}

#[test]
fn links_of_the_host_are_moved_in_and_given_back() {
    let kernel = FakeKernel::new();
    for (i, name) in ["ens1f0v0", "ens1f1v0"].iter().enumerate() {
        let device = format!("0000:20:02.{i}").parse().unwrap();
        kernel.add_device(Side::Host, name, device, Some(MacAddr([2, 0, 0, 0, 1, i as u8])), true);
    }
    let host_links =
        json!({"linksInContainer": false, "links": [{"name": "ens1f0v0"}, {"name": "ens1f1v0"}]});
    call(&kernel, Command::Add, &config(host_links.clone())).unwrap();
    assert!(kernel.all(Side::Host).is_empty());
    let bond = kernel.find(Side::Pod, "bond0").unwrap().index;
    assert_eq!(kernel.find(Side::Pod, "ens1f0v0").unwrap().controller, Some(bond));
    call(&kernel, Command::Del, &config(host_links)).unwrap();
    assert_eq!(kernel.all(Side::Host).len(), 2, "both back on the host");
}

#[test]
fn a_missing_or_taken_slave_is_named() {
    let (kernel, a, _) = pod_with_vfs([1500, 1500], false);
    let missing = config(json!({"links": [{"name": "net1"}, {"name": "net3"}]}));
    let err = call(&kernel, Command::Add, &missing).unwrap_err();
    assert!(err.to_string().contains("link net3 is not in the pod's namespace"), "{err}");
    let other = kernel.add_device(Side::Pod, "br9", "0000:99:00.0".parse().unwrap(), None, true);
    kernel.set_controller(Side::Pod, a, Some(other)).unwrap();
    let err = call(&kernel, Command::Add, &config(json!({}))).unwrap_err();
    assert!(err.to_string().contains("net1 is already enslaved"), "{err}");
}
