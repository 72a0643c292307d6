//! vhost-user attachments into a real OVS-DPDK (root; Debian's openvswitch-switch-dpdk and
//! dpdk-testpmd, installed by the test command). One scenario, run once: two pods each get a
//! vhost-user port (client mode) on a bridge Plexus creates; a dpdk-testpmd in each pod's
//! namespace serves the pod's socket; both OVS interfaces come up and packets sent by one
//! testpmd (txonly) are received by the other (rxonly); then a server-mode attachment, an
//! over-long socket directory, and a DEL while ovsdb-server is down; then DEL of everything,
//! twice, and nothing is left in OVS or on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::FakeCluster;
use plexus_cni::delegate::{Request, call_in_process};
use plexus_cni::error::Error;
use plexus_cni::multus::cluster::{Cluster, Pod, SharedDir};
use plexus_cni::spec::Invocation;
use plexus_cni::userspace::ovsdb::Ovsdb;
use plexus_cni::userspace::{Userspace, ovs, port_name};
use plexus_hw::kernel::NetlinkKernel;
use plexus_hw::netns::Netns;
use plexus_sim::ovs::OvsLab;
use serde_json::{Value, json};

fn invocation(command: &str, cid: &str, netns: &Netns, pod: &str) -> Invocation {
    let env: HashMap<&str, String> = HashMap::from([
        ("CNI_COMMAND", command.to_owned()),
        ("CNI_CONTAINERID", cid.to_owned()),
        ("CNI_NETNS", netns.path().display().to_string()),
        ("CNI_IFNAME", "net1".to_owned()),
        ("CNI_PATH", "/usr/lib/cni".to_owned()),
        ("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=dpdk;K8S_POD_NAME={pod}")),
    ]);
    Invocation::from_env(|k| env.get(k).cloned()).unwrap()
}

/// `invocation` for interface `ifname`.
fn renamed(invocation: &Invocation, ifname: &str) -> Invocation {
    Invocation { ifname: ifname.parse().unwrap(), ..invocation.clone() }
}

/// The delegate in-process, as the meta-plugin calls it (it makes no kernel request: its
/// session opens nothing).
fn call(
    userspace: &Userspace,
    invocation: &Invocation,
    config: &Value,
    cluster: Option<&dyn Cluster>,
) -> Result<Option<Value>, Error> {
    let kernel = NetlinkKernel::new(None, invocation.netns.clone());
    let request = Request { invocation, config, cluster, kernel: &kernel };
    call_in_process(userspace, "userspace", &request)
}

/// A dpdk-testpmd serving `socket` (virtio-user, server side) in namespace `netns`, its
/// output collected.
struct Testpmd {
    child: Child,
    output: Arc<Mutex<String>>,
    prefix: String,
}

impl Testpmd {
    fn start(netns: &Netns, socket: &Path, mode: &str, prefix: &str) -> Self {
        let mut child = Process::new("ip")
            .args([
                "netns",
                "exec",
                netns.name().unwrap(),
                "dpdk-testpmd",
                "-l",
                "0,1",
                "--no-pci",
                "--in-memory",
            ])
            .args(["--single-file-segments", "-m", "256", &format!("--file-prefix={prefix}")])
            .arg(format!("--vdev=net_virtio_user0,path={},server=1", socket.display()))
            .args([
                "--",
                &format!("--forward-mode={mode}"),
                "--total-num-mbufs=2048",
                "--stats-period",
                "1",
                "-a",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let sink = output.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        Self { child, output, prefix: prefix.to_owned() }
    }

    /// The largest RX-packets count the periodic statistics showed.
    fn rx_packets(&self) -> u64 {
        self.output
            .lock()
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("RX-packets:"))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // DPDK's runtime directory, made even with --in-memory.
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

/// A pod's namespace, deleted however the test ends.
struct PodNs(Option<Netns>);

impl PodNs {
    fn new() -> Self {
        Self(Some(Netns::create_unique("plexus-ovs-pod").unwrap()))
    }

    fn ns(&self) -> &Netns {
        self.0.as_ref().unwrap()
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        if let Some(netns) = self.0.take() {
            let _ = netns.delete();
        }
    }
}

fn wait_for(what: &str, timeout: Duration, cond: &dyn Fn() -> bool, diagnose: &dyn Fn(&str) -> String) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{}", diagnose(&format!("timed out waiting for {what}")));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn link_state(db_socket: &Path, port: &str) -> String {
    let mut db = Ovsdb::connect(db_socket, Duration::from_secs(5)).unwrap();
    let row = ovs::interface(&mut db, port, &["link_state"]).unwrap();
    row.and_then(|r| r["link_state"].as_str().map(str::to_owned)).unwrap_or_default()
}

fn ports(lab: &OvsLab) -> Vec<String> {
    let out = lab.vsctl().args(["--bare", "--columns=name", "list", "Port"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(str::to_owned).collect()
}

/// Makes sure 2 MB hugepages are there for the testpmds (memfd-backed, no mount needed), and
/// gives the previous count back.
struct Hugepages(Option<String>);

impl Hugepages {
    const FILE: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

    fn at_least(count: u32) -> Self {
        let before = std::fs::read_to_string(Self::FILE).unwrap().trim().to_owned();
        if before.parse::<u32>().unwrap() >= count {
            return Self(None);
        }
        std::fs::write(Self::FILE, count.to_string()).unwrap();
        Self(Some(before))
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = std::fs::write(Self::FILE, before);
        }
    }
}

#[test]
fn vhost_user_ports_carry_packets_between_two_testpmds_and_leave_nothing() {
    assert!(
        OvsLab::available(),
        "openvswitch-switch-dpdk is not installed (hack/install-deps.sh installs it)"
    );
    let _hugepages = Hugepages::at_least(512);
    let scratch = plexus_sim::scratch("ovs").unwrap();
    let tag = format!("plexus-ovs-{}", std::process::id());
    let mut lab = OvsLab::start(scratch.path(), &tag).unwrap();
    let cluster = FakeCluster::default();
    let userspace = Userspace {
        ovsdb_socket: lab.db_socket(),
        ovs_run_dir: lab.run_dir().to_owned(),
        run_dir: scratch.path().join("run"),
        devinfo_dir: scratch.path().join("devinfo"),
        ..Default::default()
    };
    let config = |mode: &str, shared: &Path| {
        json!({"cniVersion": "1.1.0", "name": "vhost-net", "type": "userspace",
               "host": {"engine": "ovs-dpdk", "iftype": "vhostuser", "netType": "bridge",
                        "vhost": {"mode": mode}, "bridge": {"bridgeName": "br-plexus", "vlanId": 42}},
               "container": {"engine": "ovs-dpdk", "iftype": "vhostuser", "netType": "interface"},
               "sharedDir": shared, "dataDir": scratch.path().join("records"),
               "ipam": {"type": "host-local", "subnet": "10.56.0.0/24", "dataDir": scratch.path().join("ipam")}})
    };
    let mut pods = Vec::new();
    for name in ["rx", "tx"] {
        let shared = scratch.path().join(format!("pods/{name}/shared-dir"));
        // examples/ovs-vhost's hostPath may not exist yet: ADD makes it (tx), as the userspace
        // plugin does.
        if name == "rx" {
            std::fs::create_dir_all(&shared).unwrap();
        }
        cluster.pods.lock().unwrap().push(Pod {
            namespace: "dpdk".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            shared_dir: Some(SharedDir {
                host_path: Some(shared.display().to_string()),
                mount_path: Some("/var/run/vhost".into()),
            }),
            ..Default::default()
        });
        pods.push((name, PodNs::new(), shared, format!("{name}0123456789abcdef")));
    }

    // ADD: two client-mode ports on a bridge Plexus makes.
    for (name, netns, _, cid) in &pods {
        let add = renamed(&invocation("ADD", cid, netns.ns(), name), "net1");
        let result =
            call(&userspace, &add, &config("client", Path::new("/unused")), Some(&cluster)).unwrap().unwrap();
        let port = port_name(cid, "net1");
        assert_eq!(result["interfaces"][0]["socketPath"], format!("/var/run/vhost/{port}"), "{result}");
        assert_eq!(
            result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().split('.').count(),
            4
        );
        let pod = cluster.pod("dpdk", name).unwrap().unwrap();
        let data: Value = serde_json::from_str(&pod.annotations["userspace/configuration-data"]).unwrap();
        assert_eq!(data[0]["config"]["vhost"], json!({"mode": "server", "socketfile": port}), "{data}");
        assert_eq!(data[0]["ifName"], "net1");
        assert_eq!(pod.annotations["userspace/mapped-dir"], "/var/run/vhost");
    }
    let out = lab.vsctl().args(["get", "Bridge", "br-plexus", "datapath_type"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "netdev");
    let (rx_port, tx_port) = (port_name(&pods[0].3, "net1"), port_name(&pods[1].3, "net1"));
    let out = lab
        .vsctl()
        .args(["get", "Interface", &rx_port, "type", "options:vhost-server-path"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("dpdkvhostuserclient\n"), "{text}");
    assert!(text.contains(&pods[0].2.join(&rx_port).display().to_string()), "{text}");
    let out = lab.vsctl().args(["get", "Port", &rx_port, "tag"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    // The pods' DPDK applications: txonly in one, rxonly in the other.
    let rx = Testpmd::start(pods[0].1.ns(), &pods[0].2.join(&rx_port), "rxonly", &format!("{tag}-rx"));
    let tx = Testpmd::start(pods[1].1.ns(), &pods[1].2.join(&tx_port), "txonly", &format!("{tag}-tx"));
    let diagnose = |what: &str| {
        let log = std::fs::read_to_string(scratch.path().join("vswitchd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!(
            "{what}\n--- rx testpmd:\n{}\n--- tx testpmd:\n{}\n--- ovs-vswitchd (last lines, newest first):\n{}",
            rx.output.lock().unwrap(),
            tx.output.lock().unwrap(),
            tail.join("\n")
        )
    };
    let up =
        || link_state(&lab.db_socket(), &rx_port) == "up" && link_state(&lab.db_socket(), &tx_port) == "up";
    wait_for("both vhost-user interfaces up", Duration::from_secs(30), &up, &diagnose);
    wait_for("packets at the rxonly testpmd", Duration::from_secs(30), &|| rx.rx_packets() > 0, &diagnose);
    eprintln!("rxonly testpmd received {} packets", rx.rx_packets());
    drop((rx, tx));

    // Server mode: OVS's socket, shown in the pod's directory.
    let server_pod = &pods[0];
    let server_cid = "fedcba987654-server";
    let inv = invocation("ADD", server_cid, server_pod.1.ns(), server_pod.0);
    call(&userspace, &renamed(&inv, "net2"), &config("server", Path::new("/unused")), Some(&cluster))
        .unwrap();
    let shown = server_pod.2.join(port_name(server_cid, "net2"));
    std::os::unix::net::UnixStream::connect(&shown)
        .expect("OVS's server socket, reached from the pod's directory");
    let data: Value = serde_json::from_str(
        &cluster.pod("dpdk", server_pod.0).unwrap().unwrap().annotations["userspace/configuration-data"],
    )
    .unwrap();
    assert_eq!(data.as_array().unwrap().len(), 2, "both attachments of the pod: {data}");
    assert_eq!(data[1]["config"]["vhost"]["mode"], "client");

    // No shared-dir volume and a sharedDir too long for a socket path: reached through a bind
    // mount under the run directory.
    let long = scratch.path().join("x".repeat(60)).join("y".repeat(60));
    let lone = PodNs::new();
    let long_cid = "aaaabbbbcccc-long";
    let inv = invocation("ADD", long_cid, lone.ns(), "no-such-pod");
    call(&userspace, &renamed(&inv, "net1"), &config("client", &long), Some(&cluster)).unwrap();
    let long_port = port_name(long_cid, "net1");
    let out =
        lab.vsctl().args(["get", "Interface", &long_port, "options:vhost-server-path"]).output().unwrap();
    let short = String::from_utf8(out.stdout).unwrap().trim().trim_matches('"').to_owned();
    assert!(
        short.len() <= 107 && short.starts_with(&scratch.path().join("run/vhost").display().to_string()),
        "{short}"
    );
    std::fs::write(long.join("aaaabbbbcccc").join("probe"), "x").unwrap();
    assert!(Path::new(&short).with_file_name("probe").exists(), "the short path shows the long directory");

    // A DEL while ovsdb-server is down: local cleanup now, the port removed once it is back.
    lab.stop_server();
    call(
        &userspace,
        &renamed(&invocation("DEL", long_cid, lone.ns(), "no-such-pod"), "net1"),
        &config("client", &long),
        None,
    )
    .unwrap();
    assert!(!Path::new(&short).with_file_name("probe").exists(), "unmounted");
    lab.start_server().unwrap();
    assert!(ports(&lab).contains(&long_port), "still in OVS until the next call reaches it");

    // DEL of everything, twice; the next call reaching OVS sweeps the deferred port.
    let inv = invocation("DEL", server_cid, server_pod.1.ns(), server_pod.0);
    call(&userspace, &renamed(&inv, "net2"), &config("server", Path::new("/unused")), None).unwrap();
    assert!(!shown.exists(), "the shown socket is unmounted and removed");
    for _ in 0..2 {
        for (name, netns, _, cid) in &pods {
            call(
                &userspace,
                &renamed(&invocation("DEL", cid, netns.ns(), name), "net1"),
                &config("client", Path::new("/unused")),
                None,
            )
            .unwrap();
        }
    }
    assert!(ports(&lab).is_empty(), "no port left: {:?}", ports(&lab));
    let out = lab.vsctl().args(["list-br"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "", "the bridge Plexus made is gone");
    for (name, _, shared, _) in &pods {
        if *name == "tx" {
            assert!(!shared.exists(), "the directory ADD made is removed with its last socket");
            continue;
        }
        let left: Vec<PathBuf> = std::fs::read_dir(shared).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "{left:?}");
    }
    let records: Vec<PathBuf> = std::fs::read_dir(scratch.path().join("records"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(records.is_empty(), "{records:?}");
    let pending = std::fs::read_dir(scratch.path().join("records/pending")).unwrap().count();
    assert_eq!(pending, 0, "the deferred port was swept");
    let reserved = std::fs::read_dir(scratch.path().join("ipam/vhost-net"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("10."));
    assert_eq!(reserved.count(), 0);
}
