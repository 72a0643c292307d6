//! The simulated node's tree: what it refuses to build, what discovery finds in the largest
//! one, and loading and removing a node another process built.
#![allow(clippy::unwrap_used)]

use plexus_hw::{SysfsRoot, discover};
use plexus_sim::{SimNode, SimSpec};

#[test]
fn simulator_refuses_bad_specs_and_a_second_build() {
    let scratch = plexus_sim::scratch("sim-spec").unwrap();
    for (spec, field) in [
        (SimSpec { pfs: 0, ..SimSpec::default() }, "pfs"),
        (SimSpec { vfs_per_pf: 121, ..SimSpec::default() }, "vfs_per_pf"),
        (SimSpec { vfio_vfs_per_pf: 9, ..SimSpec::default() }, "vfio_vfs_per_pf"),
        (SimSpec { numa_nodes: 0, ..SimSpec::default() }, "numa_nodes"),
    ] {
        let err = SimNode::build(scratch.path().join("x"), &spec).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    let node = SimNode::build(scratch.path().join("sys"), &SimSpec::default()).unwrap();
    let err = SimNode::build(scratch.path().join("sys"), &SimSpec::default()).unwrap_err();
    assert!(err.to_string().contains("already holds"), "{err}");
    // The largest node lays out without collisions.
    let big = SimSpec {
        pfs: SimSpec::MAX_PFS,
        numa_nodes: 4,
        vfs_per_pf: SimSpec::MAX_VFS,
        vfio_vfs_per_pf: 8,
        cpus_per_node: 2,
    };
    let big_node = SimNode::build(scratch.path().join("big"), &big).unwrap();
    let found = discover(&SysfsRoot::new(big_node.root())).unwrap();
    assert!(found.problems.is_empty(), "{:?}", found.problems.first());
    assert_eq!(found.vfs().count(), (SimSpec::MAX_PFS * SimSpec::MAX_VFS) as usize);
    node.destroy().unwrap();
    assert!(!scratch.path().join("sys").exists());
}

#[test]
fn a_loaded_node_matches_the_built_one_and_destroy_removes_it() {
    let scratch = plexus_sim::scratch("sim-load").unwrap();
    let root = SimNode::build(scratch.path().join("sys"), &SimSpec::default()).unwrap().keep();
    let loaded = SimNode::load(&root).unwrap();
    assert_eq!(loaded.spec(), &SimSpec::default());
    assert_eq!(loaded.pfs().len(), 4);
    loaded.destroy().unwrap();
    assert!(!root.exists());
    let err = SimNode::load(&root).unwrap_err();
    assert!(err.to_string().contains("not a simulated node"), "{err}");
}

#[test]
fn the_simulators_link_names_are_known() {
    for name in ["ens1f0", "ens12f1", "ens1f0v3", "ens2f1r15"] {
        assert!(plexus_sim::node::names_a_link(name), "{name}");
    }
    for name in ["eth0", "ens", "ens1", "ens1f", "ens1f0x1", "ens1f0v", "ens1fav1", "lo"] {
        assert!(!plexus_sim::node::names_a_link(name), "{name}");
    }
}
