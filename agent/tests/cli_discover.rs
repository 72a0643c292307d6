//! `plexus-agent discover` and `sim up|down`, run as the binary they are.
#![allow(clippy::unwrap_used)] // helpers of a test binary: a failed unwrap fails the test

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use plexus_sim::{ScratchNode, SimSpec};
use serde_json::{Value, json};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plexus-agent")).args(args).env_remove("PLEXUS_LOG").output().unwrap()
}

fn discover(root: &Path, format: &str) -> Output {
    agent(&["discover", "--sysfs-root", root.to_str().unwrap(), "--output", format])
}

#[test]
fn json_has_exactly_the_documented_shape() {
    let spec = SimSpec { pfs: 2, numa_nodes: 2, vfs_per_pf: 2, vfio_vfs_per_pf: 1, cpus_per_node: 4 };
    let node = ScratchNode::tree("cli-json", &spec).unwrap();
    // One PF with unknown NUMA, and no link type: nulls, not missing keys.
    let pf1 = node.pfs()[1].address;
    fs::write(node.device_dir(pf1).join("numa_node"), "-1\n").unwrap();
    fs::remove_file(node.device_dir(pf1).join("net/ens1f1/type")).unwrap();

    let out = discover(node.root(), "json");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    let vf = |addr: &str, index: u32, driver: &str, netdev: Option<&str>, numa: Option<u32>, group: &str| {
        json!({"pci_address": addr, "index": index, "vendor": "8086", "device": "154c", "driver": driver,
               "netdev": netdev, "numa_node": numa, "iommu_group": group})
    };
    let expected = json!({
        "numa_nodes": [{"id": 0, "cpus": "0-3"}, {"id": 1, "cpus": "4-7"}],
        "physical_functions": [
            {"pci_address": "0000:20:00.0", "netdev": "ens1f0", "vendor": "8086", "device": "158b",
             "vendor_name": "Intel Corporation", "device_name": "Ethernet Controller XXV710 for 25GbE SFP28",
             "driver": "i40e", "numa_node": 0, "total_vfs": 64, "num_vfs": 2, "link_type": "ether",
             "vfs": [vf("0000:20:02.0", 0, "iavf", Some("ens1f0v0"), Some(0), "41"),
                     vf("0000:20:02.1", 1, "vfio-pci", None, Some(0), "42")]},
            {"pci_address": "0000:20:00.1", "netdev": "ens1f1", "vendor": "8086", "device": "158b",
             "vendor_name": "Intel Corporation", "device_name": "Ethernet Controller XXV710 for 25GbE SFP28",
             "driver": "i40e", "numa_node": null, "total_vfs": 64, "num_vfs": 2, "link_type": null,
             "vfs": [vf("0000:20:03.0", 0, "iavf", Some("ens1f1v0"), Some(1), "44"),
                     vf("0000:20:03.1", 1, "vfio-pci", None, Some(1), "45")]}
        ]
    });
    assert_eq!(value, expected);
    // Key order is part of the shape other tools read.
    let text = String::from_utf8(out.stdout).unwrap();
    let order = [
        "\"pci_address\"",
        "\"netdev\"",
        "\"vendor\"",
        "\"device\"",
        "\"vendor_name\"",
        "\"device_name\"",
        "\"driver\"",
        "\"numa_node\"",
        "\"total_vfs\"",
        "\"num_vfs\"",
        "\"link_type\"",
        "\"vfs\"",
    ];
    let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "PF keys out of order: {positions:?}");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn table_lists_pfs_and_indented_vfs() {
    let node = ScratchNode::tree("cli-table", &SimSpec::default()).unwrap();
    let out = discover(node.root(), "table");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["NUMA", "NODE", "CPUS", "DISTANCES"]);
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["0", "0-3", "10", "21"]);
    let pf = lines.iter().find(|l| l.starts_with("0000:30:00.1")).unwrap();
    assert_eq!(
        pf.split_whitespace().take(7).collect::<Vec<_>>(),
        ["0000:30:00.1", "ens2f1", "i40e", "1", "8/64", "ether", "up"]
    );
    assert!(pf.ends_with("Intel Corporation Ethernet Controller XXV710 for 25GbE SFP28"));
    let vf = lines.iter().find(|l| l.contains("0000:30:03.7")).unwrap();
    assert!(vf.starts_with("    "), "VFs are indented under their PF: {vf:?}");
    assert_eq!(vf.split_whitespace().collect::<Vec<_>>(), ["7", "0000:30:03.7", "vfio-pci", "-", "1", "75"]);
    assert_eq!(lines.iter().filter(|l| l.starts_with("PF ")).count(), 4);
    // Default output is the table.
    let default = agent(&["discover", "--sysfs-root", node.root().to_str().unwrap()]);
    assert_eq!(String::from_utf8(default.stdout).unwrap(), text);
}

#[test]
fn problems_go_to_stderr_and_stdout_stays_clean() {
    let node = ScratchNode::tree("cli-problem", &SimSpec::default()).unwrap();
    let vf = node.pfs()[0].vfs[0].address;
    // Discovery reads the class from the device's uevent, as the kernel writes it.
    let uevent = node.device_dir(vf).join("uevent");
    let text = fs::read_to_string(&uevent).unwrap().replace("PCI_CLASS=20000", "PCI_CLASS=network");
    fs::write(&uevent, text).unwrap();
    let out = discover(node.root(), "json");
    assert!(out.status.success());
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["physical_functions"][0]["vfs"].as_array().unwrap().len(), 7);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("device {vf} skipped")) && stderr.contains("PCI_CLASS"), "{stderr}");
}

#[test]
fn a_missing_sysfs_root_is_a_one_line_error() {
    let out = agent(&["discover", "--sysfs-root", "/nonexistent/plexus-sysfs"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/plexus-sysfs"), "{stderr}");
}

#[test]
fn sim_up_and_down_with_real_links() {
    let scratch = plexus_sim::scratch("cli-sim").unwrap();
    let root = scratch.path().join("sys");
    let netns = format!("plexus-clisim-{}", std::process::id());
    let root_arg = root.to_str().unwrap();
    let out = agent(&[
        "sim", "up", "--root", root_arg, "--pfs", "2", "--vfs", "3", "--vfio", "1", "--netns", &netns,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout).unwrap().contains(&netns));
    let links = Command::new("ip").args(["-n", &netns, "-br", "link"]).output().unwrap();
    let links = String::from_utf8(links.stdout).unwrap();
    assert!(links.contains("ens1f1v1@ens1f1r1"), "{links}");

    // A second `up` on the same root is refused and leaves the first node alone.
    let again = agent(&["sim", "up", "--root", root_arg]);
    assert!(!again.status.success());
    assert!(root.join("plexus-sim.json").exists());

    let out = agent(&["sim", "down", "--root", root_arg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!root.exists());
    assert!(!Path::new("/run/netns").join(&netns).exists());
    // `down` refuses a directory that holds no simulated node, and removes nothing.
    let out = agent(&["sim", "down", "--root", scratch.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(scratch.path().exists());
}

#[test]
fn a_failed_sim_up_leaves_nothing_behind() {
    let scratch = plexus_sim::scratch("cli-simfail").unwrap();
    let root = scratch.path().join("sys");
    // The namespace name is invalid, so making links fails after the tree was written.
    let out = agent(&["sim", "up", "--root", root.to_str().unwrap(), "--netns", "bad/name"]);
    assert!(!out.status.success());
    assert!(!root.exists(), "the tree is removed when the links fail");
    let out = agent(&["sim", "up", "--root", root.to_str().unwrap(), "--vfs", "500"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && stderr.contains("vfs_per_pf = 500"), "{stderr}");
}
