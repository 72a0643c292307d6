//! The bond logic through the [`PodLinks`] seam, on an in-memory namespace that behaves as
//! the kernel does where it matters (a port must be down to be enslaved; deleting a bond
//! frees its ports).
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;

use serde_json::json;

use super::*;

#[derive(Default)]
struct FakeLinks {
    pod: RefCell<Vec<LinkInfo>>,
    host: RefCell<Vec<LinkInfo>>,
    bonds: RefCell<Vec<(String, BondOptions)>>,
    log: RefCell<Vec<String>>,
    fail_on: Option<&'static str>,
}

fn link(index: u32, name: &str, mac: [u8; 6], mtu: u32) -> LinkInfo {
    LinkInfo {
        index,
        name: name.into(),
        mac: Some(MacAddr(mac)),
        mtu: Some(mtu),
        up: true,
        alt_names: Vec::new(),
        peer: None,
        peer_netnsid: None,
        controller: None,
    }
}

impl FakeLinks {
    fn with_vfs(mtus: [u32; 2], same_mac: bool) -> Self {
        let fake = Self::default();
        let second = if same_mac { [2, 0, 0, 0, 0, 1] } else { [2, 0, 0, 0, 0, 2] };
        fake.pod.borrow_mut().push(link(1, "lo", [0; 6], 65536));
        fake.pod.borrow_mut().push(link(4, "net1", [2, 0, 0, 0, 0, 1], mtus[0]));
        fake.pod.borrow_mut().push(link(7, "net2", second, mtus[1]));
        fake
    }

    fn step(&self, what: String) -> Result<(), CniError> {
        if self.fail_on.is_some_and(|f| what.starts_with(f)) {
            return Err(failed(format!("{what}: injected failure")));
        }
        self.log.borrow_mut().push(what);
        Ok(())
    }

    fn by_index(&self, index: u32) -> std::cell::RefMut<'_, LinkInfo> {
        std::cell::RefMut::map(self.pod.borrow_mut(), |links| {
            links.iter_mut().find(|l| l.index == index).unwrap()
        })
    }

    fn get(&self, name: &str) -> LinkInfo {
        self.pod.borrow().iter().find(|l| l.name == name).unwrap().clone()
    }
}

impl PodLinks for FakeLinks {
    fn link(&self, name: &str) -> Result<Option<LinkInfo>, CniError> {
        Ok(self.pod.borrow().iter().find(|l| l.name == name).cloned())
    }
    fn links(&self) -> Result<Vec<LinkInfo>, CniError> {
        Ok(self.pod.borrow().clone())
    }
    fn take_from_host(&self, name: &str) -> Result<(), CniError> {
        self.step(format!("take {name}"))?;
        let mut host = self.host.borrow_mut();
        let i =
            host.iter().position(|l| l.name == name).ok_or_else(|| failed(format!("no host link {name}")))?;
        let mut moved = host.remove(i);
        moved.up = false;
        self.pod.borrow_mut().push(moved);
        Ok(())
    }
    fn give_back(&self, name: &str) -> Result<(), CniError> {
        self.step(format!("give {name}"))?;
        let mut pod = self.pod.borrow_mut();
        let i = pod.iter().position(|l| l.name == name).unwrap();
        let link = pod.remove(i);
        self.host.borrow_mut().push(link);
        Ok(())
    }
    fn add_bond(&self, name: &str, options: &BondOptions) -> Result<u32, CniError> {
        self.step(format!("add {name}"))?;
        self.bonds.borrow_mut().push((name.into(), options.clone()));
        let mut bond = link(20, name, [2, 0xb0, 0, 0, 0, 20], options.mtu.unwrap_or(1500));
        bond.up = false;
        self.pod.borrow_mut().push(bond);
        Ok(20)
    }
    fn set_controller(&self, index: u32, controller: Option<u32>) -> Result<(), CniError> {
        self.step(format!("controller #{index} {controller:?}"))?;
        let mut link = self.by_index(index);
        if controller.is_some() && link.up {
            return Err(failed(format!("#{index} must be down to be enslaved")));
        }
        link.controller = controller;
        Ok(())
    }
    fn set_state(&self, index: u32, up: bool, mac: Option<MacAddr>) -> Result<(), CniError> {
        self.step(format!("#{index} {} {mac:?}", if up { "up" } else { "down" }))?;
        let mut link = self.by_index(index);
        link.up = up;
        if let Some(mac) = mac {
            link.mac = Some(mac);
        }
        Ok(())
    }
    fn del_link(&self, index: u32) -> Result<(), CniError> {
        self.step(format!("del #{index}"))?;
        let mut pod = self.pod.borrow_mut();
        pod.retain(|l| l.index != index);
        for link in pod.iter_mut().filter(|l| l.controller == Some(index)) {
            link.controller = None;
        }
        Ok(())
    }
    fn configure(&self, index: u32, result: &CniResult) -> Result<(), CniError> {
        self.step(format!("configure #{index} {} addresses", result.ips.len()))
    }
}

fn invocation(command: &str) -> Invocation {
    let env = |k: &str| match k {
        "CNI_COMMAND" => Some(command.to_owned()),
        "CNI_CONTAINERID" => Some("c1".to_owned()),
        "CNI_NETNS" => Some("/run/netns/pod".to_owned()),
        "CNI_IFNAME" => Some("bond0".to_owned()),
        "CNI_PATH" => Some("/opt/cni/bin".to_owned()),
        _ => None,
    };
    Invocation::from_env(env).unwrap()
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

#[test]
fn add_enslaves_the_pods_links_down_then_up_and_del_releases_them() {
    let links = FakeLinks::with_vfs([1500, 1500], false);
    let result = Bond::add_with(&links, &invocation("ADD"), "bond0", &config(json!({}))).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "bond0");
    assert_eq!(result["interfaces"][0]["sandbox"], "/run/netns/pod");
    assert_eq!(result["ips"][0], json!({"address": "10.9.0.2/24", "interface": 0}));
    let (name, options) = links.bonds.borrow()[0].clone();
    assert_eq!(name, "bond0");
    assert_eq!(
        (options.mode, options.miimon, options.mtu),
        (plexus_hw::bond::mode_named("active-backup").unwrap(), Some(100), Some(1500))
    );
    assert_eq!(
        *links.log.borrow(),
        [
            "add bond0",
            "#4 down None",
            "controller #4 Some(20)",
            "#4 up None",
            "#7 down None",
            "controller #7 Some(20)",
            "#7 up None",
            "#20 up None",
            "configure #20 1 addresses",
        ]
    );
    assert_eq!((links.get("net1").controller, links.get("net2").controller), (Some(20), Some(20)));
    assert!(links.get("bond0").up);

    links.log.borrow_mut().clear();
    Bond::del_with(Some(&links), &invocation("DEL"), "bond0", &config(json!({}))).unwrap();
    assert_eq!(
        *links.log.borrow(),
        ["controller #4 None", "#4 up None", "controller #7 None", "#7 up None", "del #20"]
    );
    assert!(links.link("bond0").unwrap().is_none());
    assert_eq!((links.get("net1").controller, links.get("net2").up), (None, true));
    // Twice, and with the namespace gone.
    Bond::del_with(Some(&links), &invocation("DEL"), "bond0", &config(json!({}))).unwrap();
    Bond::del_with(None, &invocation("DEL"), "bond0", &config(json!({}))).unwrap();
}

#[test]
fn slaves_sharing_a_mac_get_distinct_ones() {
    let links = FakeLinks::with_vfs([1500, 1500], true);
    Bond::add_with(&links, &invocation("ADD"), "bond0", &config(json!({}))).unwrap();
    let (a, b) = (links.get("net1").mac.unwrap(), links.get("net2").mac.unwrap());
    assert_ne!(a, b);
    assert_eq!(a, MacAddr([2, 0, 0, 0, 0, 1]), "the first keeps its own");
    assert_eq!(b.0[0] & 0x03, 0x02, "locally administered, unicast: {b}");
}

#[test]
fn a_bond_mtu_above_a_slaves_fails_before_anything_is_made() {
    let links = FakeLinks::with_vfs([9000, 1500], false);
    let err = Bond::add_with(&links, &invocation("ADD"), "bond0", &config(json!({"mtu": 9000}))).unwrap_err();
    assert!(err.to_string().contains("mtu: 9000 is above the MTU of link net2 (1500)"), "{err}");
    assert!(links.log.borrow().is_empty(), "{:?}", links.log.borrow());
}

#[test]
fn a_failure_half_way_releases_what_was_done() {
    let links = FakeLinks { fail_on: Some("controller #7 Some"), ..FakeLinks::with_vfs([1500, 1500], false) };
    let err = Bond::add_with(&links, &invocation("ADD"), "bond0", &config(json!({}))).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(links.link("bond0").unwrap().is_none(), "the bond is deleted");
    assert_eq!(links.get("net1").controller, None, "net1 released");
    assert!(links.get("net1").up && links.get("net2").up);
}

#[test]
fn links_of_the_host_are_moved_in_and_given_back() {
    let links = FakeLinks::default();
    links.host.borrow_mut().push(link(30, "ens1f0v0", [2, 0, 0, 0, 1, 1], 1500));
    links.host.borrow_mut().push(link(31, "ens1f1v0", [2, 0, 0, 0, 1, 2], 1500));
    let host_links =
        json!({"linksInContainer": false, "links": [{"name": "ens1f0v0"}, {"name": "ens1f1v0"}]});
    Bond::add_with(&links, &invocation("ADD"), "bond0", &config(host_links.clone())).unwrap();
    assert!(links.host.borrow().is_empty());
    assert_eq!(links.get("ens1f0v0").controller, Some(20));
    Bond::del_with(Some(&links), &invocation("DEL"), "bond0", &config(host_links)).unwrap();
    assert_eq!(links.host.borrow().len(), 2, "both back on the host");
}

#[test]
fn a_missing_or_taken_slave_is_named() {
    let links = FakeLinks::with_vfs([1500, 1500], false);
    let missing = config(json!({"links": [{"name": "net1"}, {"name": "net3"}]}));
    let err = Bond::add_with(&links, &invocation("ADD"), "bond0", &missing).unwrap_err();
    assert!(err.to_string().contains("link net3 is not in the pod's namespace"), "{err}");
    links.pod.borrow_mut()[1].controller = Some(99);
    let err = Bond::add_with(&links, &invocation("ADD"), "bond0", &config(json!({}))).unwrap_err();
    assert!(err.to_string().contains("net1 is already enslaved"), "{err}");
}
