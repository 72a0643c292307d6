//! The simulated node's VF store: the state the PF side would keep, shared through the node's
//! root, refusing what the kernel refuses.
#![allow(clippy::unwrap_used)]

use plexus_hw::vf::{VfChange, VfError, VfLinkMode, VfState, VlanProto};
use plexus_hw::{IfName, VfIndex};
use plexus_sim::{SimNode, SimSpec, VfStore};

fn pf(name: &str) -> IfName {
    name.parse().unwrap()
}

#[test]
fn vf_settings_persist_across_instances_and_reset_with_the_vf_count() {
    let scratch = plexus_sim::scratch("sim-vfs").unwrap();
    let mut node = SimNode::build(
        scratch.path().join("sys"),
        &SimSpec { pfs: 2, vfs_per_pf: 4, vfio_vfs_per_pf: 1, ..SimSpec::default() },
    )
    .unwrap();
    let control = VfStore::new(node.root());
    let states = control.vfs(&pf("ens1f0")).unwrap();
    assert_eq!(states.len(), 4);
    assert!(states.iter().enumerate().all(|(i, s)| *s == VfState::pristine(VfIndex(i as u32))));

    let change = VfChange {
        mac: Some("02:00:00:aa:bb:cc".parse().unwrap()),
        vlan: Some((100, 3, VlanProto::Dot1Ad)),
        spoofchk: Some(false),
        trust: Some(true),
        link_state: Some(VfLinkMode::Enable),
        rate: Some((100, 1000)),
    };
    control.set(&pf("ens1f0"), VfIndex(2), &change).unwrap();
    // Another process (a second instance) sees it; other VFs and PFs are untouched.
    let other = VfStore::new(node.root());
    let vf2 = other.vf(&pf("ens1f0"), VfIndex(2)).unwrap();
    assert_eq!(vf2, VfState::pristine(VfIndex(2)).with(&change));
    assert_eq!(other.vf(&pf("ens1f0"), VfIndex(1)).unwrap(), VfState::pristine(VfIndex(1)));
    assert_eq!(other.vf(&pf("ens1f1"), VfIndex(2)).unwrap(), VfState::pristine(VfIndex(2)));

    // Restoring the recorded state puts everything back.
    other.set(&pf("ens1f0"), VfIndex(2), &VfState::pristine(VfIndex(2)).as_change()).unwrap();
    assert_eq!(control.vf(&pf("ens1f0"), VfIndex(2)).unwrap(), VfState::pristine(VfIndex(2)));

    // What the kernel refuses.
    assert!(matches!(control.set(&pf("ens1f0"), VfIndex(4), &change), Err(VfError::NoSuchVf { .. })));
    assert!(matches!(control.vfs(&pf("ens9f9")), Err(VfError::NoSuchPf(_))));
    let bad = VfChange { vlan: Some((0, 2, VlanProto::Dot1Q)), ..Default::default() };
    let err = control.set(&pf("ens1f0"), VfIndex(0), &bad).unwrap_err().to_string();
    assert!(err.contains("ens1f0 VF 0") && err.contains("needs a vlan"), "{err}");

    // New VFs start pristine, as the kernel makes them anew.
    control.set(&pf("ens1f1"), VfIndex(0), &change).unwrap();
    node.set_num_vfs(1, 2).unwrap();
    let states = control.vfs(&pf("ens1f1")).unwrap();
    assert_eq!(states, [VfState::pristine(VfIndex(0)), VfState::pristine(VfIndex(1))]);
}

#[test]
fn concurrent_writers_lose_nothing() {
    let scratch = plexus_sim::scratch("sim-vfs-lock").unwrap();
    let node = SimNode::build(
        scratch.path().join("sys"),
        &SimSpec { pfs: 1, vfs_per_pf: 16, vfio_vfs_per_pf: 0, ..SimSpec::default() },
    )
    .unwrap();
    let root = node.root().to_owned();
    std::thread::scope(|s| {
        for i in 0..16u32 {
            let root = root.clone();
            s.spawn(move || {
                let change = VfChange {
                    vlan: Some((u16::try_from(i).unwrap() + 10, 0, VlanProto::Dot1Q)),
                    ..Default::default()
                };
                VfStore::new(root).set(&pf("ens1f0"), VfIndex(i), &change).unwrap();
            });
        }
    });
    let vlans: Vec<u16> = VfStore::new(&root).vfs(&pf("ens1f0")).unwrap().iter().map(|s| s.vlan).collect();
    assert_eq!(vlans, (10..26).collect::<Vec<_>>());
}
