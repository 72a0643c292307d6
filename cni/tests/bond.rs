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

/// The bond delegate in-process, for container `cid`'s `bond0` in `pod`.
fn bond(
    command: Command,
    cid: &str,
    pod: &Netns,
    config: &serde_json::Value,
    kernel: &dyn Kernel,
) -> Result<Option<serde_json::Value>, plexus_cni::Error> {
    let invocation = Invocation {
        command,
        container_id: cid.into(),
        netns: Some(pod.path().to_owned()),
        ifname: "bond0".parse().unwrap(),
        args: String::new(),
        path: vec!["/usr/lib/cni".into()],
    };
    let request = Request { invocation: &invocation, config, cluster: None, kernel };
    call_in_process(&Bond, "bond", &request)
}

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
    let call = |command: Command| bond(command, "bond-test", &pod, &config, &kernel);
    call(Command::Add).unwrap();
    let link = |name: &str| kernel.link(Side::Pod, &name.parse().unwrap()).unwrap();
    let made = link("bond0").expect("the bond");
    for slave in ["net1", "net2"] {
        assert_eq!(link(slave).unwrap().controller, Some(made.index), "{slave}");
    }
    call(Command::Del).unwrap();
    assert!(link("bond0").is_none());
    assert_eq!(link("net1").unwrap().controller, None);
    call(Command::Del).unwrap();
    pod.delete().unwrap();
}

/// What `ip -d -j link show` says of link `name` in namespace `ns`.
fn ip_link(ns: &str, name: &str) -> serde_json::Value {
    let out =
        std::process::Command::new("ip").args(["-n", ns, "-d", "-j", "link", "show", name]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
}

fn veth_pair(ns: Option<&str>, a: &str, b: &str) {
    let mut ip = std::process::Command::new("ip");
    if let Some(ns) = ns {
        ip.args(["-n", ns]);
    }
    assert!(ip.args(["link", "add", a, "type", "veth", "peer", "name", b]).status().unwrap().success());
}

#[test]
#[cfg_attr(
    not(plexus_kernel_bonding),
    ignore = "this kernel has no bonding driver: runs in the kernel lab (hack/lab-tests.sh)"
)]
fn every_bond_option_is_what_the_kernel_reads_back_and_host_links_go_home() {
    let cases = [
        (
            json!({"mode": "active-backup", "miimon": "100", "failOverMac": 1, "mtu": 1400}),
            json!({"mode": "active-backup", "miimon": 100, "fail_over_mac": "active"}),
            1400,
        ),
        (
            json!({"mode": "balance-xor", "xmitHashPolicy": "layer3+4", "allSlavesActive": 1}),
            json!({"mode": "balance-xor", "xmit_hash_policy": "layer3+4", "all_slaves_active": 1}),
            1500,
        ),
        (
            json!({"mode": "balance-tlb", "tlbDynamicLb": 0}),
            json!({"mode": "balance-tlb", "tlb_dynamic_lb": 0}),
            1500,
        ),
    ];
    for (i, (options, want, mtu)) in cases.iter().enumerate() {
        let pod = Netns::create_unique("plexus-bond-opts").unwrap();
        let name = pod.name().unwrap().to_owned();
        // The links come from the host (linksInContainer false): the bond takes them into the pod.
        let (a, b) = (format!("pxbh{i}a"), format!("pxbh{i}b"));
        veth_pair(None, &a, &format!("{a}p"));
        veth_pair(None, &b, &format!("{b}p"));
        let mut config = json!({"cniVersion": "1.0.0", "name": "bond-net", "type": "bond",
                                "linksInContainer": false, "links": [{"name": a}, {"name": b}]});
        for (k, v) in options.as_object().unwrap() {
            config[k] = v.clone();
        }
        let kernel = Node::real(SysfsRoot::default()).session(Some(pod.path()));
        let cid = format!("bond-opts-{i}");
        let call = |command: Command| bond(command, &cid, &pod, &config, &kernel);
        call(Command::Add).unwrap();
        let made = ip_link(&name, "bond0");
        let data = &made["linkinfo"]["info_data"];
        for (key, value) in want.as_object().unwrap() {
            assert_eq!(&data[key], value, "{key} of {options}: {data}");
        }
        assert_eq!(made["mtu"], *mtu, "{made}");
        for slave in [&a, &b] {
            assert_eq!(ip_link(&name, slave)["master"], "bond0");
        }
        call(Command::Del).unwrap();
        call(Command::Del).unwrap();
        // The links are back on the host, not enslaved.
        for link in [&a, &b] {
            let out =
                std::process::Command::new("ip").args(["-d", "-j", "link", "show", link]).output().unwrap();
            assert!(out.status.success(), "{link} is back on the host");
            let host: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(host[0].get("master").is_none(), "{}", host[0]);
            assert!(std::process::Command::new("ip").args(["link", "del", link]).status().unwrap().success());
        }
        pod.delete().unwrap();
        eprintln!("lab: bond {options}: {want} and MTU {mtu} read back; links home after DEL, twice");
    }
}

#[test]
#[cfg_attr(
    not(plexus_kernel_bonding),
    ignore = "this kernel has no bonding driver: runs in the kernel lab (hack/lab-tests.sh)"
)]
fn the_plexus_binary_is_the_bond_plugin_by_its_name() {
    let dir = plexus_sim::scratch("bond-bin").unwrap();
    let plugin = dir.path().join("bond");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_plexus-standalone"), &plugin).unwrap();
    let pod = Netns::create_unique("plexus-bond-bin").unwrap();
    let name = pod.name().unwrap().to_owned();
    veth_pair(Some(&name), "net1", "peer1");
    veth_pair(Some(&name), "net2", "peer2");
    let config = json!({"cniVersion": "1.0.0", "name": "bond-net", "type": "bond", "mode": "active-backup",
                        "miimon": "100", "linksInContainer": true, "links": [{"name": "net1"}, {"name": "net2"}]});
    let run = |command: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(&plugin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "bond-bin")
            .env("CNI_NETNS", pod.path())
            .env("CNI_IFNAME", "bond0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(config.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run("ADD");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"bond0\""), "{out}");
    assert_eq!(ip_link(&name, "bond0")["linkinfo"]["info_data"]["mode"], "active-backup");
    assert_eq!(run("DEL").0, Some(0));
    assert_eq!(run("DEL").0, Some(0));
    let out = std::process::Command::new("ip").args(["-n", &name, "link", "show", "bond0"]).output().unwrap();
    assert!(!out.status.success(), "the bond is gone");
    pod.delete().unwrap();
}
