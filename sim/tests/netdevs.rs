//! The simulated node's real links (root): a bridge per PF, a veth per VF netdev with its
//! representor enslaved to the bridge, all inside the node's own namespace, all gone after
//! destroy. Checked with iproute2, independently of our netlink code.
#![allow(clippy::unwrap_used)] // helpers of a test binary: a failed unwrap fails the test

use plexus_hw::{SysfsRoot, discover};
use plexus_sim::{SimNode, SimSpec};
use std::collections::HashMap;

/// `ip -j -n <ns> link show` as name -> (mac, master, operstate-up flag).
fn links(netns: &str) -> HashMap<String, (String, Option<String>, bool)> {
    let links = plexus_sim::ip::json(Some(netns), &["link", "show"]);
    links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let name = l["ifname"].as_str().unwrap().to_owned();
            let mac = l["address"].as_str().unwrap_or_default().to_owned();
            let master = l["master"].as_str().map(str::to_owned);
            let up = l["flags"].as_array().unwrap().iter().any(|f| f == "UP");
            (name, (mac, master, up))
        })
        .collect()
}

#[tokio::test]
async fn real_links_stand_in_for_vf_netdevs_and_are_torn_down() {
    let scratch = plexus_sim::scratch("sim-links").unwrap();
    let spec = SimSpec { pfs: 2, numa_nodes: 2, vfs_per_pf: 3, vfio_vfs_per_pf: 1, cpus_per_node: 2 };
    let mut node = SimNode::build(scratch.path().join("sys"), &spec).unwrap();
    let netns = format!("plexus-simtest-{}", std::process::id());
    node.create_netdevs(&netns).await.unwrap();
    assert_eq!(node.netns_name(), Some(netns.as_str()));

    let found = discover(&SysfsRoot::new(node.root())).unwrap();
    let links = links(&netns);
    // lo, 2 bridges, 2 x 2 veth pairs: the vfio-bound VFs have no netdev and no link.
    assert_eq!(links.len(), 1 + 2 + 2 * 2 * 2, "{links:?}");
    for pf in &found.pfs {
        let pf_name = pf.function.netdev_name().unwrap();
        let (_, _, up) = &links[pf_name];
        assert!(up, "PF bridge {pf_name} is up");
        for vf in &pf.vfs {
            let Some(vf_name) = vf.function.netdev_name() else {
                assert!(vf.is_dpdk());
                continue;
            };
            let sim_vf =
                node.pfs().iter().flat_map(|p| &p.vfs).find(|v| v.address == vf.function.address).unwrap();
            let (mac, master, up) = &links[vf_name];
            assert_eq!(mac, &sim_vf.mac.to_string(), "the link's MAC is the one sysfs shows");
            assert_eq!(master, &None);
            assert!(!up, "a VF netdev starts down, as a real one does");
            let representor = sim_vf.representor.as_ref().unwrap();
            let (_, master, up) = &links[representor.as_str()];
            assert_eq!(master.as_deref(), Some(pf_name));
            assert!(up);
        }
    }
    // Nothing was made in the namespace the test runs in.
    assert!(plexus_sim::ip::link(None, "ens1f0v0").is_none());

    node.destroy().unwrap();
    assert!(!std::path::Path::new("/run/netns").join(&netns).exists());
    assert!(!scratch.path().join("sys").exists());
}

#[tokio::test]
async fn dropping_a_node_removes_its_namespace() {
    let scratch = plexus_sim::scratch("sim-drop").unwrap();
    let netns = format!("plexus-simdrop-{}", std::process::id());
    {
        let mut node = SimNode::build(
            scratch.path().join("sys"),
            &SimSpec { pfs: 1, vfs_per_pf: 1, vfio_vfs_per_pf: 0, ..SimSpec::default() },
        )
        .unwrap();
        node.create_netdevs(&netns).await.unwrap();
        assert!(std::path::Path::new("/run/netns").join(&netns).exists());
    }
    assert!(!std::path::Path::new("/run/netns").join(&netns).exists());
}
