//! One vhost-user attachment (client mode, on an existing netdev bridge) against a running
//! OVS-DPDK (root; Debian's openvswitch-switch-dpdk): the `userspace` delegate's ADD and DEL
//! (a record, one OVSDB transaction, the wait for ovs-vswitchd), against `ovs-vsctl add-port`
//! / `del-port` of the same port, which is what the userspace CNI plugin runs per call. Ours
//! divided by ovs-vsctl's is the figure. Each timed ADD is followed by an untimed DEL, and the
//! reverse; `cargo bench -p plexus-benches --bench userspace`.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use plexus_cni::delegate::{Request, call_in_process};
use plexus_cni::spec::{Command, Invocation};
use plexus_cni::userspace::{Userspace, port_name};
use plexus_hw::kernel::NetlinkKernel;
use plexus_sim::TempDir;
use plexus_sim::ovs::OvsLab;
use serde_json::{Value, json};

const BRIDGE: &str = "br-bench";

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("{what}: {e}")
}

struct Setup {
    lab: OvsLab,
    userspace: Userspace,
    dir: TempDir,
}

impl Setup {
    fn new() -> Self {
        if !OvsLab::available() {
            fail(
                "the bench needs OVS-DPDK",
                "openvswitch-switch-dpdk is not installed (hack/install-deps.sh)",
            );
        }
        let dir = plexus_sim::scratch("bench-ovs").unwrap_or_else(|e| fail("scratch dir", e));
        let lab = OvsLab::start(dir.path(), &format!("plexus-bench-ovs-{}", std::process::id()))
            .unwrap_or_else(|e| fail("starting OVS-DPDK (root needed)", e));
        let status = lab
            .vsctl()
            .args(["add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev"])
            .status()
            .unwrap_or_else(|e| fail("ovs-vsctl", e));
        assert!(status.success(), "ovs-vsctl add-br");
        std::fs::create_dir_all(dir.path().join("shared")).unwrap_or_else(|e| fail("shared dir", e));
        let userspace = Userspace {
            ovsdb_socket: lab.db_socket(),
            ovs_run_dir: lab.run_dir().to_owned(),
            run_dir: dir.path().join("run"),
            devinfo_dir: dir.path().join("devinfo"),
            ..Default::default()
        };
        Self { lab, userspace, dir }
    }

    fn conf(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "vhost-bench", "type": "userspace",
               "host": {"engine": "ovs-dpdk", "iftype": "vhostuser", "netType": "bridge",
                        "vhost": {"mode": "client"}, "bridge": {"bridgeName": BRIDGE}},
               "container": {"engine": "ovs-dpdk", "iftype": "vhostuser"},
               "sharedDir": self.dir.path().join("shared"), "dataDir": self.dir.path().join("records")})
    }

    fn invocation(command: Command) -> Invocation {
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some(command.as_str().to_owned()),
            "CNI_CONTAINERID" => Some("benchcontainer01".to_owned()),
            "CNI_NETNS" => Some("/proc/self/ns/net".to_owned()),
            "CNI_IFNAME" => Some("net1".to_owned()),
            "CNI_PATH" => Some("/usr/lib/cni".to_owned()),
            _ => None,
        };
        Invocation::from_env(env).unwrap_or_else(|e| fail("invocation", e))
    }

    /// One call of the delegate in-process (its kernel session opens nothing: it makes no
    /// kernel request).
    fn call(&self, invocation: &Invocation, conf: &Value) {
        let kernel = NetlinkKernel::new(None, None);
        let request = Request { invocation, config: conf, cluster: None, kernel: &kernel };
        call_in_process(&self.userspace, "userspace", &request)
            .unwrap_or_else(|e| fail(invocation.command.as_str(), e));
    }

    /// `iters` ADD+DEL cycles by the delegate: the time of the ADDs and of the DELs.
    fn plexus(&self, iters: u64) -> (Duration, Duration) {
        let (add, del, conf) = (Self::invocation(Command::Add), Self::invocation(Command::Del), self.conf());
        let (mut added, mut deleted) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..iters {
            let start = Instant::now();
            self.call(&add, &conf);
            added += start.elapsed();
            let start = Instant::now();
            self.call(&del, &conf);
            deleted += start.elapsed();
        }
        (added, deleted)
    }

    /// The same port by `ovs-vsctl`, as the userspace CNI plugin adds and deletes it.
    fn vsctl(&self, iters: u64) -> (Duration, Duration) {
        let port = port_name("benchcontainer01", "net1");
        let socket = self.dir.path().join("shared").join(&port);
        let run = |args: &[&str]| {
            let status = self.lab.vsctl().args(args).status().unwrap_or_else(|e| fail("ovs-vsctl", e));
            assert!(status.success(), "ovs-vsctl {args:?}");
        };
        let path = format!("options:vhost-server-path={}", socket.display());
        let (mut added, mut deleted) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..iters {
            let start = Instant::now();
            run(&[
                "add-port",
                BRIDGE,
                &port,
                "--",
                "set",
                "Interface",
                &port,
                "type=dpdkvhostuserclient",
                &path,
            ]);
            added += start.elapsed();
            let start = Instant::now();
            run(&["del-port", BRIDGE, &port]);
            deleted += start.elapsed();
        }
        (added, deleted)
    }
}

fn userspace(c: &mut Criterion) {
    let setup = Setup::new();
    let mut group = c.benchmark_group("vhost-user port ADD");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4));
    group.bench_function("ovs-vsctl add-port", |b| b.iter_custom(|n| setup.vsctl(n).0));
    group.bench_function("plexus (OVSDB transact)", |b| b.iter_custom(|n| setup.plexus(n).0));
    group.finish();
    let mut group = c.benchmark_group("vhost-user port DEL");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4));
    group.bench_function("ovs-vsctl del-port", |b| b.iter_custom(|n| setup.vsctl(n).1));
    group.bench_function("plexus (OVSDB transact)", |b| b.iter_custom(|n| setup.plexus(n).1));
    group.finish();
    assert!(Path::new(&setup.lab.db_socket()).exists());
}

criterion_group!(benches, userspace);
criterion_main!(benches);
