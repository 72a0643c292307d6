//! `plexus-agent demo`, the README's main command, run for real (root): it must succeed, show
//! what the issue promises, and leave no namespace, link, file or process behind, as seen from
//! outside it too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;

/// The names in `dir` that `keep` accepts.
fn names(dir: &str, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| keep(n))
                .collect()
        })
        .unwrap_or_default()
}

/// The host namespace's links named as the simulator names its links: the only ones the demo
/// could leave here.
fn host_links() -> BTreeSet<String> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(": ").nth(1).unwrap().split('@').next().unwrap().to_owned())
        .filter(|name| plexus_sim::node::names_a_link(name))
        .collect()
}

/// The processes whose command line names `needle` (the demo's agent runs on its directory).
fn processes_naming(needle: &str) -> Vec<String> {
    names("/proc", |pid| pid.chars().all(|c| c.is_ascii_digit()))
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
        })
        .collect()
}

#[test]
fn the_demo_attaches_pods_reports_and_leaves_nothing_behind() {
    common::plexus_binary();
    let links = host_links();
    let demo = Command::new(env!("CARGO_BIN_EXE_plexus-agent"))
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Everything the demo makes is named by its pid or lives in its directory: only that is
    // judged, whatever else runs on the machine (another test's agent, another user's demo).
    let pid = demo.id();
    let ours = move |name: &str| {
        name == format!("plexus-demo-{pid}")
            || (name.starts_with("plexus-demo-pod-") && name.ends_with(&format!("-{pid}")))
    };
    let out = demo.wait_with_output().unwrap();
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

    assert_eq!(names("/run/netns", ours), BTreeSet::new(), "network namespaces");
    let work = stdout.split("files left under ").nth(1).and_then(|rest| rest.split(':').next()).unwrap();
    assert!(work.starts_with('/') && !std::path::Path::new(work).exists(), "its directory {work}");
    assert_eq!(host_links(), links, "links of the host namespace");
    assert_eq!(processes_naming(work), Vec::<String>::new(), "an agent left running");
}
