//! The attach and restore logic on the in-memory kernel (no root): the simulated node's sysfs
//! tree for where the VFs are, the fake kernel for their netdevs, the pod and the PF side. The
//! root tests in `tests/sriov.rs` run the same logic on the real kernel.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use nix::errno::Errno;
use plexus_hw::kernel::{Kernel, Side};
use plexus_hw::vf::{VfChange, VfState, VlanProto};
use plexus_hw::{IfName, Node, SysfsRoot, VfIndex};
use plexus_sim::kernel::FakeKernel;
use plexus_sim::{ScratchNode, SimSpec};
use serde_json::{Value, json};

use super::Sriov;
use crate::delegate::{Request, call_in_process};
use crate::error::Error;
use crate::spec::{Command, Invocation};

const VF1: &str = "0000:20:02.1"; // ens1f0v1, VF 1 of ens1f0

/// The tree of a 2 PF x 4 VF node, a fake kernel holding its netdevs, the delegate on both.
struct Fixture {
    tree: ScratchNode,
    kernel: FakeKernel,
    sriov: Sriov,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let spec = SimSpec { pfs: 2, numa_nodes: 1, vfs_per_pf: 4, vfio_vfs_per_pf: 1, cpus_per_node: 2 };
        let tree = ScratchNode::tree(tag, &spec).unwrap();
        let kernel = FakeKernel::for_node(&tree);
        let node = Node::new(SysfsRoot::new(tree.root()), None, Arc::new(kernel.vf_control()));
        Self { sriov: Sriov::new(node), tree, kernel }
    }

    fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "sriov-net", "type": "sriov", "deviceID": VF1,
                              "dataDir": self.tree.dir().join("records")});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        conf
    }

    fn call(&self, command: Command, cid: &str, conf: &Value) -> Result<Option<Value>, Error> {
        self.call_as(command, cid, "net1", conf)
    }

    fn call_as(
        &self,
        command: Command,
        cid: &str,
        ifname: &str,
        conf: &Value,
    ) -> Result<Option<Value>, Error> {
        let invocation = Invocation {
            command,
            container_id: cid.into(),
            netns: Some("/run/netns/fake-pod".into()),
            ifname: ifname.parse().unwrap(),
            args: String::new(),
            path: vec!["/nonexistent".into()],
        };
        let request = Request { invocation: &invocation, config: conf, cluster: None, kernel: &self.kernel };
        call_in_process(&self.sriov, "sriov", &request)
    }

    fn vf(&self) -> VfState {
        let pf: IfName = "ens1f0".parse().unwrap();
        self.kernel.vf_states(&pf).unwrap().remove(1)
    }

    /// The VF netdev's (name, MAC, MTU, up) on `side`, found by its PCI address.
    fn netdev(&self, side: Side) -> Option<(String, String, u32, bool)> {
        let vf = plexus_sim::kernel::LinkKind::Device(VF1.parse().unwrap());
        let link = self.kernel.all(side).into_iter().find(|l| l.kind == vf)?;
        Some((link.name, link.mac.map(|m| m.to_string()).unwrap_or_default(), link.mtu, link.up))
    }

    fn records(&self) -> usize {
        std::fs::read_dir(self.tree.dir().join("records"))
            .map(|dir| {
                dir.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json")).count()
            })
            .unwrap_or(0)
    }
}

fn full_conf(f: &Fixture) -> Value {
    f.conf(json!({"vlan": 100, "vlanQoS": 2, "vlanProto": "802.1ad", "spoofchk": "off", "trust": "on",
                  "mac": "02:11:22:33:44:55", "mtu": 9000,
                  "ipam": {"type": "static", "addresses": [{"address": "10.56.0.2/24", "gateway": "10.56.0.1"}],
                           "routes": [{"dst": "10.57.0.0/16"}]}}))
}

#[test]
fn add_moves_and_configures_and_del_restores_every_setting() {
    let f = Fixture::new("sriov-fake");
    // An administrator's VLAN on the PF side before any pod.
    let admin = VfChange { vlan: Some((7, 0, VlanProto::Dot1Q)), ..VfChange::default() };
    f.kernel.set_vf(&"ens1f0".parse().unwrap(), VfIndex(1), &admin).unwrap();
    let prior = f.vf();
    let host_before = f.netdev(Side::Host).unwrap();

    let result = f.call(Command::Add, "cid", &full_conf(&f)).unwrap().unwrap();
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert_eq!(f.netdev(Side::Host), None);
    assert_eq!(f.netdev(Side::Pod), Some(("net1".into(), "02:11:22:33:44:55".into(), 9000, true)));
    let applied = f.vf();
    assert_eq!(
        (applied.vlan, applied.qos, applied.vlan_proto, applied.trust),
        (100, 2, VlanProto::Dot1Ad, true)
    );
    let link = f.kernel.find(Side::Pod, "net1").unwrap();
    assert_eq!(link.addresses, [("10.56.0.2".parse().unwrap(), 24)]);
    assert_eq!(link.routes, [("10.57.0.0".parse().unwrap(), 16, Some("10.56.0.1".parse().unwrap()))]);
    assert_eq!(f.records(), 1);
    let mut checked = full_conf(&f);
    checked["prevResult"] = result;
    f.call(Command::Check, "cid", &checked).unwrap();

    f.call(Command::Del, "cid", &full_conf(&f)).unwrap();
    assert_eq!(f.netdev(Side::Host), Some(host_before), "back under its name, MAC, MTU and state");
    assert_eq!(f.netdev(Side::Pod), None);
    assert_eq!(f.vf(), prior, "every setting, the administrator's VLAN too");
    assert_eq!(f.records(), 0);
    f.call(Command::Del, "cid", &full_conf(&f)).unwrap();
}

#[test]
fn a_failure_at_any_step_of_add_is_undone_completely() {
    for step in ["set_vf", "move", "configure", "address", "route"] {
        let f = Fixture::new("sriov-undo");
        let (prior, host_before) = (f.vf(), f.netdev(Side::Host));
        f.kernel.fail_next(step, Errno::EIO);
        let err = f.call(Command::Add, "cid", &full_conf(&f)).unwrap_err();
        assert!(err.to_string().contains("EIO"), "{step}: {err}");
        assert_eq!(f.netdev(Side::Host), host_before, "{step}: the netdev back as it was");
        assert_eq!(f.vf(), prior, "{step}: the VF settings back");
        assert_eq!(f.records(), 0, "{step}: nothing left for DEL");
    }
}

#[test]
fn an_undo_that_fails_keeps_the_record_and_a_later_del_finishes_the_job() {
    let f = Fixture::new("sriov-undo-fail");
    let host_before = f.netdev(Side::Host);
    // The route fails after the move; both ways back into the host fail too.
    let back = format!("move #{} pod->host", f.kernel.find(Side::Host, "ens1f0v1").unwrap().index);
    f.kernel.fail_next("route", Errno::EIO);
    f.kernel.fail_next(&back, Errno::ENOMEM);
    f.kernel.fail_next(&back, Errno::ENOMEM);
    let err = f.call(Command::Add, "cid", &full_conf(&f)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("and undoing it failed") && text.contains("kept for DEL"), "{text}");
    assert_eq!(f.records(), 1);
    assert!(f.netdev(Side::Pod).is_some(), "still in the pod");
    f.call(Command::Del, "cid", &full_conf(&f)).unwrap();
    assert_eq!(f.netdev(Side::Host), host_before);
    assert_eq!(f.records(), 0);
}

#[test]
fn del_reports_every_failure_and_keeps_the_record_until_the_vf_is_restored() {
    let f = Fixture::new("sriov-del-fail");
    let conf = f.conf(json!({"vlan": 5, "ipam": {"type": "no-such-ipam"}}));
    // The IPAM binary cannot run: ADD fails before the move, and is undone.
    assert!(f.call(Command::Add, "cid", &conf).is_err());
    let plain = f.conf(json!({"vlan": 5}));
    let back = format!("move #{} pod->host", f.kernel.find(Side::Host, "ens1f0v1").unwrap().index);
    f.call(Command::Add, "cid", &plain).unwrap();
    f.kernel.fail_next(&back, Errno::ENOMEM);
    f.kernel.fail_next(&back, Errno::ENOMEM);
    let err = f.call(Command::Del, "cid", &conf).unwrap_err();
    let all: Vec<String> = err.flatten().iter().map(ToString::to_string).collect();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[0].contains("no-such-ipam"), "the IPAM release: {all:?}");
    assert!(all[1].contains("ENOMEM"), "the restore: {all:?}");
    assert_eq!(f.records(), 1, "kept: the VF is not restored yet");
    f.call(Command::Del, "cid", &plain).unwrap();
    assert_eq!(f.records(), 0);
    assert!(f.netdev(Side::Host).is_some());
}

#[test]
fn del_after_the_pod_died_finds_the_returned_netdev_by_its_pci_address() {
    let f = Fixture::new("sriov-gone");
    let (prior, host_before) = (f.vf(), f.netdev(Side::Host));
    f.call(Command::Add, "cid", &f.conf(json!({"vlan": 12, "mac": "02:00:00:00:12:01", "mtu": 1400})))
        .unwrap();
    // The kernel hands the VF back under its pod-side name.
    f.kernel.kill_pod();
    assert_eq!(f.netdev(Side::Host).map(|n| n.0), Some("net1".to_owned()));
    f.call(Command::Del, "cid", &f.conf(json!({}))).unwrap();
    assert_eq!(f.netdev(Side::Host), host_before, "renamed back, MAC, MTU and state restored");
    assert_eq!(f.vf(), prior);
}

#[test]
fn a_stale_altname_of_the_wanted_name_is_dropped_first() {
    let f = Fixture::new("sriov-alt");
    f.kernel.add_alt_name(Side::Host, "ens1f0v1", "net1");
    f.call(Command::Add, "cid", &f.conf(json!({}))).unwrap();
    assert_eq!(f.netdev(Side::Pod).map(|n| n.0), Some("net1".to_owned()));
    assert!(f.kernel.log().iter().any(|l| l.starts_with("del altname net1")), "{:?}", f.kernel.log());
}

#[test]
fn a_vf_held_by_another_container_is_not_touched() {
    let f = Fixture::new("sriov-held");
    f.call(Command::Add, "a", &f.conf(json!({}))).unwrap();
    let err = f.call(Command::Add, "a", &f.conf(json!({}))).unwrap_err();
    assert!(err.to_string().contains("already attached"), "{err}");
    let moves = f.kernel.log().len();
    f.call(Command::Del, "b", &f.conf(json!({}))).unwrap();
    assert_eq!(f.kernel.log().len(), moves, "DEL of another container changes nothing");
    assert!(f.netdev(Side::Pod).is_some());
}

/// The pod's own links, by name: (name, index, PCI address).
fn pod_links(f: &Fixture) -> Vec<(String, u32, Option<String>)> {
    let links = f.kernel.links(Side::Pod).unwrap();
    links.into_iter().map(|l| (l.name, l.index, l.parent_device)).collect()
}

#[test]
fn a_name_the_pod_has_is_refused_before_anything_changes() {
    let f = Fixture::new("sriov-taken");
    f.kernel.add_device(Side::Pod, "lo", "0000:99:00.0".parse().unwrap(), None, true);
    f.kernel.add_device(Side::Pod, "eth0", "0000:99:00.1".parse().unwrap(), None, true);
    let (prior, host_before, pod_before) = (f.vf(), f.netdev(Side::Host), pod_links(&f));
    for ifname in ["eth0", "lo"] {
        let err = f.call_as(Command::Add, "cid", ifname, &full_conf(&f)).unwrap_err();
        assert!(err.to_string().contains(&format!("already has an interface named {ifname}")), "{err}");
        assert_eq!(f.kernel.log(), Vec::<String>::new(), "{ifname}: nothing changed");
        assert_eq!(
            (f.vf(), f.netdev(Side::Host), pod_links(&f)),
            (prior.clone(), host_before.clone(), pod_before.clone())
        );
        assert_eq!(f.records(), 0);
        // The runtime's DEL then touches nothing of the pod's.
        f.call_as(Command::Del, "cid", ifname, &full_conf(&f)).unwrap();
        assert_eq!(pod_links(&f), pod_before);
        assert_eq!(f.netdev(Side::Host), host_before);
    }
}

#[test]
fn a_name_taken_in_the_pod_meanwhile_fails_after_the_move_and_the_undo_moves_only_the_vf() {
    let f = Fixture::new("sriov-race");
    let (prior, host_before) = (f.vf(), f.netdev(Side::Host));
    // Another process makes net1 in the pod between the check and the move: the kernel moves
    // the VF under its own name, then fails the rename.
    f.kernel.appear_before("move", Side::Pod, "net1");
    let err = f.call(Command::Add, "cid", &full_conf(&f)).unwrap_err();
    assert!(err.to_string().contains("EEXIST"), "{err}");
    assert_eq!(f.netdev(Side::Host), host_before, "the VF back under its name");
    assert_eq!(f.vf(), prior);
    let pod = pod_links(&f);
    assert_eq!(pod.len(), 1, "{pod:?}");
    assert_eq!((pod[0].0.as_str(), pod[0].2.as_deref()), ("net1", None), "the pod's own net1 stays");
    assert_eq!(f.records(), 0);
}

#[test]
fn del_finds_the_vf_in_the_pod_by_what_it_is_never_by_name() {
    let f = Fixture::new("sriov-identity");
    let host_before = f.netdev(Side::Host);
    f.call(Command::Add, "cid", &f.conf(json!({}))).unwrap();
    // In the pod, the VF is renamed, and a link of the pod's own takes its name.
    let vf = f.kernel.find(Side::Pod, "net1").unwrap().index;
    f.kernel.configure(Side::Pod, vf, plexus_hw::kernel::LinkSettings::DOWN).unwrap();
    f.kernel.rename(Side::Pod, vf, &"renamed".parse().unwrap()).unwrap();
    f.kernel.add_device(Side::Pod, "net1", "0000:99:00.1".parse().unwrap(), None, true);
    f.call(Command::Del, "cid", &f.conf(json!({}))).unwrap();
    assert_eq!(f.netdev(Side::Host), host_before);
    let pod = pod_links(&f);
    assert_eq!(pod.len(), 1, "{pod:?}");
    assert_eq!((pod[0].0.as_str(), pod[0].2.as_deref()), ("net1", Some("0000:99:00.1")));
    assert_eq!(f.records(), 0);
}

#[test]
fn on_a_kernel_that_names_no_parent_device_the_vf_is_found_by_its_node_ifindex() {
    let f = Fixture::new("sriov-old-kernel");
    f.kernel.without_parent_devices();
    let host_before = f.netdev(Side::Host);
    f.call(Command::Add, "cid", &full_conf(&f)).unwrap();
    assert_eq!(f.netdev(Side::Pod).map(|n| n.0), Some("net1".to_owned()));
    // A link of the pod's own under the VF's name does not fool the DEL.
    let vf = f.kernel.find(Side::Pod, "net1").unwrap().index;
    f.kernel.configure(Side::Pod, vf, plexus_hw::kernel::LinkSettings::DOWN).unwrap();
    f.kernel.rename(Side::Pod, vf, &"renamed".parse().unwrap()).unwrap();
    f.kernel.add_device(Side::Pod, "net1", "0000:99:00.1".parse().unwrap(), None, true);
    f.call(Command::Del, "cid", &full_conf(&f)).unwrap();
    assert_eq!(f.netdev(Side::Host), host_before);
    assert_eq!(pod_links(&f).iter().map(|l| l.0.as_str()).collect::<Vec<_>>(), ["net1"]);
    assert_eq!(f.records(), 0);
}
