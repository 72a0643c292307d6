//! The agent serving CNI (root): the `plexus` binary forwards to the agent's socket, the agent
//! attaches a simulated VF with its in-process `sriov` delegate, reports the call's phases in
//! `trace` and on /metrics; killed, the binary fails ADD at once and does DEL itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus_device_plugin::standin::KubeletStandIn;
use plexus_hw::netns::Netns;
use plexus_hw::sim::{ScratchDir, SimNode, SimSpec};
use serde_json::{Value, json};

const POOLS: &str =
    r#"{"resourceList": [{"resourceName": "sriov_net", "selectors": {"drivers": ["iavf"]}}]}"#;

/// The `plexus` binary next to the agent's, built when missing.
fn plexus_binary() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_plexus-agent")).with_file_name("plexus");
    if !binary.exists() {
        let status =
            Command::new(env!("CARGO")).args(["build", "-q", "-p", "plexus-cni", "--bin", "plexus"]).status();
        assert!(status.unwrap().success());
    }
    binary
}

struct Node {
    scratch: ScratchDir,
    node: SimNode,
    pods: Vec<Netns>,
}

impl Node {
    async fn new() -> Self {
        let scratch = ScratchDir::new("agent-cni").unwrap();
        let spec = SimSpec { pfs: 2, numa_nodes: 1, vfs_per_pf: 3, vfio_vfs_per_pf: 0, cpus_per_node: 2 };
        let mut node = SimNode::build(scratch.path().join("sys"), &spec).unwrap();
        node.create_netdevs(&format!("plexus-agent-cni-{}", std::process::id())).await.unwrap();
        std::fs::write(scratch.path().join("pools.json"), POOLS).unwrap();
        let conf_dir = scratch.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let sriov = json!({"cniVersion": "1.0.0", "name": "sriov-net", "type": "sriov", "deviceID": "0000:20:02.1",
                           "dataDir": scratch.path().join("sriov"), "vlan": 21,
                           "ipam": {"type": "static", "addresses": [{"address": "10.21.0.2/24"}]}});
        std::fs::write(conf_dir.join("10-sriov.conf"), sriov.to_string()).unwrap();
        Self { scratch, node, pods: Vec::new() }
    }

    fn socket_dir(&self) -> PathBuf {
        self.scratch.path().join("run")
    }

    fn agent(&self, metrics: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_plexus-agent"))
            .env_remove("PLEXUS_SYSFS_ROOT")
            .args(["run", "--pools"])
            .arg(self.scratch.path().join("pools.json"))
            .arg("--sysfs-root")
            .arg(self.node.root())
            .arg("--kubelet-dir")
            .arg(self.scratch.path().join("kubelet"))
            .arg("--devinfo-dir")
            .arg(self.scratch.path().join("devinfo"))
            .arg("--socket-dir")
            .arg(self.socket_dir())
            .args(["--route-file", "/dev/null", "--metrics-addr", metrics])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn meta(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus", "clusterNetwork": "sriov-net",
               "confDir": self.scratch.path().join("net.d"), "cniDir": self.scratch.path().join("cache"),
               "daemonSocketDir": self.socket_dir()})
    }

    fn pod(&mut self) -> String {
        let pod = Netns::create_unique("plexus-agent-pod").unwrap();
        let path = pod.path().display().to_string();
        self.pods.push(pod);
        path
    }

    /// Runs `plexus` for `command`; the node's sysfs root only when `local_view` (a binary
    /// doing the work itself must see the node the agent sees; forwarded calls need not).
    fn plexus(&self, command: &str, cid: &str, netns: &str, local_view: bool) -> (i32, Value, Duration) {
        let mut child = Command::new(plexus_binary());
        child
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni");
        if local_view {
            child.env("PLEXUS_SYSFS_ROOT", self.node.root());
        }
        let start = Instant::now();
        let mut child = child.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(self.meta().to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let took = start.elapsed();
        (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null), took)
    }

    fn vf_netdev_in_host(&self) -> bool {
        Command::new("ip")
            .args(["-n", self.node.netns_name().unwrap(), "link", "show", "ens1f0v1"])
            .output()
            .unwrap()
            .status
            .success()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for pod in self.pods.drain(..) {
            let _ = pod.delete();
        }
    }
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_calls_go_through_the_agent_and_survive_its_death() {
    let mut node = Node::new().await;
    let _kubelet = KubeletStandIn::start(&node.scratch.path().join("kubelet")).await.unwrap();
    let metrics = free_port();
    let mut agent = node.agent(&metrics);
    let socket = node.socket_dir().join("plexus.sock");
    wait_for("the agent's socket", || socket.exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(node.socket_dir()).unwrap().permissions().mode() & 0o777, 0o700);

    // Through the agent: the binary has no view of the node (no PLEXUS_SYSFS_ROOT, and /sys
    // has no such VF), so only the agent can have attached it.
    let first = node.pod();
    let (code, result, _) = tokio::task::block_in_place(|| node.plexus("ADD", "cid-1", &first, false));
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["ips"][0]["address"], "10.21.0.2/24");
    assert!(!node.vf_netdev_in_host());

    let out = Command::new(env!("CARGO_BIN_EXE_plexus-agent"))
        .args(["trace", "--output", "json", "--socket-dir"])
        .arg(node.socket_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let calls: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((calls[0]["command"].as_str(), calls[0]["outcome"].as_str()), (Some("ADD"), Some("ok")));
    let phases: Vec<&str> =
        calls[0]["phases"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
    for phase in [
        "networks",
        "cache",
        "sriov lookup",
        "sriov record",
        "sriov move",
        "sriov ipam",
        "delegate sriov-net",
    ] {
        assert!(phases.contains(&phase), "{phase} missing from {phases:?}");
    }
    let text = tokio::task::block_in_place(|| http_get(&metrics, "/metrics"));
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    assert!(
        text.contains(r#"plexus_cni_phase_duration_seconds_count{command="ADD",phase="sriov move"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"plexus_cni_calls_total{command="ADD",outcome="ok"} 1"#), "{text}");

    // The agent dies: ADD fails at once, naming it; DEL is done by the binary from its cache.
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(socket.exists(), "a dead agent's socket stays, so the binary can tell it is down");
    let second = node.pod();
    let (code, error, took) = tokio::task::block_in_place(|| node.plexus("ADD", "cid-2", &second, true));
    assert_eq!((code, error["code"].as_u64()), (1, Some(11)), "{error}");
    assert!(error["msg"].as_str().unwrap().contains("the plexus agent is not running"), "{error}");
    assert!(took < Duration::from_secs(2), "failed at once, not after a timeout: {took:?}");
    let (code, out, _) = tokio::task::block_in_place(|| node.plexus("DEL", "cid-1", &first, true));
    assert_eq!(code, 0, "{out}");
    assert!(node.vf_netdev_in_host(), "the VF was restored without the agent");

    // A new agent takes over the socket.
    let mut agent = node.agent(&free_port());
    wait_for("the new agent", || std::os::unix::net::UnixStream::connect(&socket).is_ok());
    let (code, result, _) = tokio::task::block_in_place(|| node.plexus("ADD", "cid-3", &second, false));
    assert_eq!(code, 0, "{result}");
    let (code, out, _) = tokio::task::block_in_place(|| node.plexus("DEL", "cid-3", &second, false));
    assert_eq!(code, 0, "{out}");
    assert!(node.vf_netdev_in_host());
    Command::new("kill").args(["-TERM", &agent.id().to_string()]).status().unwrap();
    let mut stderr = String::new();
    agent.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(agent.wait().unwrap().success(), "{stderr}");
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_64_concurrent_adds_is_queued_not_held_in_memory() {
    let node = Node::new().await;
    let _kubelet = KubeletStandIn::start(&node.scratch.path().join("kubelet")).await.unwrap();
    // A network whose plugin does no kernel work (the reference static IPAM as the plugin),
    // so the burst measures the agent, not the kernel.
    let conf_dir = node.scratch.path().join("net.d");
    let noop = json!({"cniVersion": "1.0.0", "name": "noop", "type": "static",
                      "ipam": {"type": "static", "addresses": [{"address": "10.30.0.2/24"}]}});
    std::fs::write(conf_dir.join("20-noop.conf"), noop.to_string()).unwrap();
    let mut meta = node.meta();
    meta["clusterNetwork"] = json!("noop");
    let mut agent = node.agent(&free_port());
    let socket = node.socket_dir().join("plexus.sock");
    wait_for("the agent's socket", || socket.exists());
    let pid = agent.id();
    let burst = |round: usize| {
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let meta = meta.to_string();
                std::thread::spawn(move || {
                    let mut child = Command::new(plexus_binary())
                        .env_clear()
                        .env("CNI_COMMAND", "ADD")
                        .env("CNI_CONTAINERID", format!("burst-{round}-{i}"))
                        .env("CNI_NETNS", "/proc/self/ns/net")
                        .env("CNI_IFNAME", "eth0")
                        .env("CNI_PATH", "/usr/lib/cni")
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap();
                    child.stdin.take().unwrap().write_all(meta.as_bytes()).unwrap();
                    child.wait_with_output().unwrap().status.success()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).filter(|ok| *ok).count()
    };
    let before = peak_rss_kb(pid);
    let first = tokio::task::block_in_place(|| burst(0));
    let after_first = peak_rss_kb(pid);
    let second = tokio::task::block_in_place(|| burst(1));
    let after_second = peak_rss_kb(pid);
    assert_eq!((first, second), (64, 64), "every ADD of both bursts succeeds");
    eprintln!(
        "agent peak RSS: {before} kB at start, {after_first} kB after a burst of 64, {after_second} kB after another"
    );
    assert!(after_first - before < 32 * 1024, "{before} kB -> {after_first} kB");
    assert!(
        after_second - after_first < 4 * 1024,
        "a second burst must not grow the peak: {after_first} -> {after_second} kB"
    );
    let trace = Command::new(env!("CARGO_BIN_EXE_plexus-agent"))
        .args(["trace", "--count", "3", "--socket-dir"])
        .arg(node.socket_dir())
        .output()
        .unwrap();
    let text = String::from_utf8(trace.stdout).unwrap();
    assert_eq!(text.lines().filter(|l| l.contains(" ADD burst-")).count(), 3, "{text}");
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(agent.wait().unwrap().success());
}
