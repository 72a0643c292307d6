//! Faults as an operator's node sees them (root): the `plexus` binary, the forwarding shim and
//! the agent killed at random points of an ADD, then DEL as a runtime sends it (the pod's
//! namespace still there, gone, or not named; once or twice), after which the node must be
//! exactly as before; hostile container IDs and a too-large call, through the binary and the
//! agent's socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::agent_node::{Node, free_port, wait_for};
use plexus_hw::VfIndex;
use plexus_hw::netns::Netns;
use plexus_sim::kubelet::KubeletStandIn;
use serde_json::{Value, json};

/// The VF the network uses (`deviceID`), its PF, its netdev on the node.
const VF: &str = "0000:20:02.1";
const VF_NETDEV: &str = "ens1f0v1";

/// A small, fixed-seed generator (xorshift64*): the same trials on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Who is killed during the ADD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Victim {
    /// `plexus` doing the call itself (a node without the agent).
    Local,
    /// `plexus` forwarding to the agent: the runtime's timeout; the agent goes on.
    Shim,
    /// The agent, in the middle of the call.
    Agent,
}

/// What the runtime's DEL says of the pod's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NetnsAtDel {
    /// Still there, named.
    Present,
    /// Deleted, still named (CNI_NETNS points at nothing).
    Gone,
    /// Deleted, and CNI_NETNS empty.
    Empty,
}

/// What the test compares before and after: everything a call may change or leave.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeState {
    /// The VF netdev on the node: name, MAC, MTU, up; `None` when it is not there.
    vf_netdev: Option<(String, String, u64, bool)>,
    /// The VF's PF-side settings.
    vf_settings: String,
    /// host-local's reservations (addresses), the sriov records, the DEL cache (with its
    /// per-container locks), the CNI-side device-info.
    ipam: Vec<String>,
    records: Vec<String>,
    cache: Vec<String>,
    devinfo: Vec<String>,
    /// Temporary files anywhere in Plexus's stores.
    temps: Vec<String>,
}

/// The files under `dir`, relative, sorted, that `keep` accepts.
fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    plexus_sim::files_in(dir).unwrap().into_iter().filter(|name| keep(name)).collect()
}

struct Lab {
    node: Node,
    agent: Option<Child>,
    _kubelet: KubeletStandIn,
}

impl Lab {
    async fn new(tag: &str) -> Self {
        let node = Node::new(tag);
        let dir = node.node.dir().to_owned();
        // The cluster network: the VF with every setting that must be undone, and host-local.
        let sriov = json!({"cniVersion": "1.0.0", "name": "sriov-net", "type": "sriov", "deviceID": VF,
                           "dataDir": dir.join("sriov"), "vlan": 21, "spoofchk": "off", "trust": "on",
                           "mac": "02:21:00:00:00:01", "mtu": 1400,
                           "ipam": {"type": "host-local", "subnet": "10.21.0.0/24", "dataDir": dir.join("ipam")}});
        std::fs::write(dir.join("net.d/10-sriov.conf"), sriov.to_string()).unwrap();
        let kubelet = KubeletStandIn::start(&dir.join("kubelet")).await.unwrap();
        Self { node, agent: None, _kubelet: kubelet }
    }

    fn dir(&self) -> &Path {
        self.node.node.dir()
    }

    fn socket(&self) -> PathBuf {
        self.node.socket_dir().join("plexus.sock")
    }

    fn start_agent(&mut self) {
        if self.agent.is_none() {
            self.agent = Some(self.node.agent(&free_port()));
            let socket = self.socket();
            wait_for("the agent", || std::os::unix::net::UnixStream::connect(&socket).is_ok());
        }
    }

    /// Kills the agent; `gone`: and removes its socket, as on a node without the agent.
    fn kill_agent(&mut self, gone: bool) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            agent.wait().unwrap();
        }
        if gone {
            let _ = std::fs::remove_file(self.socket());
        }
    }

    fn state(&self) -> NodeState {
        let vf_netdev = plexus_sim::ip::link(self.node.node.netns_name(), VF_NETDEV)
            .map(|l| (VF_NETDEV.to_owned(), l.mac, l.mtu, l.up));
        let settings = self.node.node.control().store().vf(&"ens1f0".parse().unwrap(), VfIndex(1)).unwrap();
        let dir = self.dir();
        let stores = ["cache", "sriov", "ipam", "devinfo"];
        NodeState {
            vf_netdev,
            vf_settings: format!("{settings:?}"),
            ipam: files(&dir.join("ipam"), |n| n.contains("10.21.")),
            records: files(&dir.join("sriov"), |n| n.ends_with(".json")),
            cache: files(&dir.join("cache"), |_| true),
            devinfo: files(&dir.join("devinfo/cni"), |_| true),
            temps: stores.iter().flat_map(|s| files(&dir.join(s), |n| n.ends_with(".tmp"))).collect(),
        }
    }

    /// Runs one call to its end; its exit code and output.
    fn call(&self, command: &str, cid: &str, netns: &str) -> (i32, Value) {
        let (code, out, _) = self.node.plexus_for(command, cid, netns, true, "", &self.node.meta());
        (code, out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_at_random_points_of_add_leave_nothing_del_cannot_undo() {
    let mut lab = Lab::new("faults").await;
    let before = lab.state();
    assert!(before.vf_netdev.is_some() && before.temps.is_empty(), "{before:?}");

    // What a writer killed between naming its file and renaming it leaves (O_TMPFILE makes
    // that window two system calls wide, too narrow for a test's kill to hit). Every DEL that
    // reaches a store sweeps it, so the first calibrating DEL must (a trial's DEL after an early
    // kill may have no delegate to run). A pid above the kernel's limit (2^22) is nobody's.
    for (store, name) in
        [("cache", "fault-0"), ("sriov", "0000:20:02.1.json"), ("ipam/sriov-net", "10.21.0.9")]
    {
        let dir = lab.dir().join(store);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!(".{name}.{}.0.tmp", 1 << 23)), "half").unwrap();
    }

    // How long an ADD takes on each path: kills land anywhere in it, and a little after. The
    // fastest of a few: the first call on a path pays for cold caches and would stretch the
    // window past the calls that follow, so that most kills would land after them.
    let mut add_time = BTreeMap::new();
    for victim in [Victim::Local, Victim::Shim] {
        match victim {
            Victim::Local => lab.kill_agent(true),
            _ => lab.start_agent(),
        }
        for _ in 0..3 {
            let pod = lab.node.pod();
            let start = Instant::now();
            let (code, out) = tokio::task::block_in_place(|| lab.call("ADD", "calibrate", &pod));
            let took = start.elapsed();
            let fastest = add_time.entry(victim).or_insert(took);
            *fastest = took.min(*fastest);
            assert_eq!(code, 0, "{out}");
            assert_eq!(tokio::task::block_in_place(|| lab.call("DEL", "calibrate", &pod)).0, 0);
            Netns::delete_path(Path::new(&pod)).unwrap();
            assert_eq!(lab.state(), before);
        }
    }
    add_time.insert(Victim::Agent, add_time[&Victim::Shim]);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let trials = 60;
    let mut killed_mid_call = 0;
    let mut seen: BTreeMap<(Victim, NetnsAtDel), usize> = BTreeMap::new();
    for trial in 0..trials {
        let victim = [Victim::Local, Victim::Shim, Victim::Agent][trial % 3];
        let netns_at_del = [NetnsAtDel::Present, NetnsAtDel::Gone, NetnsAtDel::Empty][rng.below(3) as usize];
        let twice = rng.below(2) == 1;
        let window = add_time[&victim].as_micros() as u64 * 6 / 5;
        let delay = Duration::from_micros(rng.below(window.max(1)));
        *seen.entry((victim, netns_at_del)).or_default() += 1;
        match victim {
            Victim::Local => lab.kill_agent(true),
            Victim::Shim | Victim::Agent => lab.start_agent(),
        }
        let pod = lab.node.pod();
        let cid = format!("fault-{trial}");
        let what =
            format!("trial {trial}: {victim:?} killed after {delay:?}, DEL with the netns {netns_at_del:?}");

        let command = lab.node.plexus_command("ADD", &cid, &pod, victim == Victim::Local, "");
        let mut add = Node::spawn_plexus(command, &lab.node.meta());
        std::thread::sleep(delay);
        match victim {
            Victim::Local | Victim::Shim => {
                if add.try_wait().unwrap().is_none() {
                    killed_mid_call += 1;
                }
                let _ = add.kill();
            }
            Victim::Agent => {
                if add.try_wait().unwrap().is_none() {
                    killed_mid_call += 1;
                }
                lab.kill_agent(false);
            }
        }
        let _ = add.wait();
        // The runtime gives up on the sandbox; the DaemonSet restarts a dead agent, sometimes
        // after the DEL (which the binary then does itself).
        if victim == Victim::Agent && rng.below(2) == 0 {
            lab.start_agent();
        }
        let netns = match netns_at_del {
            NetnsAtDel::Present => pod.clone(),
            NetnsAtDel::Gone => {
                Netns::delete_path(Path::new(&pod)).unwrap();
                pod.clone()
            }
            NetnsAtDel::Empty => {
                Netns::delete_path(Path::new(&pod)).unwrap();
                String::new()
            }
        };
        for _ in 0..if twice { 2 } else { 1 } {
            let (code, out) = tokio::task::block_in_place(|| lab.call("DEL", &cid, &netns));
            assert_eq!(code, 0, "{what}: {out}");
        }
        if netns_at_del == NetnsAtDel::Present {
            Netns::delete_path(Path::new(&pod)).unwrap();
        }
        assert_eq!(lab.state(), before, "{what}");
    }
    let took = started.elapsed();
    lab.kill_agent(true);
    eprintln!(
        "fault injection: {trials} trials in {took:?}, {killed_mid_call} killed while the ADD still ran \
         (fastest ADD by path: {add_time:?}); by victim and netns at DEL: {seen:?}; leaks: none"
    );
    assert!(killed_mid_call >= trials / 3, "most kills land inside the call: {killed_mid_call}");
    assert!(took < Duration::from_secs(60), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_del_sent_while_the_agent_still_adds_waits_for_it_then_undoes_it() {
    let mut lab = Lab::new("race").await;
    let before = lab.state();
    lab.start_agent();
    // A slow ADD: the readiness indicator appears only later, so the agent holds the ADD.
    let ready = lab.dir().join("ready");
    let mut meta = lab.node.meta();
    meta["readinessindicatorfile"] = json!(ready);
    for trial in 0..3 {
        let pod = lab.node.pod();
        let cid = format!("race-{trial}");
        let mut add = Node::spawn_plexus(lab.node.plexus_command("ADD", &cid, &pod, false, ""), &meta);
        std::thread::sleep(Duration::from_millis(300));
        // The runtime's timeout: the shim dies, DEL follows at once; the agent's ADD goes on.
        add.kill().unwrap();
        add.wait().unwrap();
        let del = Node::spawn_plexus(lab.node.plexus_command("DEL", &cid, &pod, true, ""), &meta);
        std::thread::sleep(Duration::from_millis(200));
        std::fs::write(&ready, "").unwrap();
        let out = del.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        // The ADD has ended too (the agent records a call when it ends): nothing it does can
        // come after the check.
        let ended = format!(" ADD {cid} ");
        wait_for("the agent's ADD to end", || {
            String::from_utf8_lossy(&lab.node.trace(&["--count", "64"]).stdout).contains(&ended)
        });
        assert_eq!(
            lab.state(),
            before,
            "trial {trial}: the ADD that finished after the DEL arrived is undone"
        );
        std::fs::remove_file(&ready).unwrap();
    }
    lab.kill_agent(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_container_ids_are_refused_before_anything_is_touched() {
    let mut lab = Lab::new("hostile").await;
    let dir = lab.dir().to_owned();
    // A cache two levels down, so that `../x` and `../../x` land in the scratch directory.
    let mut meta = lab.node.meta();
    meta["cniDir"] = json!(dir.join("a/cache"));
    let victims = [dir.join("abs-victim"), dir.join("a/victim"), dir.join("victim")];
    let cids = [victims[0].display().to_string(), "../victim".to_owned(), "../../victim".to_owned()];
    std::fs::create_dir_all(dir.join("a/cache")).unwrap();
    for agent in [false, true] {
        if agent {
            lab.start_agent();
        } else {
            lab.kill_agent(true);
        }
        for victim in &victims {
            std::fs::write(victim, "precious").unwrap();
        }
        for cid in &cids {
            for command in ["DEL", "ADD", "CHECK"] {
                let pod = lab.node.pod();
                let (code, out, _) =
                    tokio::task::block_in_place(|| lab.node.plexus_for(command, cid, &pod, true, "", &meta));
                assert_eq!(
                    (code, out["code"].as_u64()),
                    (1, Some(4)),
                    "{command} {cid} (agent: {agent}): {out}"
                );
                assert!(out["msg"].as_str().unwrap().contains("CNI_CONTAINERID"), "{out}");
            }
        }
        for victim in &victims {
            assert_eq!(std::fs::read_to_string(victim).unwrap(), "precious", "{}", victim.display());
        }
    }
    // A call larger than the agent takes is refused as that, naming the limit.
    let mut huge = lab.node.meta();
    huge["padding"] = json!("x".repeat(5 << 20));
    let pod = lab.node.pod();
    let (code, out, _) =
        tokio::task::block_in_place(|| lab.node.plexus_for("ADD", "big", &pod, false, "", &huge));
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(msg.contains("4194304 bytes") && !msg.contains("not running"), "{msg}");
    // Under the limit on stdin, over it once wrapped for the agent (each quote, 2 bytes in the
    // config, takes 4 in the request): refused the same, not sent.
    let mut near = lab.node.meta();
    near["padding"] = json!("\"".repeat(3 << 19));
    let (code, out, _) =
        tokio::task::block_in_place(|| lab.node.plexus_for("ADD", "big", &pod, false, "", &near));
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(out["msg"].as_str().unwrap().contains("the call ("), "{out}");
    lab.kill_agent(true);
}
