//! Discovery against fake sysfs trees written by the simulator, then changed or broken.
#![allow(clippy::unwrap_used)] // helpers of a test binary: a failed unwrap fails the test

use std::fs;
use std::os::unix::fs::symlink;

use plexus_hw::{LinkType, NumaNode, OperState, PciAddress, SysfsError, SysfsRoot, VfIndex, discover};
use plexus_sim::{ScratchNode, SimSpec};

fn sim(spec: SimSpec) -> ScratchNode {
    ScratchNode::tree("disc", &spec).unwrap()
}

fn addr(text: &str) -> PciAddress {
    text.parse().unwrap()
}

/// Sets `key`'s line in the device's `uevent` (discovery's source of its IDs, class and
/// driver) to `value`, or removes it.
fn set_uevent(dir: &std::path::Path, key: &str, value: Option<&str>) {
    let path = dir.join("uevent");
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> =
        text.lines().filter(|l| !l.starts_with(&format!("{key}="))).map(str::to_owned).collect();
    if let Some(value) = value {
        lines.push(format!("{key}={value}"));
    }
    fs::write(&path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn discovers_every_pf_and_vf_of_the_simulated_node() {
    let spec = SimSpec { pfs: 4, numa_nodes: 2, vfs_per_pf: 8, vfio_vfs_per_pf: 2, cpus_per_node: 4 };
    let node = sim(spec);
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    assert!(found.problems.is_empty(), "{:?}", found.problems);

    assert_eq!(found.numa.nodes.len(), 2);
    assert_eq!(found.numa.nodes[1].cpus.as_str(), "4-7");
    assert_eq!(found.numa.distance(NumaNode(0), NumaNode(1)), Some(21));

    let pfs: Vec<String> = found.pfs.iter().map(|pf| pf.function.address.to_string()).collect();
    assert_eq!(pfs, ["0000:20:00.0", "0000:20:00.1", "0000:30:00.0", "0000:30:00.1"]);
    let numa: Vec<Option<NumaNode>> = found.pfs.iter().map(|pf| pf.function.numa_node).collect();
    assert_eq!(numa, [Some(NumaNode(0)), Some(NumaNode(0)), Some(NumaNode(1)), Some(NumaNode(1))]);

    let pf = &found.pfs[0];
    assert_eq!(pf.function.vendor.to_string(), "8086");
    assert_eq!(pf.function.device.to_string(), "158b");
    assert_eq!(pf.function.class.base(), 0x02);
    assert_eq!(pf.function.driver.as_deref(), Some("i40e"));
    assert_eq!((pf.total_vfs, pf.num_vfs), (64, 8));
    assert_eq!(pf.vendor_name(), Some("Intel Corporation"));
    assert_eq!(pf.device_name(), Some("Ethernet Controller XXV710 for 25GbE SFP28"));
    let netdev = pf.function.netdev.as_ref().unwrap();
    assert_eq!(netdev.name.as_str(), "ens1f0");
    assert_eq!(netdev.link_type, Some(LinkType::Ether));
    assert_eq!(netdev.operstate, Some(OperState::Up));
    assert_eq!(netdev.speed_mbps, Some(25000));

    assert_eq!(pf.vfs.len(), 8);
    let vf = &pf.vfs[0];
    assert_eq!(vf.function.address, addr("0000:20:02.0"));
    assert_eq!(vf.index, VfIndex(0));
    assert_eq!(vf.pf, pf.function.address);
    assert_eq!(vf.function.driver.as_deref(), Some("iavf"));
    assert_eq!(vf.function.netdev_name(), Some("ens1f0v0"));
    assert!(vf.function.iommu_group.is_some());
    assert_eq!(vf.function.netdev.as_ref().unwrap().speed_mbps, None, "a down VF reports no speed");
    assert!(!vf.is_dpdk());

    // The second port's VFs sit after the first port's on the same bus.
    assert_eq!(found.pfs[1].vfs[0].function.address, addr("0000:20:03.0"));
    assert_eq!(found.vfs().count(), 32);
    let (owner, _) = found.vf(addr("0000:30:03.1")).unwrap();
    assert_eq!(owner.function.address, addr("0000:30:00.1"));
}

#[test]
fn vfio_bound_vfs_have_no_netdev_and_are_dpdk() {
    let node = sim(SimSpec { pfs: 1, vfs_per_pf: 4, vfio_vfs_per_pf: 2, ..SimSpec::default() });
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    let vfs = &found.pfs[0].vfs;
    let shape: Vec<(Option<&str>, Option<&str>, bool)> = vfs
        .iter()
        .map(|vf| (vf.function.driver.as_deref(), vf.function.netdev_name(), vf.is_dpdk()))
        .collect();
    assert_eq!(
        shape,
        [
            (Some("iavf"), Some("ens1f0v0"), false),
            (Some("iavf"), Some("ens1f0v1"), false),
            (Some("vfio-pci"), None, true),
            (Some("vfio-pci"), None, true),
        ]
    );
}

#[test]
fn virtfn_links_are_ordered_numerically() {
    let node = sim(SimSpec { pfs: 1, vfs_per_pf: 12, vfio_vfs_per_pf: 0, ..SimSpec::default() });
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    let indexes: Vec<u32> = found.pfs[0].vfs.iter().map(|vf| vf.index.0).collect();
    assert_eq!(indexes, (0..12).collect::<Vec<_>>());
    assert_eq!(found.pfs[0].vfs[10].function.netdev_name(), Some("ens1f0v10"));
    assert_eq!(found.pfs[0].vfs[10].function.address, addr("0000:20:03.2"));
}

#[test]
fn unknown_numa_node_is_none() {
    let node = sim(SimSpec { pfs: 1, vfs_per_pf: 2, vfio_vfs_per_pf: 0, ..SimSpec::default() });
    let pf = &node.pfs()[0];
    fs::write(node.device_dir(pf.address).join("numa_node"), "-1\n").unwrap();
    // A kernel without NUMA has no numa_node file at all: also unknown.
    fs::remove_file(node.device_dir(pf.vfs[1].address).join("numa_node")).unwrap();
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(found.pfs[0].function.numa_node, None);
    assert_eq!(found.pfs[0].vfs[0].function.numa_node, Some(NumaNode(0)));
    assert_eq!(found.pfs[0].vfs[1].function.numa_node, None);
}

#[test]
fn unbound_vf_has_no_driver() {
    let node = sim(SimSpec { pfs: 1, vfs_per_pf: 2, vfio_vfs_per_pf: 0, ..SimSpec::default() });
    let vf = &node.pfs()[0].vfs[1];
    let dir = node.device_dir(vf.address);
    fs::remove_file(dir.join("driver")).unwrap();
    set_uevent(&dir, "DRIVER", None);
    fs::remove_dir_all(dir.join("net")).unwrap();
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    let vf = &found.pfs[0].vfs[1];
    assert_eq!(vf.function.driver, None);
    assert_eq!(vf.function.netdev, None);
    assert!(!vf.is_dpdk(), "no driver is not DPDK mode");
}

#[test]
fn pf_with_sriov_disabled_is_listed_with_no_vfs() {
    let node = sim(SimSpec { pfs: 2, vfs_per_pf: 0, vfio_vfs_per_pf: 0, ..SimSpec::default() });
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    assert_eq!(found.pfs.len(), 2);
    assert!(found.pfs.iter().all(|pf| pf.vfs.is_empty() && pf.num_vfs == 0 && pf.total_vfs == 64));
}

#[test]
fn devices_without_sriov_are_not_listed() {
    let node = sim(SimSpec { pfs: 1, vfs_per_pf: 1, vfio_vfs_per_pf: 0, ..SimSpec::default() });
    // A host bridge: a PCI device with no sriov_totalvfs.
    let dir = node.root().join("devices/pci0000:00/0000:00:00.0");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("vendor"), "0x8086\n").unwrap();
    fs::write(dir.join("device"), "0x2020\n").unwrap();
    fs::write(dir.join("class"), "0x060000\n").unwrap();
    symlink("../../../devices/pci0000:00/0000:00:00.0", node.root().join("bus/pci/devices/0000:00:00.0"))
        .unwrap();
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(found.pfs.len(), 1);
    assert_eq!(found.pfs[0].function.address, addr("0000:20:00.0"));
}

#[test]
fn a_broken_vf_is_reported_and_skipped_the_rest_survive() {
    let node = sim(SimSpec { pfs: 2, vfs_per_pf: 3, vfio_vfs_per_pf: 0, ..SimSpec::default() });
    let broken = node.pfs()[0].vfs[1].address;
    set_uevent(&node.device_dir(broken), "PCI_ID", Some("intel:154C"));
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    assert_eq!(found.pfs.len(), 2);
    let indexes: Vec<u32> = found.pfs[0].vfs.iter().map(|vf| vf.index.0).collect();
    assert_eq!(indexes, [0, 2]);
    assert_eq!(found.pfs[1].vfs.len(), 3);
    assert_eq!(found.problems.len(), 1);
    let problem = &found.problems[0];
    assert_eq!(problem.device, Some(broken));
    assert!(matches!(problem.error, SysfsError::Malformed { .. }));
    assert!(problem.error.path().ends_with("uevent"));
    let text = problem.to_string();
    assert!(text.contains(&broken.to_string()) && text.contains("\"PCI_ID=intel:154C\""), "{text}");
}

#[test]
fn without_a_uevent_the_ids_class_and_driver_come_from_their_own_files() {
    let node = sim(SimSpec { pfs: 1, vfs_per_pf: 3, vfio_vfs_per_pf: 1, ..SimSpec::default() });
    let vfs: Vec<PciAddress> = node.pfs()[0].vfs.iter().map(|vf| vf.address).collect();
    for vf in &vfs {
        fs::remove_file(node.device_dir(*vf).join("uevent")).unwrap();
    }
    // One with the IDs left out of its uevent, as a tree written by hand may have it.
    fs::write(node.device_dir(vfs[0]).join("uevent"), "PCI_SLOT_NAME=x\n").unwrap();
    fs::write(node.device_dir(vfs[1]).join("vendor"), "intel\n").unwrap();
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    let read: Vec<(PciAddress, String, Option<String>)> = found.pfs[0]
        .vfs
        .iter()
        .map(|vf| (vf.function.address, vf.function.device.to_string(), vf.function.driver.clone()))
        .collect();
    assert_eq!(
        read,
        [(vfs[0], "154c".into(), Some("iavf".into())), (vfs[2], "154c".into(), Some("vfio-pci".into()))]
    );
    assert_eq!(found.problems.len(), 1);
    assert!(found.problems[0].error.path().ends_with("vendor"), "{}", found.problems[0]);
}

#[test]
fn a_broken_pf_is_reported_and_skipped() {
    let node = sim(SimSpec { pfs: 2, vfs_per_pf: 2, vfio_vfs_per_pf: 0, ..SimSpec::default() });
    let broken = node.pfs()[1].address;
    fs::remove_file(node.device_dir(broken).join("sriov_numvfs")).unwrap();
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    assert_eq!(found.pfs.len(), 1);
    assert_eq!(found.problems.len(), 1);
    assert_eq!(found.problems[0].device, Some(broken));
    assert!(matches!(found.problems[0].error, SysfsError::Missing { .. }));
    assert!(found.problems[0].to_string().contains("sriov_numvfs: missing"));
}

#[test]
fn a_vf_whose_physfn_points_elsewhere_is_refused() {
    let node = sim(SimSpec { pfs: 2, vfs_per_pf: 1, vfio_vfs_per_pf: 0, ..SimSpec::default() });
    let vf_dir = node.device_dir(node.pfs()[0].vfs[0].address);
    fs::remove_file(vf_dir.join("physfn")).unwrap();
    symlink(format!("../{}", node.pfs()[1].address), vf_dir.join("physfn")).unwrap();
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    assert!(found.pfs[0].vfs.is_empty());
    assert!(found.problems[0].to_string().contains("a link back to the PF"), "{}", found.problems[0]);
}

#[test]
fn link_type_and_speed_quirks() {
    let node = sim(SimSpec { pfs: 2, vfs_per_pf: 0, vfio_vfs_per_pf: 0, ..SimSpec::default() });
    let net = node.device_dir(node.pfs()[0].address).join("net/ens1f0");
    fs::write(net.join("type"), "32\n").unwrap();
    fs::write(net.join("speed"), "-1\n").unwrap();
    let net1 = node.device_dir(node.pfs()[1].address).join("net/ens1f1");
    fs::remove_file(net1.join("type")).unwrap();
    fs::write(net1.join("speed"), "4294967295\n").unwrap();
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    let first = found.pfs[0].function.netdev.as_ref().unwrap();
    assert_eq!(first.link_type, Some(LinkType::Infiniband));
    assert_eq!(first.speed_mbps, None);
    let second = found.pfs[1].function.netdev.as_ref().unwrap();
    assert_eq!(second.link_type, None);
    assert_eq!(second.speed_mbps, None);
}

#[test]
fn numa_cpulist_broken_is_a_problem_not_a_failure() {
    let node = sim(SimSpec::default());
    fs::write(node.root().join("devices/system/node/node1/cpulist"), "4-x\n").unwrap();
    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    assert_eq!(found.numa.nodes.len(), 1);
    assert_eq!(found.pfs.len(), 4);
    assert_eq!(found.problems.len(), 1);
    assert_eq!(found.problems[0].device, None);
}

#[test]
fn a_missing_root_or_bus_directory_fails_naming_it() {
    let scratch = plexus_sim::scratch("disc-missing").unwrap();
    let err = discover(&SysfsRoot::new(scratch.path().join("nope"))).unwrap_err();
    assert!(matches!(err, SysfsError::Root { .. }));
    assert!(err.to_string().contains("nope"), "{err}");
    let err = discover(&SysfsRoot::new(scratch.path())).unwrap_err();
    assert!(err.to_string().contains("bus/pci/devices"), "{err}");
}

#[test]
fn broken_devices_on_a_node_read_in_parallel_keep_the_rest_in_place() {
    // Large enough that the per-function reads are split over threads (on a multi-CPU machine).
    let node = sim(SimSpec { pfs: 4, numa_nodes: 2, vfs_per_pf: 64, vfio_vfs_per_pf: 8, cpus_per_node: 2 });
    let broken_pf = node.pfs()[1].address;
    let broken_vf = node.pfs()[2].vfs[5].address;
    fs::write(node.device_dir(broken_pf).join("sriov_numvfs"), "many\n").unwrap();
    set_uevent(&node.device_dir(broken_vf), "PCI_ID", Some("8086:ZZ"));
    let found = discover(&SysfsRoot::new(node.root())).unwrap();

    let pfs: Vec<PciAddress> = found.pfs.iter().map(|pf| pf.function.address).collect();
    assert_eq!(pfs, [node.pfs()[0].address, node.pfs()[2].address, node.pfs()[3].address]);
    for (pf, sim_pf) in found.pfs.iter().zip([&node.pfs()[0], &node.pfs()[2], &node.pfs()[3]]) {
        let expected: Vec<PciAddress> =
            sim_pf.vfs.iter().map(|vf| vf.address).filter(|a| *a != broken_vf).collect();
        let got: Vec<PciAddress> = pf.vfs.iter().map(|vf| vf.function.address).collect();
        assert_eq!(got, expected);
        assert!(pf.vfs.iter().all(|vf| vf.pf == pf.function.address));
        assert_eq!(pf.function.netdev_name(), Some(sim_pf.netdev.as_str()));
    }
    let mut problems: Vec<Option<PciAddress>> = found.problems.iter().map(|p| p.device).collect();
    problems.sort();
    assert_eq!(problems, [Some(broken_pf), Some(broken_vf)]);
}

#[test]
fn fingerprint_changes_with_vf_count_and_pf_link_state_only() {
    use plexus_hw::discover::Fingerprint;
    let mut node =
        sim(SimSpec { pfs: 2, numa_nodes: 1, vfs_per_pf: 4, vfio_vfs_per_pf: 1, cpus_per_node: 2 });
    let root = SysfsRoot::new(node.root());
    let found = discover(&root).unwrap();
    let first = Fingerprint::read(&root, &found);
    assert_eq!(Fingerprint::read(&root, &found), first, "nothing changed");

    node.set_pf_operstate(1, OperState::Down).unwrap();
    let down = Fingerprint::read(&root, &found);
    assert_ne!(down, first);
    assert_eq!(
        discover(&root).unwrap().pfs[1].function.netdev.as_ref().unwrap().operstate,
        Some(OperState::Down)
    );

    node.set_num_vfs(0, 2).unwrap();
    assert_ne!(Fingerprint::read(&root, &found), down);
    let found = discover(&root).unwrap();
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(found.pfs[0].num_vfs, 2);
    let vfs: Vec<Option<&str>> = found.pfs[0].vfs.iter().map(|vf| vf.function.netdev_name()).collect();
    assert_eq!(vfs, [Some("ens1f0v0"), Some("ens1f0v1")]);
    node.set_num_vfs(0, 4).unwrap();
    let found = discover(&root).unwrap();
    assert_eq!(found.pfs[0].vfs.len(), 4);
    assert!(found.pfs[0].vfs[3].is_dpdk(), "the VF layout is the one built");
    assert!(node.set_num_vfs(0, 5).is_err());
}

#[test]
fn locate_vf_reads_one_vf_without_a_discovery() {
    let spec = SimSpec { pfs: 2, numa_nodes: 1, vfs_per_pf: 10, vfio_vfs_per_pf: 2, cpus_per_node: 2 };
    let node = sim(spec);
    let root = SysfsRoot::new(node.root());
    let found = discover(&root).unwrap();
    for (pf, vf) in found.vfs() {
        let located = plexus_hw::discover::locate_vf(&root, vf.function.address).unwrap().unwrap();
        assert_eq!(located.pf, pf.function.address);
        assert_eq!(located.pf_netdev.as_ref().map(|n| n.as_str()), pf.function.netdev_name());
        assert_eq!(located.index, vf.index, "virtfn10 is not virtfn1");
        assert_eq!(located.driver, vf.function.driver);
        assert_eq!(located.netdev.as_ref().map(|n| n.as_str()), vf.function.netdev_name());
        assert_eq!(located.is_dpdk(), vf.is_dpdk());
    }
    assert_eq!(plexus_hw::discover::locate_vf(&root, addr("0000:99:00.0")).unwrap(), None);
    let err = plexus_hw::discover::locate_vf(&root, addr("0000:20:00.0")).unwrap_err();
    assert!(err.to_string().contains("0000:20:00.0/physfn"), "a PF is not a VF: {err}");
}

#[test]
fn hostile_sysfs_files_are_problems_never_a_hang_or_an_abort() {
    let node = sim(SimSpec { pfs: 3, vfs_per_pf: 2, vfio_vfs_per_pf: 0, ..SimSpec::default() });
    let pfs: Vec<PciAddress> = node.pfs().iter().map(|pf| pf.address).collect();
    // A dangling bus/pci/devices link hides a PF and its VFs: reported as that device's.
    let link = node.root().join("bus/pci/devices").join(pfs[0].to_string());
    fs::remove_file(&link).unwrap();
    symlink("../../../devices/pci0000:00/gone", &link).unwrap();
    // A FIFO where an attribute should be would block a read forever.
    let uevent = node.device_dir(pfs[1]).join("uevent");
    fs::remove_file(&uevent).unwrap();
    nix::unistd::mkfifo(&uevent, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A CPU list that, expanded, would take 16 GiB.
    fs::write(node.root().join("devices/system/node/node0/cpulist"), "0-4294967295\n").unwrap();

    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    let texts: Vec<String> = found.problems.iter().map(ToString::to_string).collect();
    assert_eq!(found.pfs.iter().map(|pf| pf.function.address).collect::<Vec<_>>(), [pfs[2]], "{texts:?}");
    let about = |device: Option<PciAddress>, want: &str| {
        assert!(
            found.problems.iter().any(|p| p.device == device && p.to_string().contains(want)),
            "{device:?} {want:?} in {texts:?}"
        );
    };
    about(Some(pfs[0]), "which does not exist");
    about(Some(pfs[1]), "uevent: malformed value \"a FIFO\" (expected a regular file)");
    about(None, "cpulist");
}
