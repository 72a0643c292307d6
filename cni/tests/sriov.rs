//! The `sriov` delegate end to end on a simulated node (root): VF netdevs are veth ends in
//! the node's namespace, the PF side is the simulator's VF control. Every check reads the
//! kernel with iproute2 or the simulator's store, independently of the code under test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command as Process;
use std::sync::Arc;

use plexus_cni::delegate::{Request, call_in_process};
use plexus_cni::error::Error;
use plexus_cni::spec::{Command, Invocation};
use plexus_cni::sriov::Sriov;
use plexus_hw::netns::Netns;
use plexus_hw::vf::{VfChange, VfLinkMode, VfState, VlanProto};
use plexus_hw::{IfName, PciAddress, VfIndex};
use plexus_sim::{ScratchNode, SimSpec};
use serde_json::{Value, json};

/// A simulated node (2 PFs x 4 VFs, the last VF of each bound to vfio-pci) with its links,
/// the delegate on it, and the pod namespaces a test makes; all removed on drop.
struct Fixture {
    node: ScratchNode,
    sriov: Sriov,
}

const VF1: &str = "0000:20:02.1"; // ens1f0v1
const VFIO: &str = "0000:20:02.3"; // VF 3 of ens1f0, vfio-pci

impl Fixture {
    fn new(tag: &str) -> Self {
        let spec = SimSpec { pfs: 2, numa_nodes: 1, vfs_per_pf: 4, vfio_vfs_per_pf: 1, cpus_per_node: 2 };
        let node = ScratchNode::with_links(&format!("sv-{tag}"), &spec).unwrap();
        let sriov = Sriov::new(node.hw_node());
        Self { node, sriov }
    }

    fn pod(&mut self) -> Netns {
        self.node.pod().unwrap()
    }

    fn records(&self) -> PathBuf {
        self.node.dir().join("records")
    }

    /// A NAD's config for `device`, with `extra` keys.
    fn conf(&self, device: &str, extra: Value) -> Value {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "sriov-net", "type": "sriov",
                              "deviceID": device, "dataDir": self.records()});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        conf
    }

    fn sim_netns(&self) -> &str {
        self.node.netns_name().unwrap()
    }

    fn vf_state(&self, pf: &str, index: u32) -> VfState {
        self.node.control().store().vf(&pf.parse::<IfName>().unwrap(), VfIndex(index)).unwrap()
    }

    /// Changes VF settings behind the delegate's back, as an administrator would.
    fn set_vf(&self, pf: &str, index: u32, change: &VfChange) {
        self.node.control().store().set(&pf.parse::<IfName>().unwrap(), VfIndex(index), change).unwrap();
    }

    /// Runs the delegate in-process on a kernel session of its own, as the meta-plugin does.
    fn run(&self, invocation: &Invocation, conf: &Value) -> Result<Option<Value>, Error> {
        let kernel = self.node.hw_node().session(invocation.netns.as_deref());
        let request = Request { invocation, config: conf, cluster: None, kernel: &kernel };
        call_in_process(&self.sriov, "sriov", &request)
    }

    fn add(&self, invocation: &Invocation, conf: &Value) -> Result<Value, Error> {
        self.run(invocation, conf).map(Option::unwrap_or_default)
    }

    fn del(&self, invocation: &Invocation, conf: &Value) -> Result<(), Error> {
        self.run(invocation, conf).map(drop)
    }

    fn check(&self, invocation: &Invocation, conf: &Value) -> Result<(), Error> {
        self.run(invocation, conf).map(drop)
    }
}

fn invocation(command: Command, cid: &str, netns: &str, ifname: &str) -> Invocation {
    let env = HashMap::from([
        ("CNI_COMMAND", command.as_str().to_owned()),
        ("CNI_CONTAINERID", cid.to_owned()),
        ("CNI_NETNS", netns.to_owned()),
        ("CNI_IFNAME", ifname.to_owned()),
        ("CNI_PATH", "/usr/lib/cni".to_owned()),
    ]);
    Invocation::from_env(|k| env.get(k).cloned()).unwrap()
}

fn ip(netns: &str, args: &[&str]) -> Value {
    plexus_sim::ip::json(Some(netns), args)
}

/// (MAC, MTU, up) of a link, `None` when there is no such link.
fn link(netns: &str, name: &str) -> Option<(String, u64, bool)> {
    plexus_sim::ip::link(Some(netns), name).map(|l| (l.mac, l.mtu, l.up))
}

fn ns_name(ns: &Netns) -> &str {
    ns.name().unwrap()
}

#[test]
fn add_configures_everything_and_del_restores_everything_not_only_what_the_nad_set() {
    let mut f = Fixture::new("full");
    let pod = f.pod();
    let netns = pod.path().display().to_string();
    // A VF with history: an administrator's VLAN and MAC on the PF side.
    let before = VfChange { vlan: Some((7, 0, VlanProto::Dot1Q)), ..VfChange::default() };
    f.set_vf("ens1f0", 1, &before);
    let prior = f.vf_state("ens1f0", 1);
    let host_before = link(f.sim_netns(), "ens1f0v1").unwrap();

    let conf = f.conf(
        VF1,
        json!({"vlan": 100, "vlanQoS": 2, "vlanProto": "802.1ad", "spoofchk": "off", "trust": "on",
               "link_state": "enable", "min_tx_rate": 10, "max_tx_rate": 1000, "mac": "02:11:22:33:44:55",
               "mtu": 9000,
               "ipam": {"type": "static", "addresses": [{"address": "10.56.0.2/24", "gateway": "10.56.0.1"}],
                        "routes": [{"dst": "10.57.0.0/16"}], "dns": {"nameservers": ["10.56.0.53"]}}}),
    );
    let add = invocation(Command::Add, "cid-full", &netns, "net1");
    let result = f.add(&add, &conf).unwrap();
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"], json!([{"name": "net1", "mac": "02:11:22:33:44:55", "sandbox": netns}]));
    assert_eq!(result["ips"], json!([{"address": "10.56.0.2/24", "gateway": "10.56.0.1", "interface": 0}]));
    assert_eq!(result["routes"], json!([{"dst": "10.57.0.0/16"}]));
    assert_eq!(result["dns"]["nameservers"], json!(["10.56.0.53"]));

    // The PF side: every key applied.
    let applied = f.vf_state("ens1f0", 1);
    assert_eq!((applied.vlan, applied.qos, applied.vlan_proto), (100, 2, VlanProto::Dot1Ad));
    assert_eq!((applied.spoofchk, applied.trust, applied.link_state), (false, true, VfLinkMode::Enable));
    assert_eq!((applied.min_tx_rate, applied.max_tx_rate), (10, 1000));
    assert_eq!(applied.mac.to_string(), "02:11:22:33:44:55");
    // The netdev: gone from the host, in the pod as net1, configured, addressed, routed.
    assert_eq!(link(f.sim_netns(), "ens1f0v1"), None);
    assert_eq!(link(ns_name(&pod), "net1"), Some(("02:11:22:33:44:55".into(), 9000, true)));
    let addrs = ip(ns_name(&pod), &["addr", "show", "dev", "net1"]);
    assert!(addrs[0]["addr_info"].as_array().unwrap().iter().any(|a| a["local"] == "10.56.0.2"), "{addrs}");
    let route = ip(ns_name(&pod), &["route", "show", "10.57.0.0/16"]);
    assert_eq!(route[0]["gateway"], "10.56.0.1", "a route without gw goes via the address's gateway");

    // CHECK passes, then fails naming what changed behind our back.
    let check = invocation(Command::Check, "cid-full", &netns, "net1");
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result.clone();
    f.check(&check, &with_prev).unwrap();
    let tamper = VfChange { vlan: Some((200, 0, VlanProto::Dot1Q)), ..VfChange::default() };
    f.set_vf("ens1f0", 1, &tamper);
    let err = f.check(&check, &with_prev).unwrap_err();
    assert!(err.to_string().contains("0000:20:02.1 settings changed"), "{err:?}");
    f.set_vf("ens1f0", 1, &applied.as_change());
    Process::new("ip").args(["-n", ns_name(&pod), "addr", "flush", "dev", "net1"]).status().unwrap();
    let err = f.check(&check, &with_prev).unwrap_err();
    assert!(err.to_string().contains("lacks its address 10.56.0.2/24"), "{err:?}");

    // DEL: everything as it was, including the VLAN the NAD never mentioned; twice is fine.
    let del = invocation(Command::Del, "cid-full", &netns, "net1");
    f.del(&del, &conf).unwrap();
    assert_eq!(f.vf_state("ens1f0", 1), prior);
    assert_eq!(link(f.sim_netns(), "ens1f0v1"), Some(host_before.clone()));
    assert_eq!(link(ns_name(&pod), "net1"), None);
    assert!(
        std::fs::read_dir(f.records()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".json"))
    );
    f.del(&del, &conf).unwrap();

    // The next pod's NAD sets no VLAN: it gets the administrator's, not the last pod's.
    let add = invocation(Command::Add, "cid-next", &netns, "net1");
    f.add(&add, &f.conf(VF1, json!({}))).unwrap();
    assert_eq!(f.vf_state("ens1f0", 1).vlan, 7);
    f.del(&invocation(Command::Del, "cid-next", &netns, "net1"), &f.conf(VF1, json!({}))).unwrap();
    assert_eq!(link(f.sim_netns(), "ens1f0v1"), Some(host_before));
}

#[test]
fn del_after_the_pod_namespace_is_gone_finds_the_returned_netdev_and_restores_it() {
    let mut f = Fixture::new("gone");
    let pod = f.pod();
    let netns = pod.path().display().to_string();
    let host_before = link(f.sim_netns(), "ens1f0v1").unwrap();
    let prior = f.vf_state("ens1f0", 1);
    let conf = f.conf(VF1, json!({"vlan": 12, "mac": "02:00:00:00:12:01", "mtu": 1400}));
    f.add(&invocation(Command::Add, "cid-gone", &netns, "eth1"), &conf).unwrap();
    pod.delete().unwrap();

    // DEL without a netns, as runtimes send it once the sandbox is gone.
    let del = invocation(Command::Del, "cid-gone", "", "eth1");
    f.del(&del, &conf).unwrap();
    assert_eq!(link(f.sim_netns(), "ens1f0v1"), Some(host_before), "back under its own name, MAC and MTU");
    assert_eq!(f.vf_state("ens1f0", 1), prior);
    let names: Vec<String> = ip(f.sim_netns(), &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("dev")), "no stray returned netdev: {names:?}");
    f.del(&del, &conf).unwrap();
}

#[test]
fn a_vf_held_by_a_live_pod_is_refused_and_one_left_by_a_dead_pod_is_restored_then_given() {
    let mut f = Fixture::new("held");
    let first = f.pod();
    let second = f.pod();
    let (a, b) = (first.path().display().to_string(), second.path().display().to_string());
    let conf = f.conf(VF1, json!({"vlan": 33}));
    f.add(&invocation(Command::Add, "cid-a", &a, "net1"), &conf).unwrap();
    let err = f.add(&invocation(Command::Add, "cid-b", &b, "net1"), &conf).unwrap_err();
    assert!(err.to_string().contains("in use by container cid-a"), "{err:?}");
    let err = f.add(&invocation(Command::Add, "cid-a", &a, "net1"), &conf).unwrap_err();
    assert!(err.to_string().contains("already attached"), "{err:?}");
    // A DEL for another container must not touch the VF.
    f.del(&invocation(Command::Del, "cid-b", &b, "net1"), &conf).unwrap();
    assert!(link(ns_name(&first), "net1").is_some());

    // The first pod dies without a DEL; the VF comes back and goes to the second pod.
    first.delete().unwrap();
    let no_vlan = f.conf(VF1, json!({}));
    f.add(&invocation(Command::Add, "cid-b", &b, "net1"), &no_vlan).unwrap();
    assert_eq!(f.vf_state("ens1f0", 1).vlan, 0, "the dead pod's VLAN was restored away");
    assert!(link(ns_name(&second), "net1").is_some());
    f.del(&invocation(Command::Del, "cid-b", &b, "net1"), &no_vlan).unwrap();
    assert!(link(f.sim_netns(), "ens1f0v1").is_some());
}

#[test]
fn a_failed_add_undoes_every_step() {
    let mut f = Fixture::new("undo");
    let pod = f.pod();
    let netns = pod.path().display().to_string();
    let host_before = link(f.sim_netns(), "ens1f0v1").unwrap();
    let prior = f.vf_state("ens1f0", 1);
    // The route's gateway is off-link: the kernel refuses it after the VF was moved, renamed,
    // configured and addressed.
    let conf = f.conf(
        VF1,
        json!({"vlan": 5, "mtu": 2000, "ipam": {"type": "static", "addresses": [{"address": "10.60.0.2/24"}],
                                                 "routes": [{"dst": "10.61.0.0/16", "gw": "192.0.2.1"}]}}),
    );
    let err = f.add(&invocation(Command::Add, "cid-undo", &netns, "net1"), &conf).unwrap_err();
    assert!(err.to_string().contains("10.61.0.0/16"), "{err:?}");
    assert_eq!(link(f.sim_netns(), "ens1f0v1"), Some(host_before));
    assert_eq!(link(ns_name(&pod), "net1"), None);
    assert_eq!(f.vf_state("ens1f0", 1), prior);
    assert!(
        std::fs::read_dir(f.records()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".json"))
    );

    // IPAM that cannot run fails before the netdev moves, and is undone all the same.
    let conf = f.conf(VF1, json!({"vlan": 5, "ipam": {"type": "no-such-ipam"}}));
    let err = f.add(&invocation(Command::Add, "cid-undo", &netns, "net1"), &conf).unwrap_err();
    assert!(err.to_string().contains("no-such-ipam"), "{err:?}");
    assert_eq!(f.vf_state("ens1f0", 1), prior);
    assert!(link(f.sim_netns(), "ens1f0v1").is_some());
}

#[test]
fn a_stale_altname_of_the_wanted_name_does_not_block_the_rename() {
    let mut f = Fixture::new("alt");
    let pod = f.pod();
    let netns = pod.path().display().to_string();
    let status = Process::new("ip")
        .args(["-n", f.sim_netns(), "link", "property", "add", "dev", "ens1f0v1", "altname", "net1"])
        .status()
        .unwrap();
    assert!(status.success());
    let conf = f.conf(VF1, json!({}));
    f.add(&invocation(Command::Add, "cid-alt", &netns, "net1"), &conf).unwrap();
    assert!(link(ns_name(&pod), "net1").is_some());
    f.del(&invocation(Command::Del, "cid-alt", &netns, "net1"), &conf).unwrap();
    assert!(link(f.sim_netns(), "ens1f0v1").is_some());
}

#[test]
fn dpdk_mode_configures_the_vf_without_a_netdev_and_reports_its_pci_address() {
    let mut f = Fixture::new("dpdk");
    let pod = f.pod();
    let netns = pod.path().display().to_string();
    let conf = f.conf(VFIO, json!({"cniVersion": "1.1.0", "vlan": 300, "mac": "02:00:00:00:03:00"}));
    let result = f.add(&invocation(Command::Add, "cid-dpdk", &netns, "net1"), &conf).unwrap();
    assert_eq!(
        result["interfaces"],
        json!([{"name": "net1", "mac": "02:00:00:00:03:00", "sandbox": netns, "pciID": VFIO}])
    );
    assert_eq!(f.vf_state("ens1f0", 3).vlan, 300);
    assert_eq!(link(ns_name(&pod), "net1"), None, "no netdev moves in DPDK mode");
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result;
    f.check(&invocation(Command::Check, "cid-dpdk", &netns, "net1"), &with_prev).unwrap();
    f.del(&invocation(Command::Del, "cid-dpdk", &netns, "net1"), &conf).unwrap();
    assert_eq!(f.vf_state("ens1f0", 3), VfState::pristine(VfIndex(3)));
}

#[test]
fn del_of_a_vf_that_vanished_forgets_it_and_bad_devices_are_named() {
    let mut f = Fixture::new("vanish");
    let pod = f.pod();
    let netns = pod.path().display().to_string();
    let conf = f.conf(VF1, json!({}));
    f.add(&invocation(Command::Add, "cid-v", &netns, "net1"), &conf).unwrap();
    // The PF's VFs are removed (sriov_numvfs written): the VF's PCI device is gone.
    f.node.set_num_vfs(0, 0).unwrap();
    f.del(&invocation(Command::Del, "cid-v", &netns, "net1"), &conf).unwrap();
    assert!(
        std::fs::read_dir(f.records()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".json"))
    );

    let add = invocation(Command::Add, "cid-x", &netns, "net1");
    let err = f.add(&add, &f.conf("0000:99:00.0", json!({}))).unwrap_err();
    assert!(err.to_string().contains("no PCI device 0000:99:00.0"), "{err:?}");
    let pf: PciAddress = "0000:20:00.1".parse().unwrap();
    let err = f.add(&add, &f.conf(&pf.to_string(), json!({}))).unwrap_err();
    assert!(err.to_string().contains("physfn"), "a PF is not a VF: {err:?}");
}

/// Runs the `plexus` binary (as `program`, a path to it or to a link to it) with the CNI
/// environment and the simulated node's sysfs root; returns (exit code, stdout as JSON).
fn binary(f: &Fixture, program: &std::path::Path, vars: &[(&str, &str)], stdin: &Value) -> (i32, Value) {
    use std::io::Write;
    let mut child = Process::new(program)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("PLEXUS_SYSFS_ROOT", f.node.root())
        .env("CNI_PATH", "/usr/lib/cni")
        .envs(vars.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(stdin).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), value)
}

#[test]
fn the_plexus_binary_runs_sriov_in_process_and_as_a_standalone_plugin() {
    let mut f = Fixture::new("bin");
    let pod = f.pod();
    let netns = pod.path().display().to_string();
    let plexus = PathBuf::from(env!("CARGO_BIN_EXE_plexus-standalone"));
    let conf_dir = f.node.dir().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let sriov_conf = f.conf(
        VF1,
        json!({"vlan": 44, "ipam": {"type": "static", "addresses": [{"address": "10.44.0.2/24", "gateway": "10.44.0.1"}],
                                    "routes": [{"dst": "0.0.0.0/0"}]}}),
    );
    std::fs::write(conf_dir.join("10-sriov.conf"), serde_json::to_vec(&sriov_conf).unwrap()).unwrap();
    let meta = json!({"cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus", "confDir": conf_dir,
                      "cniDir": f.node.dir().join("cache"), "clusterNetwork": "sriov-net"});
    let vars = |command: &'static str| {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "cid-bin"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ]
    };
    // The meta-plugin, with sriov as the cluster network: called in-process, no sriov binary.
    let (code, result) = binary(&f, &plexus, &vars("ADD"), &meta);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["interfaces"][0]["name"], "eth0");
    assert_eq!(result["ips"][0]["address"], "10.44.0.2/24");
    assert_eq!(f.vf_state("ens1f0", 1).vlan, 44);
    assert!(link(ns_name(&pod), "eth0").is_some_and(|(_, _, up)| up));
    let (code, out) = binary(&f, &plexus, &vars("CHECK"), &meta);
    assert_eq!(code, 0, "{out}");
    let (code, out) = binary(&f, &plexus, &vars("DEL"), &meta);
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.vf_state("ens1f0", 1).vlan, 0);
    assert!(link(f.sim_netns(), "ens1f0v1").is_some());

    // The same binary linked as `sriov`: the plugin by itself, as plain Multus calls it.
    let link_path = f.node.dir().join("sriov");
    std::os::unix::fs::symlink(&plexus, &link_path).unwrap();
    let standalone = |command: &'static str| {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "cid-alone"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "net1"),
        ]
    };
    let (code, result) = binary(&f, &link_path, &standalone("ADD"), &sriov_conf);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert!(link(ns_name(&pod), "net1").is_some());
    let (code, error) = binary(&f, &link_path, &standalone("ADD"), &sriov_conf);
    assert_eq!((code, error["code"].as_u64()), (1, Some(100)), "{error}");
    assert!(error["msg"].as_str().unwrap().contains("already attached"), "{error}");
    let (code, _) = binary(&f, &link_path, &standalone("DEL"), &sriov_conf);
    assert_eq!(code, 0);
    assert!(link(f.sim_netns(), "ens1f0v1").is_some());
    let (code, version) = binary(&f, &link_path, &standalone("VERSION"), &json!({}));
    assert_eq!((code, version["cniVersion"].as_str()), (0, Some("1.1.0")));
}

/// Devices "allocated" to every pod, as the kubelet would report them.
struct Allocated(Vec<String>, PathBuf);

impl plexus_cni::multus::devices::Devices for Allocated {
    fn allocated(
        &self,
        _pod: &plexus_cni::multus::cluster::Pod,
        resource: &str,
    ) -> Result<Vec<String>, plexus_cni::multus::devices::DevicesError> {
        Ok(if resource == "intel.com/sriov_net" { self.0.clone() } else { Vec::new() })
    }

    fn devinfo_dir(&self) -> &std::path::Path {
        &self.1
    }
}

#[test]
fn each_attachment_of_a_resource_takes_the_pods_next_device() {
    let f = Fixture::new("devids");
    let mut node = common::Node::new("sv-devids");
    node.registry.register("sriov", Arc::new(Sriov::new(f.node.hw_node())));
    node.hw_node = Some(f.node.hw_node());
    let devinfo = f.node.dir().join("devinfo");
    std::fs::create_dir_all(devinfo.join("dp")).unwrap();
    let info = r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:20:02.0"}}"#;
    std::fs::write(devinfo.join("dp/intel.com-sriov_net-0000:20:02.0-device.json"), info).unwrap();
    // Sorted by the kubelet side; the pod was given two VFs of the resource.
    node.devices =
        Some(Box::new(Allocated(vec!["0000:20:02.0".into(), "0000:20:02.1".into()], devinfo.clone())));
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr9", "10.62.0.0/24"));
    // A NAD as the SR-IOV docs write it: no deviceID, the resource in an annotation.
    let sriov =
        json!({"cniVersion": "1.0.0", "name": "sriov-a", "type": "sriov", "dataDir": f.records(), "vlan": 9});
    node.cluster.nads.lock().unwrap().push(plexus_cni::multus::cluster::Nad {
        namespace: "tenant".into(),
        name: "sriov-a".into(),
        config: sriov.to_string(),
        annotations: [("k8s.v1.cni.cncf.io/resourceName".to_owned(), "intel.com/sriov_net".to_owned())]
            .into(),
    });
    node.cluster.add_pod("tenant", "dpdk", &[("k8s.v1.cni.cncf.io/networks", "sriov-a, sriov-a")]);
    let meta = node.meta(json!({"clusterNetwork": "cluster"}));
    common::ok(&node.call(&node.env("ADD", "c-dev", Some(("tenant", "dpdk"))), &meta, true));
    // net1 got the first device, net2 the second: each VF's netdev is in the pod.
    let pod = node.pod.name().unwrap().to_owned();
    assert_eq!(link(&pod, "net1").map(|l| l.0), Some("02:70:78:00:01:00".to_owned()), "ens1f0v0");
    assert_eq!(link(&pod, "net2").map(|l| l.0), Some("02:70:78:00:01:01".to_owned()), "ens1f0v1");
    assert_eq!((f.vf_state("ens1f0", 0).vlan, f.vf_state("ens1f0", 1).vlan), (9, 9));
    let statuses = node.cluster.statuses.lock().unwrap().clone();
    let (_, status) = statuses.last().unwrap();
    assert_eq!(status[1].device_info.as_ref().unwrap()["pci"]["pci-address"], "0000:20:02.0");
    assert!(devinfo.join("cni/c-dev-net1-device.json").exists());
    common::ok(&node.call(&node.env("DEL", "c-dev", Some(("tenant", "dpdk"))), &meta, true));
    assert!(link(f.sim_netns(), "ens1f0v0").is_some() && link(f.sim_netns(), "ens1f0v1").is_some());
    assert!(!devinfo.join("cni/c-dev-net1-device.json").exists());

    // A third attachment finds no device left: as in Multus, its delegate runs without a
    // deviceID, and sriov says it needs one; the ADD is undone.
    node.cluster.add_pod("tenant", "greedy", &[("k8s.v1.cni.cncf.io/networks", "sriov-a, sriov-a, sriov-a")]);
    let err =
        common::failed(&node.call(&node.env("ADD", "c-greedy", Some(("tenant", "greedy"))), &meta, true));
    assert!(
        err["msg"].as_str().unwrap().contains("net3") && err["msg"].as_str().unwrap().contains("deviceID"),
        "{err}"
    );
    assert!(link(f.sim_netns(), "ens1f0v0").is_some() && link(f.sim_netns(), "ens1f0v1").is_some());

    // A NAD whose resource the pod has no device of (Multus's DRA examples: the delegate finds
    // its device itself) is attached without a deviceID.
    let ptp = json!({"cniVersion": "1.0.0", "name": "dra-net", "type": "ptp",
                     "ipam": {"type": "host-local", "subnet": "10.64.0.0/24", "dataDir": node.ipam_dir()}});
    node.cluster.nads.lock().unwrap().push(plexus_cni::multus::cluster::Nad {
        namespace: "tenant".into(),
        name: "dra-net".into(),
        config: ptp.to_string(),
        annotations: [("k8s.v1.cni.cncf.io/resourceName".to_owned(), "dra.example.com/claim".to_owned())]
            .into(),
    });
    node.cluster.add_pod("tenant", "dra", &[("k8s.v1.cni.cncf.io/networks", "dra-net")]);
    common::ok(&node.call(&node.env("ADD", "c-dra", Some(("tenant", "dra"))), &meta, true));
    assert!(node.pod_addrs()["net1"][0].starts_with("10.64.0."));
    common::ok(&node.call(&node.env("DEL", "c-dra", Some(("tenant", "dra"))), &meta, true));
}

/// The pod's own links: name and (for the test's veth) its peer, as iproute2 lists them.
fn pod_links(pod: &Netns) -> Vec<String> {
    let mut names = plexus_sim::ip::link_names(Some(ns_name(pod)));
    names.sort();
    names
}

#[test]
fn a_name_the_pod_already_has_is_refused_and_the_pods_link_is_never_touched() {
    let mut f = Fixture::new("taken");
    let pod = f.pod();
    let netns = pod.path().display().to_string();
    // The pod's own eth0 (a veth of its own: this kernel has no dummy links).
    plexus_sim::ip::run(
        Some(ns_name(&pod)),
        &["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"],
    )
    .unwrap();
    let (pod_before, eth0_before) = (pod_links(&pod), link(ns_name(&pod), "eth0"));
    let (host_before, prior) = (link(f.sim_netns(), "ens1f0v1"), f.vf_state("ens1f0", 1));
    let conf = f.conf(VF1, json!({"vlan": 9, "mtu": 2000}));
    for ifname in ["eth0", "lo"] {
        let err = f.add(&invocation(Command::Add, "cid-taken", &netns, ifname), &conf).unwrap_err();
        assert!(err.to_string().contains(&format!("already has an interface named {ifname}")), "{err}");
        // The runtime's DEL after the failed ADD.
        f.del(&invocation(Command::Del, "cid-taken", &netns, ifname), &conf).unwrap();
        assert_eq!((pod_links(&pod), link(ns_name(&pod), "eth0")), (pod_before.clone(), eth0_before.clone()));
        assert_eq!(
            (link(f.sim_netns(), "ens1f0v1"), f.vf_state("ens1f0", 1)),
            (host_before.clone(), prior.clone())
        );
    }
}

#[test]
fn the_kernel_moves_a_link_before_it_renames_it_as_the_fake_kernel_says() {
    use plexus_hw::kernel::{Kernel, NetlinkKernel, Side};
    // What the in-memory kernel's move is modelled on, checked on this kernel: a move with a
    // name taken in the target moves the link under its own name, then fails the rename.
    let mut f = Fixture::new("quirk");
    let pod = f.pod();
    plexus_sim::ip::run(
        Some(ns_name(&pod)),
        &["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"],
    )
    .unwrap();
    let kernel = NetlinkKernel::new(f.node.netns_path(), Some(pod.path().to_owned()));
    let vf = kernel.link(Side::Host, &"ens1f0v1".parse().unwrap()).unwrap().unwrap();
    let err = kernel.move_link(Side::Host, vf.index, Some(&"eth0".parse().unwrap())).unwrap_err();
    assert_eq!(err.errno(), Some(nix::errno::Errno::EEXIST as i32), "{err}");
    assert!(link(f.sim_netns(), "ens1f0v1").is_none(), "moved");
    assert!(link(ns_name(&pod), "ens1f0v1").is_some(), "under its own name");
    let moved = kernel.link(Side::Pod, &"ens1f0v1".parse().unwrap()).unwrap().unwrap();
    kernel.move_link(Side::Pod, moved.index, None).unwrap();
    assert!(link(f.sim_netns(), "ens1f0v1").is_some());
}

#[test]
fn a_nads_log_file_and_level_are_written_as_sriov_cni_writes_them() {
    let mut f = Fixture::new("log");
    let pod = f.pod();
    let netns = pod.path().display().to_string();
    // Under /var/log, as SR-IOV CNI's docs put it; this test's own file.
    let log = PathBuf::from(format!("/var/log/plexus-test-sriov-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let conf = f.conf(VF1, json!({"logFile": log, "LogLevel": "debug"}));
    f.add(&invocation(Command::Add, "cid-log", &netns, "net1"), &conf).unwrap();
    f.del(&invocation(Command::Del, "cid-log", &netns, "net1"), &conf).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].contains(" [info] ADD cniName=\"sriov-cni\" containerID=\"cid-log\""), "{text}");
    assert!(lines[1].contains(" [debug] VF 0000:20:02.1: index 1 of PF ens1f0"), "{text}");
    assert!(lines[2].contains(" [info] ADD done: {"), "{text}");
    assert!(lines[4].contains(" [info] DEL done") && lines[4].contains("ifname=\"net1\""), "{text}");

    // At the default level (info) no debug line.
    let conf = f.conf(VF1, json!({"logFile": log}));
    f.add(&invocation(Command::Add, "cid-log2", &netns, "net1"), &conf).unwrap();
    f.del(&invocation(Command::Del, "cid-log2", &netns, "net1"), &conf).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(!text.contains("[debug]"), "{text}");

    // A file outside /var/log (a NAD's author could name any file) is never written.
    let outside = f.node.dir().join("sriov.log");
    let conf = f.conf(VF1, json!({"logFile": outside, "logLevel": "debug"}));
    f.add(&invocation(Command::Add, "cid-log3", &netns, "net1"), &conf).unwrap();
    f.del(&invocation(Command::Del, "cid-log3", &netns, "net1"), &conf).unwrap();
    assert!(!outside.exists());
}

/// Replaces PF `pf` of the simulated node (a bridge in its namespace) by the port of netdevsim
/// device `id` with `vfs` VFs, renamed so: the PF side of the seam is then a real driver's (the
/// kernel lab). The device goes when the value is dropped.
fn netdevsim_as(f: &Fixture, id: u32, pf: &str, vfs: u32) -> plexus_sim::netdevsim::Netdevsim {
    let device = plexus_sim::netdevsim::Netdevsim::new(id, vfs).unwrap();
    let ns = f.sim_netns();
    plexus_sim::ip::run(Some(ns), &["link", "del", pf]).unwrap();
    plexus_sim::ip::run(None, &["link", "set", device.netdev.as_str(), "name", pf]).unwrap();
    plexus_sim::ip::run(None, &["link", "set", pf, "netns", ns]).unwrap();
    device
}

/// The PF side through netlink (a real driver's), the VF netdevs the simulator's: veth ends
/// have no parent device to be found by, which a real VF netdev has.
#[derive(Debug)]
struct RealPfSide(plexus_sim::SimVfControl);

impl plexus_hw::vf::VfControl for RealPfSide {
    fn vfs(
        &self,
        kernel: &dyn plexus_hw::kernel::Kernel,
        pf: &IfName,
    ) -> Result<Vec<VfState>, plexus_hw::vf::VfError> {
        plexus_hw::vf::NetlinkVfControl.vfs(kernel, pf)
    }

    fn set(
        &self,
        kernel: &dyn plexus_hw::kernel::Kernel,
        pf: &IfName,
        vf: VfIndex,
        change: &VfChange,
    ) -> Result<(), plexus_hw::vf::VfError> {
        plexus_hw::vf::NetlinkVfControl.set(kernel, pf, vf, change)
    }

    fn host_netdev(
        &self,
        kernel: &dyn plexus_hw::kernel::Kernel,
        vf: &plexus_hw::discover::VfLocation,
    ) -> Result<Option<IfName>, plexus_hw::vf::VfError> {
        self.0.host_netdev(kernel, vf)
    }

    fn pod_netdev(
        &self,
        kernel: &dyn plexus_hw::kernel::Kernel,
        vf: &plexus_hw::discover::VfLocation,
        host_index: Option<u32>,
    ) -> Result<Option<plexus_hw::kernel::LinkInfo>, plexus_hw::vf::VfError> {
        self.0.pod_netdev(kernel, vf, host_index)
    }
}

#[test]
#[ignore = "runs in the kernel lab (hack/lab-tests.sh): needs netdevsim"]
fn the_whole_attachment_with_the_pf_side_on_a_real_driver() {
    use plexus_hw::vf::{NetlinkVfControl, VfControl};
    let mut f = Fixture::new("nsim");
    let _device = netdevsim_as(&f, 21, "ens1f0", 4);
    let node = plexus_hw::Node::new(
        plexus_hw::SysfsRoot::new(f.node.root()),
        f.node.netns_path(),
        Arc::new(RealPfSide(f.node.control())),
    );
    let sriov = Sriov::new(node.clone());
    let run = |invocation: &Invocation, conf: &serde_json::Value| {
        let kernel = node.session(invocation.netns.as_deref());
        let request = Request { invocation, config: conf, cluster: None, kernel: &kernel };
        call_in_process(&sriov, "sriov", &request)
    };
    let pf: IfName = "ens1f0".parse().unwrap();
    let read = || NetlinkVfControl.vf(&node.session(None), &pf, VfIndex(1)).unwrap();
    // An administrator's VLAN on VF 1, through the driver.
    let admin = VfChange { vlan: Some((7, 0, VlanProto::Dot1Q)), ..VfChange::default() };
    NetlinkVfControl.set(&node.session(None), &pf, VfIndex(1), &admin).unwrap();
    let prior = read();
    let others: Vec<VfState> = NetlinkVfControl.vfs(&node.session(None), &pf).unwrap();

    let conf = f.conf(
        VF1,
        json!({"vlan": 100, "vlanQoS": 2, "vlanProto": "802.1ad", "spoofchk": "off", "trust": "on",
               "link_state": "enable", "min_tx_rate": 10, "max_tx_rate": 1000, "mac": "02:11:22:33:44:55",
               "ipam": {"type": "static", "addresses": [{"address": "10.56.0.2/24"}]}}),
    );
    for round in ["pod namespace present at DEL", "pod namespace gone at DEL"] {
        let pod = f.pod();
        let netns = pod.path().display().to_string();
        let add = invocation(Command::Add, "cid-nsim", &netns, "net1");
        let result = run(&add, &conf).unwrap().unwrap();
        // What the driver now holds for VF 1, read from the kernel.
        let applied = read();
        assert_eq!((applied.vlan, applied.qos, applied.vlan_proto), (100, 2, VlanProto::Dot1Ad), "{round}");
        assert_eq!((applied.spoofchk, applied.trust, applied.link_state), (false, true, VfLinkMode::Enable));
        assert_eq!((applied.min_tx_rate, applied.max_tx_rate), (10, 1000));
        assert_eq!(applied.mac.to_string(), "02:11:22:33:44:55");
        let now = NetlinkVfControl.vfs(&node.session(None), &pf).unwrap();
        for other in [0, 2, 3] {
            assert_eq!(now[other], others[other], "VF {other} untouched");
        }
        assert_eq!(link(ns_name(&pod), "net1").map(|l| l.0), Some("02:11:22:33:44:55".into()));
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = result;
        run(&invocation(Command::Check, "cid-nsim", &netns, "net1"), &with_prev).unwrap();
        let del = if round.contains("gone") {
            pod.delete().unwrap();
            invocation(Command::Del, "cid-nsim", "", "net1")
        } else {
            invocation(Command::Del, "cid-nsim", &netns, "net1")
        };
        run(&del, &conf).unwrap();
        assert_eq!(read(), prior, "{round}: VF 1 exactly as it was, read from the driver");
        assert!(link(f.sim_netns(), "ens1f0v1").is_some(), "{round}: the netdev is back");
        run(&del, &conf).unwrap();
    }
}
