//! `plexus-agent demo`, the README's main command, run for real (root): it must succeed, show
//! what the issue promises, and leave no namespace, link, file or process behind, as seen from
//! outside it too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;

fn names(dir: &str, prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn host_links() -> BTreeSet<String> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(": ").nth(1).unwrap().split('@').next().unwrap().to_owned())
        .collect()
}

fn processes_of(binary: &str) -> usize {
    names("/proc", "")
        .into_iter()
        .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()))
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.ends_with(binary)))
        .count()
}

#[test]
fn the_demo_attaches_pods_reports_and_leaves_nothing_behind() {
    common::plexus_binary();
    let (netns, shm, links) =
        (names("/run/netns", "plexus-demo"), names("/dev/shm", "plexus-demo"), host_links());
    let out = Command::new(env!("CARGO_BIN_EXE_plexus-agent")).arg("demo").output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    assert!(stdout.contains("the agent offers 12 VFs as intel.com/sriov_net"), "{stdout}");
    // The pod with two SR-IOV attachments (and a VF as its eth0).
    let router = &stdout[stdout.find("== pod demo/router").unwrap()..stdout.find("== pod demo/db").unwrap()];
    for interface in ["\"eth0\"", "\"net1\"", "\"net2\""] {
        assert!(router.contains(interface), "{router}");
    }
    assert_eq!(router.matches("\"pci-address\"").count(), 3, "{router}");
    assert!(
        router.contains("NUMA placement: all on NUMA node"),
        "one NUMA node for the pod's 3 VFs: {router}"
    );
    assert_eq!(stdout.matches("NUMA placement: all on NUMA node").count(), 3, "{stdout}");
    for phase in ["pod", "devices", "networks", "sriov move", "delegate demo/control", "status", "total"] {
        assert!(stdout.contains(&format!("\n   {phase} ")), "phase {phase} in the latency table: {stdout}");
    }
    assert!(stdout.contains("every VF is back on the node under its name"), "{stdout}");
    assert!(stdout.trim_end().ends_with("nothing left behind"), "{stdout}");

    assert_eq!(names("/run/netns", "plexus-demo"), netns, "network namespaces");
    assert_eq!(names("/dev/shm", "plexus-demo"), shm, "files");
    assert_eq!(host_links(), links, "links of the host namespace");
    assert_eq!(processes_of("plexus-agent"), 0, "an agent left running");
}
