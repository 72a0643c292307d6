//! `plexus-agent demo`: the whole node on one machine, with nothing but the built binaries.
//!
//! It builds a simulated node (fake sysfs, veth ends standing in for VF netdevs, two NUMA
//! nodes), runs `plexus-agent run` as its own process against a kubelet stand-in and an
//! API-server stand-in (so the agent runs as on a node: device plugin registration, watches,
//! status patches), then plays the kubelet and the runtime for a few pods: the device plugin
//! allocates each pod's VFs, and the `plexus` binary attaches them through the agent. It prints
//! what each pod got and where its VFs sit, the agent's per-phase latency, then deletes
//! everything and checks that nothing is left behind.

mod report;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plexus_device_plugin::proto::deviceplugin::device_plugin_client::DevicePluginClient;
use plexus_device_plugin::proto::deviceplugin::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
    PreferredAllocationRequest,
};
use plexus_hw::netns::Netns;
use plexus_hw::vf::VfState;
use plexus_sim::apiserver::ApiStandIn;
use plexus_sim::kubelet::KubeletStandIn;
use plexus_sim::{SimNode, SimSpec, TempDir};
use serde_json::{Value, json};
use tonic::transport::Channel;

const RESOURCE: &str = "intel.com/sriov_net";
const NODE: &str = "plexus-demo";
const POOLS: &str = r#"{"resourceList": [
  {"resourceName": "sriov_net", "selectors": {"drivers": ["iavf"]}},
  {"resourceName": "sriov_dpdk", "selectors": {"drivers": ["vfio-pci"]}}
]}"#;

/// The demo's pods: name and the networks of its `k8s.v1.cni.cncf.io/networks`. Each pod also
/// gets its eth0 from a VF (the cluster network is an SR-IOV NAD too: no other plugin needed).
const PODS: [(&str, &[&str]); 3] =
    [("web", &["data"]), ("router", &["data", "control"]), ("db", &["control"])];

/// The networks: namespace, name, VLAN, subnet.
const NETWORKS: [(&str, &str, u16, &str); 3] = [
    ("kube-system", "sriov-eth0", 0, "10.10.0.0/24"),
    ("demo", "data", 100, "10.20.0.0/24"),
    ("demo", "control", 200, "10.30.0.0/24"),
];

/// A pod's sandbox: its netns, its container ID and its VFs.
struct Pod {
    name: &'static str,
    netns: Option<Netns>,
    container_id: String,
    vfs: Vec<String>,
}

/// Everything the demo makes; dropping it undoes what is still there, so a failed demo
/// leaves nothing either.
struct Demo {
    // Fields drop in order: the agent and the pods before the node, the scratch dir last.
    agent: Option<Child>,
    pods: Vec<Pod>,
    node: Option<SimNode>,
    /// The node's VF settings and links before any pod.
    initial: (Vec<Vec<VfState>>, BTreeSet<String>),
    plexus: PathBuf,
    work: TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        for pod in &mut self.pods {
            if let Some(netns) = pod.netns.take() {
                let _ = netns.delete();
            }
        }
    }
}

/// The `plexus` binary installed next to this one (and the `plexus-standalone` it becomes
/// without the agent).
fn plexus_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding plexus-agent's own path")?;
    let plexus = me.with_file_name("plexus");
    for binary in [&plexus, &plexus.with_file_name(plexus_cni::forward::STANDALONE)] {
        if !binary.is_file() {
            bail!(
                "{} not found: build it with `bash hack/build-plexus.sh --simulated-node` (the demo runs it as \
                 the runtime would)",
                binary.display()
            );
        }
    }
    Ok(plexus)
}

/// Runs the demo; an error names the step that failed.
pub fn run() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo needs root: it makes network namespaces and links");
    }
    let before = report::Snapshot::take()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let work = plexus_sim::scratch("demo").context("making the demo's directory")?;
    let work_path = work.path().to_owned();
    let mut demo = Demo {
        agent: None,
        pods: Vec::new(),
        node: None,
        initial: Default::default(),
        plexus: plexus_binary()?,
        work,
    };
    demo.node_up(&runtime)?;
    let (kubelet, api) = runtime.block_on(async {
        let kubelet =
            KubeletStandIn::start(&demo.dir("kubelet")).await.context("starting the kubelet stand-in")?;
        let api = ApiStandIn::start().await.context("starting the API-server stand-in")?;
        anyhow::Ok((kubelet, api))
    })?;
    demo.agent_up(&api)?;
    let mut plugin = runtime.block_on(registered(&kubelet)).map_err(|e| demo.with_agent_log(e))?;
    let mut free = runtime.block_on(async {
        let mut stream = plugin.list_and_watch(Empty {}).await?.into_inner();
        let devices = stream.message().await?.context("the device plugin's first list")?.devices;
        anyhow::Ok(devices.into_iter().map(|d| d.id).collect::<Vec<_>>())
    })?;
    println!("   the agent offers {} VFs as {RESOURCE}", free.len());
    demo.networks(&api);

    for (name, networks) in PODS {
        let vfs = runtime.block_on(allocate(&mut plugin, &kubelet, &free, name, networks.len() + 1))?;
        free.retain(|id| !vfs.contains(id));
        demo.add_pod(&api, name, networks, vfs)?;
    }
    report::print_phases(&demo.dir("run"), "ADD")?;
    demo.delete_pods()?;
    report::print_phases(&demo.dir("run"), "DEL")?;
    demo.check_restored()?;
    demo.agent_down()?;
    runtime.block_on(kubelet.stop());
    drop(runtime);
    if let Some(node) = demo.node.take() {
        node.destroy().context("removing the simulated node")?;
    }
    drop(demo);
    report::nothing_left_behind(&before, &work_path)
}

/// Waits for the agent to register the pool with the kubelet stand-in; a client to it.
async fn registered(kubelet: &KubeletStandIn) -> anyhow::Result<DevicePluginClient<Channel>> {
    let registration = kubelet
        .wait_for_registration(RESOURCE, 0, Duration::from_secs(20))
        .await
        .with_context(|| format!("the agent did not register {RESOURCE} within 20 s"))?;
    println!("   registered with the kubelet: {} at {}", registration.resource_name, registration.endpoint);
    Ok(kubelet.plugin(&registration.endpoint).await?)
}

/// What the kubelet does for a pod asking for `count` VFs: the plugin's preferred allocation,
/// then Allocate, then the assignment PodResources reports.
async fn allocate(
    plugin: &mut DevicePluginClient<Channel>,
    kubelet: &KubeletStandIn,
    free: &[String],
    pod: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let request = PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: free.to_vec(),
            must_include_device_i_ds: Vec::new(),
            allocation_size: i32::try_from(count)?,
        }],
    };
    let preferred = plugin.get_preferred_allocation(request).await?.into_inner();
    let ids = preferred.container_responses.first().map(|r| r.device_i_ds.clone()).unwrap_or_default();
    if ids.len() != count {
        bail!("pod {pod}: the device plugin preferred {} VFs of {count}", ids.len());
    }
    let request =
        AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_ids: ids.clone() }] };
    plugin.allocate(request).await?;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    kubelet.pod_resources().assign("demo", pod, "app", RESOURCE, &refs);
    Ok(ids)
}

impl Demo {
    fn dir(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `error`, with what the agent logged.
    fn with_agent_log(&self, error: anyhow::Error) -> anyhow::Error {
        let log = std::fs::read_to_string(self.dir("agent.log")).unwrap_or_default();
        error.context(format!("the agent's log:\n{log}"))
    }

    fn node(&self) -> anyhow::Result<&SimNode> {
        self.node.as_ref().context("the simulated node is gone")
    }

    fn node_up(&mut self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        let spec = SimSpec { pfs: 4, numa_nodes: 2, vfs_per_pf: 4, vfio_vfs_per_pf: 1, cpus_per_node: 2 };
        let netns = format!("plexus-demo-{}", std::process::id());
        println!(
            "== a simulated node: {} PFs on {} NUMA nodes, {} VFs each ({} bound to vfio-pci), veth links in namespace {netns}",
            spec.pfs, spec.numa_nodes, spec.vfs_per_pf, spec.vfio_vfs_per_pf
        );
        let mut node = SimNode::build(self.dir("sys"), &spec).context("building the simulated node")?;
        runtime.block_on(node.create_netdevs(&netns)).context("making the VF links")?;
        self.node = Some(node);
        self.initial = report::node_state(self.node()?)?;
        crate::discover::run(self.node()?.root(), crate::table::Output::Table)?;
        Ok(())
    }

    fn agent_up(&mut self, api: &ApiStandIn) -> anyhow::Result<()> {
        std::fs::write(self.dir("pools.json"), POOLS).context("writing the pool config")?;
        std::fs::write(self.dir("kubeconfig"), api.kubeconfig()).context("writing the kubeconfig")?;
        let log = std::fs::File::create(self.dir("agent.log")).context("creating the agent's log")?;
        let root = self.node()?.root().to_owned();
        let me = std::env::current_exe()?;
        let mut command = Command::new(&me);
        command
            .args(["run", "--route-file", "/dev/null", "--node-name", NODE, "--poll-interval-ms", "50"])
            .arg("--pools")
            .arg(self.dir("pools.json"))
            .arg("--sysfs-root")
            .arg(&root)
            .arg("--simulated-node")
            .arg("--kubelet-dir")
            .arg(self.dir("kubelet"))
            .arg("--devinfo-dir")
            .arg(self.dir("devinfo"))
            .arg("--socket-dir")
            .arg(self.dir("run"))
            .arg("--kubeconfig")
            .arg(self.dir("kubeconfig"))
            .env_remove("PLEXUS_SYSFS_ROOT")
            .stdout(Stdio::null())
            .stderr(log);
        println!();
        println!("== the agent: plexus-agent run, against a kubelet stand-in and an API-server stand-in");
        println!(
            "   pools (the SR-IOV device plugin's format): {}",
            POOLS.split_whitespace().collect::<String>()
        );
        self.agent = Some(command.spawn().with_context(|| format!("starting {}", me.display()))?);
        Ok(())
    }

    /// The NADs, in the API-server stand-in.
    fn networks(&self, api: &ApiStandIn) {
        for (namespace, name, vlan, subnet) in NETWORKS {
            let mut config = json!({"cniVersion": "1.0.0", "type": "sriov", "spoofchk": "off",
                                    "dataDir": self.dir("sriov"),
                                    "ipam": {"type": "host-local", "subnet": subnet, "dataDir": self.dir("ipam")}});
            if vlan > 0 {
                config["vlan"] = json!(vlan);
            }
            api.nad(namespace, name, json!({"k8s.v1.cni.cncf.io/resourceName": RESOURCE}), &config);
            println!(
                "   NetworkAttachmentDefinition {namespace}/{name}: sriov, vlan {vlan}, {subnet}, {RESOURCE}"
            );
        }
    }

    /// The runtime's side of CNI: `plexus` with the CNI environment and the node's config.
    fn cni(&self, command: &str, pod: &Pod) -> anyhow::Result<Value> {
        let config = json!({"cniVersion": "1.0.0", "name": "plexus-cni-network", "type": "plexus",
                            "clusterNetwork": "sriov-eth0", "daemonSocketDir": self.dir("run"),
                            "cniDir": self.dir("cache"), "confDir": self.dir("net.d")});
        let netns = pod.netns.as_ref().map(|n| n.path().display().to_string()).unwrap_or_default();
        let mut child = Command::new(&self.plexus)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME={};K8S_POD_UID=uid-{}",
                    pod.name, pod.name
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.plexus.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin.write_all(config.to_string().as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() {
            bail!("CNI {command} of pod {}: {result}", pod.name);
        }
        Ok(result)
    }

    fn add_pod(
        &mut self,
        api: &ApiStandIn,
        name: &'static str,
        networks: &[&str],
        vfs: Vec<String>,
    ) -> anyhow::Result<()> {
        println!();
        let selection = networks.join(", ");
        println!("== pod demo/{name}: networks \"{selection}\"; the kubelet allocated {}", vfs.join(", "));
        api.pod("demo", name, NODE, json!({"k8s.v1.cni.cncf.io/networks": selection}));
        let netns = Netns::create(&format!("plexus-demo-pod-{name}-{}", std::process::id()))
            .with_context(|| format!("making pod {name}'s namespace"))?;
        self.pods.push(Pod { name, netns: Some(netns), container_id: format!("demo-{name}-0001"), vfs });
        let pod = self.pods.last().context("the pod just made")?;
        let start = Instant::now();
        self.cni("ADD", pod)?;
        println!("   CNI ADD (plexus -> agent): {:.1} ms", start.elapsed().as_secs_f64() * 1000.0);
        let object = api.object(&format!("/api/v1/namespaces/demo/pods/{name}")).context("the pod object")?;
        let status =
            object["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap_or("[]");
        let status: Value = serde_json::from_str(status).context("the pod's network-status")?;
        report::print_pod(self.node()?.root(), &status, &pod.vfs)
    }

    fn delete_pods(&mut self) -> anyhow::Result<()> {
        println!();
        println!("== deleting the pods (CNI DEL through the agent, then the sandbox)");
        for i in 0..self.pods.len() {
            let start = Instant::now();
            self.cni("DEL", &self.pods[i])?;
            let pod = &mut self.pods[i];
            if let Some(netns) = pod.netns.take() {
                netns.delete().with_context(|| format!("deleting pod {}'s namespace", pod.name))?;
            }
            println!("   demo/{}: {:.1} ms", pod.name, start.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    }

    /// Every VF is back on the node, under its name, with the settings it had.
    fn check_restored(&self) -> anyhow::Result<()> {
        report::check_vfs_restored(self.node()?, &self.initial)?;
        let records: Vec<String> =
            plexus_sim::files_in(&self.dir("sriov"))?.into_iter().filter(|f| f.ends_with(".json")).collect();
        let cached = plexus_sim::files_in(&self.dir("cache"))?;
        if !records.is_empty() || !cached.is_empty() {
            bail!("left after DEL: SR-IOV records {records:?}, DEL cache entries {cached:?}");
        }
        let reserved: Vec<String> =
            plexus_sim::files_in(&self.dir("ipam"))?.into_iter().filter(|f| f.contains("/10.")).collect();
        if !reserved.is_empty() {
            bail!("addresses still reserved after DEL: {reserved:?}");
        }
        println!(
            "   every VF is back on the node under its name, with its VLAN, MAC and settings as before; no address reserved"
        );
        Ok(())
    }

    fn agent_down(&mut self) -> anyhow::Result<()> {
        let Some(agent) = self.agent.take() else { return Ok(()) };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).context("stopping the agent")?;
        let status = wait_with_timeout(agent, Duration::from_secs(20))?;
        if !status.success() {
            return Err(self.with_agent_log(anyhow::anyhow!("the agent exited with {status} on SIGTERM")));
        }
        println!("   the agent stopped on SIGTERM (exit 0)");
        Ok(())
    }
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the agent did not stop within {} s of SIGTERM", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
