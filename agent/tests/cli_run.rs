//! `plexus-agent pools` and `plexus-agent run`, as the binary, on a simulated node.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of a test binary: a failed unwrap fails the test

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use plexus_sim::kubelet::KubeletStandIn;
use plexus_sim::{ScratchNode, SimSpec};
use serde_json::Value;

const POOLS: &str = r#"{"resourceList": [
  {"resourceName": "sriov_net", "selectors": {"drivers": ["iavf"], "pfNames": ["ens1f0"]}},
  {"resourceName": "sriov_dpdk", "resourcePrefix": "example.com", "selectors": {"drivers": ["vfio-pci"]}}
]}"#;

fn agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plexus-agent"));
    command.env_remove("PLEXUS_LOG");
    command
}

fn setup() -> ScratchNode {
    let spec = SimSpec { pfs: 2, numa_nodes: 1, vfs_per_pf: 3, vfio_vfs_per_pf: 1, cpus_per_node: 2 };
    let node = ScratchNode::tree("cli-pools", &spec).unwrap();
    std::fs::write(node.dir().join("pools.json"), POOLS).unwrap();
    node
}

fn pools(node: &ScratchNode, format: &str) -> Output {
    agent()
        .args(["pools", "--pools"])
        .arg(node.dir().join("pools.json"))
        .arg("--sysfs-root")
        .arg(node.root())
        .args(["--route-file", "/dev/null", "--output", format])
        .output()
        .unwrap()
}

#[test]
fn pools_shows_each_pool_and_why_devices_were_left_out() {
    let node = setup();
    let out = pools(&node, "json");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    let devices = |i: usize| -> Vec<String> {
        value["pools"][i]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["pci_address"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(value["pools"][0]["resource_name"], "intel.com/sriov_net");
    assert_eq!(devices(0), ["0000:20:02.0", "0000:20:02.1"]);
    assert_eq!(value["pools"][1]["resource_name"], "example.com/sriov_dpdk");
    assert_eq!(devices(1), ["0000:20:02.2", "0000:20:03.2"]);
    let excluded = value["excluded"].as_array().unwrap();
    assert_eq!(excluded.len(), 2);
    assert_eq!(excluded[0]["pci_address"], "0000:20:03.0");
    assert_eq!(excluded[0]["reasons"][0], "intel.com/sriov_net: pfNames: ens1f1 VF 0 not in [ens1f0]");

    let out = pools(&node, "table");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("intel.com/sriov_net (2 devices)\n"), "{text}");
    assert!(text.contains("not in any pool (2 devices)"), "{text}");
    assert!(text.contains("        example.com/sriov_dpdk: drivers: iavf not in [vfio-pci]"), "{text}");
}

#[test]
fn a_broken_config_stops_the_agent_before_it_starts() {
    let node = setup();
    let bad = node.dir().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"resourceList": [{"resourceName": "p", "selectors": {"pfNames": ["ens1f0#2-1"]}}]}"#,
    )
    .unwrap();
    let out = agent()
        .args(["run", "--pools"])
        .arg(&bad)
        .arg("--sysfs-root")
        .arg(node.root())
        .arg("--kubelet-dir")
        .arg(node.dir().join("kubelet"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("bad.json") && stderr.contains("(p)") && stderr.contains("pfNames"), "{stderr}");
    assert!(!node.dir().join("kubelet/device-plugins").exists(), "nothing was created");
}

#[tokio::test]
async fn run_registers_serves_and_cleans_up_on_sigterm() {
    let node = setup();
    let kubelet_dir = node.dir().join("kubelet");
    let devinfo_dir = node.dir().join("devinfo");
    let kubelet = KubeletStandIn::start(&kubelet_dir).await.unwrap();
    let conf_dir = node.dir().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let primary = r#"{"cniVersion": "1.0.0", "name": "cbr0", "plugins": [{"type": "bridge"}]}"#;
    std::fs::write(conf_dir.join("10-primary.conflist"), primary).unwrap();
    let child = agent()
        .args(["run", "--pools"])
        .arg(node.dir().join("pools.json"))
        .arg("--sysfs-root")
        .arg(node.root())
        .arg("--kubelet-dir")
        .arg(&kubelet_dir)
        .arg("--devinfo-dir")
        .arg(&devinfo_dir)
        .arg("--socket-dir")
        .arg(node.dir().join("run"))
        .args(["--route-file", "/dev/null", "--auto-config", "--poll-interval-ms", "20", "--cni-conf-dir"])
        .arg(&conf_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let registration =
        kubelet.wait_for_registration("example.com/sriov_dpdk", 0, Duration::from_secs(10)).await;
    let registration = registration.expect("the agent registers its pools");
    let mut client = kubelet.plugin(&registration.endpoint).await.unwrap();
    let mut stream = client
        .list_and_watch(plexus_device_plugin::proto::deviceplugin::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().devices.len(), 2);

    // The CNI config: written, and put back when another plugin renames it.
    let ours = conf_dir.join("00-plexus.conflist");
    let wait_for = async |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait_for("00-plexus.conflist", &|| ours.exists()).await;
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&ours).unwrap()).unwrap();
    assert_eq!(written["plugins"][0]["delegates"][0]["name"], "cbr0");
    assert_eq!(written["plugins"][0]["daemonSocketDir"], node.dir().join("run").display().to_string());
    std::fs::rename(&ours, conf_dir.join("00-plexus.conflist.cilium_bak")).unwrap();
    wait_for("00-plexus.conflist to be put back", &|| ours.exists()).await;

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert!(
        status.status.success(),
        "exit: {:?}, stderr: {}",
        status.status,
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(status.stdout.is_empty(), "logs go to stderr");
    let stderr = String::from_utf8(status.stderr).unwrap();
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("00-plexus.conflist was renamed to 00-plexus.conflist.cilium_bak"), "{stderr}");
    assert!(ours.exists(), "the CNI config outlives the agent");
    let sockets: Vec<String> = std::fs::read_dir(kubelet.plugins_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "kubelet.sock")
        .collect();
    assert!(sockets.is_empty(), "{sockets:?}");
    kubelet.stop().await;
}

#[tokio::test]
async fn run_takes_multus_thick_daemon_config_and_the_device_plugins_flags() {
    let node = setup();
    let kubelet_dir = node.dir().join("kubelet");
    let kubelet = KubeletStandIn::start(&kubelet_dir).await.unwrap();
    let conf_dir = node.dir().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let primary = r#"{"cniVersion": "0.3.1", "name": "cbr0", "plugins": [{"type": "bridge"}]}"#;
    std::fs::write(conf_dir.join("10-primary.conflist"), primary).unwrap();
    // Multus thick's daemon-config.json, with the paths of this node.
    let socket_dir = node.dir().join("multus-run");
    let daemon = serde_json::json!({
        "cniVersion": "1.0.0", "logLevel": "verbose", "logToStderr": true,
        "cniConfigDir": conf_dir, "multusAutoconfigDir": conf_dir, "multusConfigFile": "auto",
        "socketDir": socket_dir, "namespaceIsolation": true, "globalNamespaces": "shared",
        "metricsPort": 9091});
    let daemon_file = node.dir().join("daemon-config.json");
    std::fs::write(&daemon_file, daemon.to_string()).unwrap();
    let log_dir = node.dir().join("sriovdp");
    // The SR-IOV device plugin's DaemonSet flags, and kubespray's Multus flag.
    let child = agent()
        .arg("run")
        .arg("--config-file")
        .arg(node.dir().join("pools.json"))
        .args([
            "--resource-prefix",
            "example.org",
            "--log-level=10",
            "--use-cdi",
            "--namespace-isolation=false",
        ])
        .args(["--log-max-size", "100", "--log-max-files", "5", "--log-max-age", "30"])
        .arg("--log-dir")
        .arg(&log_dir)
        .arg("--config")
        .arg(&daemon_file)
        .arg("--sysfs-root")
        .arg(node.root())
        .arg("--kubelet-dir")
        .arg(&kubelet_dir)
        .arg("--devinfo-dir")
        .arg(node.dir().join("devinfo"))
        .args(["--route-file", "/dev/null", "--poll-interval-ms", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let registered = kubelet.wait_for_registration("example.org/sriov_net", 0, Duration::from_secs(10)).await;
    assert!(registered.is_some(), "--resource-prefix applies to pools without one");
    let ours = conf_dir.join("00-plexus.conflist");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ours.exists() || !socket_dir.join("plexus.sock").exists() {
        assert!(std::time::Instant::now() < deadline, "multusConfigFile auto and socketDir");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&ours).unwrap()).unwrap();
    assert_eq!(written["cniVersion"], "1.0.0", "the daemon config's cniVersion");
    let plugin = &written["plugins"][0];
    assert_eq!(plugin["namespaceIsolation"], false, "the flag wins over the file");
    assert_eq!(plugin["globalNamespaces"], "shared");
    assert_eq!(plugin["daemonSocketDir"], socket_dir.display().to_string());

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("--use-cdi is accepted and ignored"), "{stderr}");
    assert!(stderr.contains("\"metricsPort\""), "an unknown key is named: {stderr}");
    assert!(stderr.contains("DEBUG"), "--log-level=10 is glog's most verbose: {stderr}");
    let logged = std::fs::read_to_string(log_dir.join("plexus-agent.log")).unwrap();
    assert!(logged.contains("SIGTERM"), "--log-dir: {logged}");
    kubelet.stop().await;
}
