//! One SR-IOV attachment, ADD and DEL with static IPAM, phase by phase, against a floor: the
//! same kernel requests sent back to back through the netlink layer alone (connect in the
//! host and pod namespaces, look the VF netdev up, move and rename it in one request, set
//! MAC/MTU/up, add the address and the route; and back). Ours divided by the floor is the
//! figure; on this VM the kernel's namespace move dominates both.
//!
//! On the simulated node by default (root needed: real links in namespaces). On bare metal,
//! `PLEXUS_BENCH_PF=<pf netdev>` attaches the first VF of that PF that has a netdev, through
//! the real VF control (its settings are restored after each iteration).
//!
//! Each timed ADD is followed by an untimed DEL and the reverse; `cargo bench -p
//! plexus-benches --bench sriov`. A first group measures what a kernel session saves: a step
//! that opened its own runtime and socket, against one that uses the call's.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use plexus_cni::delegate::Request;
use plexus_cni::spec::{Command, Invocation};
use plexus_cni::sriov::{Phases, Sriov};
use plexus_hw::kernel::{Kernel, Side};
use plexus_hw::netlink::Netlink;
use plexus_hw::netns::Netns;
use plexus_hw::{IfName, MacAddr, Node, PciAddress, SysfsRoot, discover};
use plexus_sim::{ScratchNode, SimSpec, TempDir};
use serde_json::{Value, json};

/// Where the attachment happens: the delegate, the VF, the host namespace, a pod.
struct Setup {
    node: Node,
    sriov: Sriov,
    vf: PciAddress,
    vf_netdev: IfName,
    /// On bare metal: the PF and VF index, whose settings the floor reads and sets over
    /// netlink as the real VF control does (the simulator keeps them in a file instead).
    real_vf: Option<(IfName, plexus_hw::VfIndex)>,
    pod: Netns,
    dir: TempDir,
    _sim: Option<ScratchNode>,
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("{what}: {e}")
}

impl Setup {
    fn new() -> Self {
        let dir = plexus_sim::scratch("bench-sriov").unwrap_or_else(|e| fail("scratch dir", e));
        let pod =
            Netns::create_unique("plexus-bench-sriov").unwrap_or_else(|e| fail("the bench needs root", e));
        let (node, sim) = match std::env::var("PLEXUS_BENCH_PF") {
            Ok(_) => (Node::real(SysfsRoot::default()), None),
            Err(_) => {
                let spec =
                    SimSpec { pfs: 2, numa_nodes: 1, vfs_per_pf: 4, vfio_vfs_per_pf: 0, cpus_per_node: 2 };
                let sim =
                    ScratchNode::with_links("bench-sim", &spec).unwrap_or_else(|e| fail("simulated node", e));
                (sim.hw_node(), Some(sim))
            }
        };
        let sysfs = node.sysfs().clone();
        let found = discover(&sysfs).unwrap_or_else(|e| fail("discovery", e));
        let wanted = std::env::var("PLEXUS_BENCH_PF").unwrap_or_else(|_| "ens1f0".into());
        let (vf, vf_netdev, index) = found
            .vfs()
            .filter(|(pf, _)| pf.function.netdev_name() == Some(wanted.as_str()))
            .find_map(|(_, vf)| Some((vf.function.address, vf.function.netdev.clone()?.name, vf.index)))
            .unwrap_or_else(|| fail("no VF with a netdev on PF", &wanted));
        let real_vf = match &sim {
            None => Some((wanted.parse().unwrap_or_else(|e| fail("PLEXUS_BENCH_PF", e)), index)),
            Some(_) => None,
        };
        let sriov = Sriov::new(node.clone());
        Self { node, sriov, vf, vf_netdev, real_vf, pod, dir, _sim: sim }
    }

    fn conf(&self, data_dir: &std::path::Path) -> Value {
        json!({"cniVersion": "1.0.0", "name": "sriov-bench", "type": "sriov", "deviceID": self.vf.to_string(),
               "dataDir": data_dir, "vlan": 100, "spoofchk": "off", "mac": "02:00:00:00:b0:01", "mtu": 1400,
               "ipam": {"type": "static", "addresses": [{"address": "10.99.0.2/24", "gateway": "10.99.0.1"}],
                        "routes": [{"dst": "10.98.0.0/16"}]}})
    }

    fn invocation(&self, command: Command) -> Invocation {
        let netns = self.pod.path().display().to_string();
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some(command.as_str().to_owned()),
            "CNI_CONTAINERID" => Some("bench".to_owned()),
            "CNI_NETNS" => Some(netns.clone()),
            "CNI_IFNAME" => Some("net1".to_owned()),
            "CNI_PATH" => Some("/usr/lib/cni".to_owned()),
            _ => None,
        };
        Invocation::from_env(env).unwrap_or_else(|e| fail("invocation", e))
    }

    /// One call of the delegate, on a kernel session of its own, as the meta-plugin makes it.
    fn call(&self, invocation: &Invocation, conf: &Value) -> (Result<(), plexus_cni::Error>, Phases) {
        let kernel = self.node.session(invocation.netns.as_deref());
        let request = Request { invocation, config: conf, cluster: None, kernel: &kernel };
        match invocation.command {
            Command::Add => {
                let (result, phases) = self.sriov.add_timed(&request);
                (result.map(drop), phases)
            }
            _ => self.sriov.del_timed(&request),
        }
    }

    /// `iters` ADD+DEL cycles; returns the summed phases of the ADDs and of the DELs, and
    /// the wall time of each.
    fn cycles(&self, conf: &Value, iters: u64) -> (Phases, Duration, Phases, Duration) {
        let (add_inv, del_inv) = (self.invocation(Command::Add), self.invocation(Command::Del));
        let mut adds = Phases::default();
        let mut dels = Phases::default();
        let (mut add_total, mut del_total) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..iters {
            let start = Instant::now();
            let (result, phases) = self.call(&add_inv, conf);
            add_total += start.elapsed();
            result.unwrap_or_else(|e| fail("ADD", e));
            adds.spans.extend(phases.spans);
            let start = Instant::now();
            let (result, phases) = self.call(&del_inv, conf);
            del_total += start.elapsed();
            result.unwrap_or_else(|e| fail("DEL", e));
            dels.spans.extend(phases.spans);
        }
        (adds, add_total, dels, del_total)
    }

    /// What a plugin call opens first: the host namespace and a socket in it and in the pod.
    async fn connect(&self) -> Result<(Netns, Netlink, Netlink), plexus_hw::netlink::NetlinkError> {
        let host = match self.node.host_netns() {
            Some(path) => Netns::open(path)?,
            None => Netns::current()?,
        };
        let host_nl = Netlink::connect(self.node.host_netns().map(|_| &host)).await?;
        let pod_nl = Netlink::connect(Some(&self.pod)).await?;
        Ok((host, host_nl, pod_nl))
    }

    /// The floor: the same kernel requests, back to back, through the netlink layer alone.
    /// Returns the time of the ADD half and of the DEL half.
    fn floor(&self, iters: u64) -> (Duration, Duration) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap_or_else(|e| fail("runtime", e));
        let pod_name: IfName = "net1".parse().unwrap_or_else(|e| fail("name", e));
        let mac: MacAddr = "02:00:00:00:b0:01".parse().unwrap_or_else(|e| fail("mac", e));
        let (mut add, mut del) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..iters {
            let result = runtime.block_on(async {
                let start = Instant::now();
                let (_host, host_nl, pod_nl) = self.connect().await?;
                let vf = host_nl
                    .link(&self.vf_netdev)
                    .await?
                    .unwrap_or_else(|| fail("VF netdev", &self.vf_netdev));
                let mut prior = None;
                if let Some((pf, index)) = &self.real_vf {
                    let states = host_nl.vf_states(pf).await?;
                    let state =
                        states.into_iter().find(|s| s.index == *index).unwrap_or_else(|| fail("VF", index));
                    let change = plexus_hw::vf::VfChange {
                        mac: Some(mac),
                        vlan: Some((100, 0, plexus_hw::vf::VlanProto::Dot1Q)),
                        spoofchk: Some(false),
                        ..Default::default()
                    };
                    host_nl.set_vf(pf, *index, &change).await?;
                    prior = Some(state);
                }
                host_nl.move_to(vf.index, &self.pod, Some(&pod_name)).await?;
                let index = pod_nl.link_index(&pod_name).await?;
                pod_nl.configure(index, Some(mac), Some(1400), true).await?;
                pod_nl.add_address(index, "10.99.0.2".parse().unwrap_or_else(|e| fail("ip", e)), 24).await?;
                let gateway = Some("10.99.0.1".parse().unwrap_or_else(|e| fail("ip", e)));
                pod_nl
                    .add_route("10.98.0.0".parse().unwrap_or_else(|e| fail("ip", e)), 16, gateway, index)
                    .await?;
                let added = start.elapsed();

                let start = Instant::now();
                let (host, host_nl, pod_nl) = self.connect().await?;
                let index = pod_nl.link_index(&pod_name).await?;
                pod_nl.move_to(index, &host, Some(&self.vf_netdev)).await?;
                let back = host_nl.link_index(&self.vf_netdev).await?;
                host_nl.configure(back, vf.mac, vf.mtu, vf.up).await?;
                if let (Some((pf, index)), Some(prior)) = (&self.real_vf, &prior) {
                    host_nl.set_vf(pf, *index, &prior.as_change()).await?;
                }
                Ok::<_, plexus_hw::netlink::NetlinkError>((added, start.elapsed()))
            });
            let (a, d) = result.unwrap_or_else(|e| fail("floor", e));
            add += a;
            del += d;
        }
        (add, del)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = Netns::delete_path(self.pod.path());
    }
}

const ADD_PHASES: [&str; 8] = ["lookup", "record", "vf", "move", "link", "ipam", "addresses", "result"];
const DEL_PHASES: [&str; 4] = ["ipam", "lookup", "restore", "record"];

/// What a step of a call paid when it opened its own runtime and socket (as before the kernel
/// session): a session made, its host socket opened, one link looked up; against the same
/// lookup on a session already open (what a step pays now).
fn kernel_session(c: &mut Criterion, setup: &Setup) {
    let mut group = c.benchmark_group("kernel session");
    group.sample_size(20).measurement_time(Duration::from_secs(3));
    group.bench_function("a new session: runtime, host socket, one link lookup", |b| {
        b.iter(|| {
            let kernel = setup.node.session(None);
            kernel.link(Side::Host, &setup.vf_netdev).unwrap_or_else(|e| fail("lookup", e))
        })
    });
    let kernel = setup.node.session(None);
    group.bench_function("one link lookup on an open session", |b| {
        b.iter(|| kernel.link(Side::Host, &setup.vf_netdev).unwrap_or_else(|e| fail("lookup", e)))
    });
    group.finish();
}

fn sriov(c: &mut Criterion) {
    let setup = Setup::new();
    kernel_session(c, &setup);
    let tmpfs = setup.conf(&setup.dir.path().join("records"));
    let disk_dir = PathBuf::from(format!("/var/tmp/plexus-bench-sriov-{}", std::process::id()));
    let disk = setup.conf(&disk_dir);

    let mut group = c.benchmark_group("sriov ADD, static IPAM");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4));
    group.bench_function("floor: the same netlink requests alone", |b| b.iter_custom(|n| setup.floor(n).0));
    group.bench_function("plexus (records on tmpfs)", |b| b.iter_custom(|n| setup.cycles(&tmpfs, n).1));
    group.bench_function("plexus (records on disk)", |b| b.iter_custom(|n| setup.cycles(&disk, n).1));
    for phase in ADD_PHASES {
        group.bench_function(format!("phase {phase}"), |b| {
            b.iter_custom(|n| setup.cycles(&tmpfs, n).0.get(phase))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sriov DEL, static IPAM");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4));
    group.bench_function("floor: the same netlink requests alone", |b| b.iter_custom(|n| setup.floor(n).1));
    group.bench_function("plexus (records on tmpfs)", |b| b.iter_custom(|n| setup.cycles(&tmpfs, n).3));
    for phase in DEL_PHASES {
        group.bench_function(format!("phase {phase}"), |b| {
            b.iter_custom(|n| setup.cycles(&tmpfs, n).2.get(phase))
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&disk_dir);
}

criterion_group!(benches, sriov);
criterion_main!(benches);
