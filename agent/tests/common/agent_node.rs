//! A simulated node with links that the agent serves, and the `plexus` binary's calls to it,
//! as the agent's end-to-end tests drive them.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus_sim::{ScratchNode, SimSpec};
use serde_json::{Value, json};

use super::plexus_binary;

const POOLS: &str =
    r#"{"resourceList": [{"resourceName": "sriov_net", "selectors": {"drivers": ["iavf"]}}]}"#;

/// A simulated node with its links, the pool config, a conf directory with an sriov network,
/// and the pods a test makes; all removed on drop.
pub struct Node {
    /// The simulated node; its scratch directory holds every file of the test.
    pub node: ScratchNode,
}

impl Node {
    pub fn new(tag: &str) -> Self {
        let spec = SimSpec { pfs: 2, numa_nodes: 1, vfs_per_pf: 3, vfio_vfs_per_pf: 0, cpus_per_node: 2 };
        let node = ScratchNode::with_links(&format!("agent-{tag}"), &spec).unwrap();
        std::fs::write(node.dir().join("pools.json"), POOLS).unwrap();
        let conf_dir = node.dir().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let sriov = json!({"cniVersion": "1.0.0", "name": "sriov-net", "type": "sriov", "deviceID": "0000:20:02.1",
                           "dataDir": node.dir().join("sriov"), "vlan": 21,
                           "ipam": {"type": "static", "addresses": [{"address": "10.21.0.2/24"}]}});
        std::fs::write(conf_dir.join("10-sriov.conf"), sriov.to_string()).unwrap();
        Self { node }
    }

    /// The agent's socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.node.dir().join("run")
    }

    /// Starts the agent on the node, its metrics on `metrics`.
    pub fn agent(&self, metrics: &str) -> Child {
        self.agent_with(metrics, &[])
    }

    /// [`Self::agent`] with more arguments.
    pub fn agent_with(&self, metrics: &str, extra: &[&std::ffi::OsStr]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_plexus-agent"))
            .env_remove("PLEXUS_SYSFS_ROOT")
            .args(["run", "--pools"])
            .arg(self.node.dir().join("pools.json"))
            .arg("--sysfs-root")
            .arg(self.node.root())
            .arg("--simulated-node")
            .arg("--kubelet-dir")
            .arg(self.node.dir().join("kubelet"))
            .arg("--devinfo-dir")
            .arg(self.node.dir().join("devinfo"))
            .arg("--socket-dir")
            .arg(self.socket_dir())
            .args(["--route-file", "/dev/null", "--metrics-addr", metrics])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The meta-plugin's config: the sriov network as the cluster network, the agent's socket.
    pub fn meta(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus", "clusterNetwork": "sriov-net",
               "confDir": self.node.dir().join("net.d"), "cniDir": self.node.dir().join("cache"),
               "daemonSocketDir": self.socket_dir()})
    }

    /// A new pod namespace's path.
    pub fn pod(&mut self) -> String {
        self.node.pod().unwrap().path().display().to_string()
    }

    /// Runs `plexus` for `command`; the node's sysfs root only when `local_view` (a binary
    /// doing the work itself must see the node the agent sees; forwarded calls need not).
    pub fn plexus(&self, command: &str, cid: &str, netns: &str, local_view: bool) -> (i32, Value, Duration) {
        self.plexus_for(command, cid, netns, local_view, "", &self.meta())
    }

    /// [`Self::plexus`] with `CNI_ARGS` and a network configuration.
    pub fn plexus_for(
        &self,
        command: &str,
        cid: &str,
        netns: &str,
        local_view: bool,
        args: &str,
        meta: &Value,
    ) -> (i32, Value, Duration) {
        let start = Instant::now();
        let child = Self::spawn_plexus(self.plexus_command(command, cid, netns, local_view, args), meta);
        let out = child.wait_with_output().unwrap();
        let took = start.elapsed();
        (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null), took)
    }

    /// The `plexus` command of a call, as a runtime makes it (`CNI_IFNAME` eth0).
    pub fn plexus_command(
        &self,
        command: &str,
        cid: &str,
        netns: &str,
        local_view: bool,
        args: &str,
    ) -> Command {
        let mut child = Command::new(plexus_binary());
        child
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env("CNI_ARGS", args);
        if local_view {
            child.env("PLEXUS_SYSFS_ROOT", self.node.root());
        }
        child
    }

    /// Starts `command` with `config` on its stdin (closed), its stdout piped.
    pub fn spawn_plexus(mut command: Command, config: &Value) -> Child {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        // A child killed early closes its end: the write may fail, which is the child's story.
        let _ = child.stdin.take().unwrap().write_all(config.to_string().as_bytes());
        child
    }

    /// `plexus-agent trace` with `args`.
    pub fn trace(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(env!("CARGO_BIN_EXE_plexus-agent"))
            .arg("trace")
            .args(args)
            .arg("--socket-dir")
            .arg(self.socket_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// The slowest recent call `trace` shows, and the names of its phases.
    pub fn slowest_call(&self) -> (Value, Vec<String>) {
        let calls: Value = serde_json::from_slice(&self.trace(&["--output", "json"]).stdout).unwrap();
        let phases = calls[0]["phases"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap().to_owned());
        (calls[0].clone(), phases.collect())
    }

    /// Whether the sriov network's VF netdev is on the node under its name.
    pub fn vf_netdev_in_host(&self) -> bool {
        plexus_sim::ip::link(self.node.netns_name(), "ens1f0v1").is_some()
    }
}

/// Waits up to 20 s for `cond`, failing the test with `what` after that.
pub fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP address on the loopback nobody listens on.
pub fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}
