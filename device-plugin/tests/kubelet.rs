//! The device plugin end to end: the runner on a simulated node, driven by the kubelet
//! stand-in over real unix sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of a test binary: a failed unwrap fails the test

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use plexus_device_plugin::config::{DEFAULT_PREFIX, PoolConfig};
use plexus_device_plugin::plugin::{self, PluginOptions};
use plexus_device_plugin::proto::deviceplugin::device_plugin_client::DevicePluginClient;
use plexus_device_plugin::proto::deviceplugin::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
    ListAndWatchResponse, PreferredAllocationRequest,
};
use plexus_hw::events::EventSource;
use plexus_hw::{OperState, SysfsRoot};
use plexus_sim::kubelet::KubeletStandIn;
use plexus_sim::{ScratchNode, SimSpec};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::Channel;

/// Two cards (4 PFs) over two NUMA nodes: PFs 0,1 on node 0, PFs 2,3 on node 1; 4 VFs each, the
/// last one of each PF bound to vfio-pci.
const POOLS: &str = r#"{"resourceList": [
    {"resourceName": "sriov_net", "selectors": {"drivers": ["iavf"]}},
    {"resourceName": "sriov_dpdk", "resourcePrefix": "example.com", "excludeTopology": true,
     "selectors": {"drivers": ["vfio-pci"]}, "additionalInfo": {"*": {"owner": "dpdk"}}}
]}"#;
const NET: &str = "intel.com/sriov_net";
const DPDK: &str = "example.com/sriov_dpdk";
const WAIT: Duration = Duration::from_secs(5);

struct Harness {
    node: ScratchNode,
    kubelet: KubeletStandIn,
    kubelet_dir: PathBuf,
    devinfo_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    plugin: Option<JoinHandle<()>>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(POOLS, &[NET, DPDK], |_| {}).await
    }

    /// With `pools` on a node that `prepare` changed first; waits for `resources` to register.
    async fn start_with(pools: &str, resources: &[&str], prepare: impl FnOnce(&ScratchNode)) -> Self {
        let spec = SimSpec { pfs: 4, numa_nodes: 2, vfs_per_pf: 4, vfio_vfs_per_pf: 1, cpus_per_node: 2 };
        let node = ScratchNode::tree("dp-e2e", &spec).unwrap();
        prepare(&node);
        let kubelet_dir = node.dir().join("kubelet");
        let devinfo_dir = node.dir().join("devinfo");
        let kubelet = KubeletStandIn::start(&kubelet_dir).await.unwrap();
        let config = PoolConfig::parse(pools, "pools.json", DEFAULT_PREFIX).unwrap();
        let mut options = PluginOptions::new(SysfsRoot::new(node.root()));
        options.kubelet_dir = kubelet_dir.clone();
        options.devinfo_dir = devinfo_dir.clone();
        options.route_file = node.dir().join("no-routes");
        // The simulated node's events, as the agent listens to them; no safety-net poll within
        // a test, so what changes is known to have come by an event.
        options.events = Some(EventSource::Socket(node.root().join(plexus_sim::EVENTS_SOCKET)));
        options.device_poll_interval = Duration::from_secs(600);
        let (stop, stopped) = oneshot::channel::<()>();
        let plugin = tokio::spawn(async move {
            plugin::run(config, options, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let harness =
            Self { node, kubelet, kubelet_dir, devinfo_dir, stop: Some(stop), plugin: Some(plugin) };
        for resource in resources {
            assert!(
                harness.kubelet.wait_for_registration(resource, 0, WAIT).await.is_some(),
                "{resource} registers"
            );
        }
        harness
    }

    async fn client(&self, resource: &str) -> DevicePluginClient<Channel> {
        let registration =
            self.kubelet.registrations().into_iter().rev().find(|r| r.resource_name == resource).unwrap();
        self.kubelet.plugin(&registration.endpoint).await.unwrap()
    }

    /// Stops the plugin and the kubelet; the returned node and its directory keep what is left.
    async fn stop(mut self) -> ScratchNode {
        let _ = self.stop.take().unwrap().send(());
        self.plugin.take().unwrap().await.unwrap();
        self.kubelet.stop().await;
        self.node
    }
}

async fn watch(client: &mut DevicePluginClient<Channel>) -> Streaming<ListAndWatchResponse> {
    client.list_and_watch(Empty {}).await.unwrap().into_inner()
}

/// The next ListAndWatch message that satisfies `want`, and how long it took.
async fn next_matching(
    stream: &mut Streaming<ListAndWatchResponse>,
    want: impl Fn(&ListAndWatchResponse) -> bool,
) -> (ListAndWatchResponse, Duration) {
    let start = Instant::now();
    loop {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("a ListAndWatch update")
            .unwrap()
            .unwrap();
        if want(&message) {
            return (message, start.elapsed());
        }
    }
}

fn ids(message: &ListAndWatchResponse) -> Vec<&str> {
    message.devices.iter().map(|d| d.id.as_str()).collect()
}

async fn preferred(
    client: &mut DevicePluginClient<Channel>,
    available: &[&str],
    must: &[&str],
    size: i32,
) -> Result<Vec<String>, tonic::Status> {
    let request = PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: available.iter().map(|s| (*s).to_owned()).collect(),
            must_include_device_i_ds: must.iter().map(|s| (*s).to_owned()).collect(),
            allocation_size: size,
        }],
    };
    let response = client.get_preferred_allocation(request).await?.into_inner();
    Ok(response.container_responses[0].device_i_ds.clone())
}

#[tokio::test]
async fn registers_every_pool_and_lists_devices_with_numa_topology() {
    let h = Harness::start().await;
    let registrations = h.kubelet.registrations();
    for r in &registrations {
        assert_eq!(r.version, "v1beta1");
        assert!(r.options.as_ref().unwrap().get_preferred_allocation_available);
        let socket = h.kubelet_dir.join("device-plugins").join(&r.endpoint);
        assert_eq!(
            std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            socket.display()
        );
    }
    let endpoints: Vec<&str> = registrations.iter().map(|r| r.endpoint.as_str()).collect();
    assert!(endpoints.contains(&"plexus-intel.com-sriov_net.sock"), "{endpoints:?}");

    let mut net = h.client(NET).await;
    assert!(
        net.get_device_plugin_options(Empty {})
            .await
            .unwrap()
            .into_inner()
            .get_preferred_allocation_available
    );
    let first = watch(&mut net).await.message().await.unwrap().unwrap();
    assert_eq!(first.devices.len(), 12, "3 netdev VFs on each of 4 PFs");
    for device in &first.devices {
        assert_eq!(device.health, "Healthy");
        let node = device.topology.as_ref().unwrap().nodes[0].id;
        let expected = if device.id.starts_with("0000:20:") { 0 } else { 1 };
        assert_eq!(node, expected, "{}", device.id);
    }
    let mut dpdk = h.client(DPDK).await;
    let first = watch(&mut dpdk).await.message().await.unwrap().unwrap();
    assert_eq!(ids(&first), ["0000:20:02.3", "0000:20:03.3", "0000:30:02.3", "0000:30:03.3"]);
    assert!(first.devices.iter().all(|d| d.topology.is_none()), "excludeTopology");
    let _ = h.stop().await;
}

#[tokio::test]
async fn preferred_allocation_over_grpc() {
    let h = Harness::start().await;
    let mut net = h.client(NET).await;
    let all: Vec<String> = ids(&watch(&mut net).await.message().await.unwrap().unwrap())
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();

    // Two VFs: one NUMA node, two different PFs.
    let two = preferred(&mut net, &all, &[], 2).await.unwrap();
    assert_eq!(two, ["0000:20:02.0", "0000:20:03.0"]);
    // Must-include on node 1 anchors the rest there, on the other PF first.
    let got = preferred(&mut net, &all, &["0000:30:02.1"], 3).await.unwrap();
    assert_eq!(got, ["0000:30:02.1", "0000:30:03.0", "0000:30:02.0"]);
    // Node 0 has only 2 left: 4 VFs come from node 1 alone.
    let available: Vec<&str> = all.iter().copied().filter(|id| !id.starts_with("0000:20:02")).collect();
    let got = preferred(&mut net, &available, &[], 4).await.unwrap();
    assert!(got.iter().all(|id| id.starts_with("0000:30:")), "{got:?}");
    // More than one node has: across nodes, node 1 (more free) first.
    let got = preferred(&mut net, &available, &[], 8).await.unwrap();
    assert_eq!(got.len(), 8);
    assert!(
        got[..6].iter().all(|id| id.starts_with("0000:30:"))
            && got[6..].iter().all(|id| id.starts_with("0000:20:03"))
    );
    // Not enough: all there is.
    let got = preferred(&mut net, &all[..3], &[], 5).await.unwrap();
    assert_eq!(got.len(), 3);
    // A device of another pool is refused by name.
    let err = preferred(&mut net, &["0000:20:02.3"], &[], 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("0000:20:02.3"), "{}", err.message());
    let _ = h.stop().await;
}

#[tokio::test]
async fn allocate_gives_envs_device_nodes_and_device_info_files() {
    let h = Harness::start().await;
    let mut dpdk = h.client(DPDK).await;
    let request = AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: vec!["0000:20:02.3".into(), "0000:30:03.3".into()],
        }],
    };
    let response = dpdk.allocate(request).await.unwrap().into_inner();
    let container = &response.container_responses[0];
    assert_eq!(container.envs["PCIDEVICE_EXAMPLE_COM_SRIOV_DPDK"], "0000:20:02.3,0000:30:03.3");
    let info: Value = serde_json::from_str(&container.envs["PCIDEVICE_EXAMPLE_COM_SRIOV_DPDK_INFO"]).unwrap();
    let group = h.node.pfs()[0].vfs[3].iommu_group;
    assert_eq!(info["0000:20:02.3"]["vfio"]["dev-mount"], format!("/dev/vfio/{group}"));
    assert_eq!(info["0000:30:03.3"]["extra"]["owner"], "dpdk");
    let paths: Vec<&str> = container.devices.iter().map(|d| d.host_path.as_str()).collect();
    assert_eq!(paths.len(), 3);
    assert!(paths.contains(&"/dev/vfio/vfio") && paths.contains(&format!("/dev/vfio/{group}").as_str()));
    let file = h.devinfo_dir.join("dp/example.com-sriov_dpdk-0000:20:02.3-device.json");
    let content: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(content["pci"]["pci-address"], "0000:20:02.3");
    assert_eq!(content["pci"]["pf-pci-address"], "0000:20:00.0");

    let request = AllocateRequest {
        container_requests: vec![ContainerAllocateRequest { devices_ids: vec!["0000:20:02.0".into()] }],
    };
    let err = dpdk.allocate(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("0000:20:02.0"), "{}", err.message());
    let _ = h.stop().await;
}

#[tokio::test]
async fn an_rdma_pool_gives_the_vfs_character_devices_as_the_device_plugin_does() {
    // The shape of deployments/configmap.yaml's sriov_mlnx pool, and an isRdma pool.
    const RDMA: &str = "intel.com/sriov_rdma";
    const MLNX: &str = "intel.com/sriov_mlnx";
    let pools = r#"{"resourceList": [
        {"resourceName": "sriov_rdma", "selectors": {"pfNames": ["ens1f0"], "IsRdma": true}},
        {"resourceName": "sriov_mlnx", "selectors": {"pfNames": ["ens1f1"], "isRdma": false}}]}"#;
    let h = Harness::start_with(pools, &[RDMA, MLNX], |node| {
        for (pf, n) in [(0, 0), (1, 4)] {
            for (i, vf) in node.pfs()[pf].vfs.iter().enumerate().take(2) {
                let i = u32::try_from(i).unwrap();
                node.add_rdma(vf.address, &format!("mlx5_{}", n + i), n + i).unwrap();
            }
        }
    })
    .await;
    let vf = h.node.pfs()[0].vfs[1].address.to_string();
    let mut rdma = h.client(RDMA).await;
    let request = AllocateRequest {
        container_requests: vec![ContainerAllocateRequest { devices_ids: vec![vf.clone()] }],
    };
    let response = rdma.allocate(request).await.unwrap().into_inner();
    let container = &response.container_responses[0];
    let paths: Vec<&str> = container.devices.iter().map(|d| d.host_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/dev/infiniband/issm1",
            "/dev/infiniband/rdma_cm",
            "/dev/infiniband/umad1",
            "/dev/infiniband/uverbs1"
        ]
    );
    let info: Value = serde_json::from_str(&container.envs["PCIDEVICE_INTEL_COM_SRIOV_RDMA_INFO"]).unwrap();
    assert_eq!(
        info[&vf]["rdma"],
        serde_json::json!({"uverbs": "/dev/infiniband/uverbs1", "umad": "/dev/infiniband/umad1",
                           "issm": "/dev/infiniband/issm1", "rdma_cm": "/dev/infiniband/rdma_cm",
                           "rdma_dev": "mlx5_1"})
    );
    let file = h.devinfo_dir.join(format!("dp/intel.com-sriov_rdma-{vf}-device.json"));
    let content: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(content["pci"]["rdma-device"], "mlx5_1");

    // isRdma false: every VF of the PF, RDMA or not, and no RDMA devices for the container.
    let mut mlnx = h.client(MLNX).await;
    let mut stream = watch(&mut mlnx).await;
    let listed = stream.message().await.unwrap().unwrap();
    assert_eq!(listed.devices.len(), h.node.pfs()[1].vfs.len(), "{listed:?}");
    let rdma_vf = h.node.pfs()[1].vfs[0].address.to_string();
    let request = AllocateRequest {
        container_requests: vec![ContainerAllocateRequest { devices_ids: vec![rdma_vf.clone()] }],
    };
    let response = mlnx.allocate(request).await.unwrap().into_inner();
    let container = &response.container_responses[0];
    assert!(container.devices.is_empty(), "{:?}", container.devices);
    let info: Value = serde_json::from_str(&container.envs["PCIDEVICE_INTEL_COM_SRIOV_MLNX_INFO"]).unwrap();
    assert!(info[&rdma_vf].get("rdma").is_none(), "{info}");
    let _ = h.stop().await;
}

#[tokio::test]
async fn a_pf_going_down_makes_its_vfs_unhealthy_at_once() {
    let h = Harness::start().await;
    let mut net = h.client(NET).await;
    let mut stream = watch(&mut net).await;
    stream.message().await.unwrap().unwrap();

    h.node.set_pf_operstate(2, OperState::Down).unwrap();
    let (message, delay) =
        next_matching(&mut stream, |m| m.devices.iter().any(|d| d.health == "Unhealthy")).await;
    println!("PF down reached ListAndWatch after {delay:?}");
    // An order of magnitude (the bench has the figure): an event, not a poll tick.
    assert!(delay < Duration::from_millis(500), "took {delay:?}");
    let unhealthy: Vec<&str> =
        message.devices.iter().filter(|d| d.health == "Unhealthy").map(|d| d.id.as_str()).collect();
    assert_eq!(unhealthy, ["0000:30:02.0", "0000:30:02.1", "0000:30:02.2"]);

    h.node.set_pf_operstate(2, OperState::Up).unwrap();
    let (_, delay) = next_matching(&mut stream, |m| m.devices.iter().all(|d| d.health == "Healthy")).await;
    assert!(delay < Duration::from_millis(500), "took {delay:?}");
    let _ = h.stop().await;
}

#[tokio::test]
async fn a_vf_count_change_is_followed_without_a_restart() {
    let mut h = Harness::start().await;
    let mut net = h.client(NET).await;
    let mut stream = watch(&mut net).await;
    assert_eq!(stream.message().await.unwrap().unwrap().devices.len(), 12);

    h.node.set_num_vfs(1, 2).unwrap();
    let (message, delay) = next_matching(&mut stream, |m| m.devices.len() != 12).await;
    println!("sriov_numvfs change reached ListAndWatch after {delay:?}");
    assert!(delay < Duration::from_millis(500), "took {delay:?}");
    assert_eq!(message.devices.len(), 11, "PF 1 keeps VFs 0 and 1: its netdev VF 2 is gone");
    assert!(ids(&message).contains(&"0000:20:03.1") && !ids(&message).contains(&"0000:20:03.2"));

    h.node.set_num_vfs(1, 4).unwrap();
    let (message, _) = next_matching(&mut stream, |m| m.devices.len() == 12).await;
    assert!(message.devices.iter().all(|d| d.health == "Healthy"));
    let _ = h.stop().await;
}

#[tokio::test]
async fn a_vanished_vf_stays_listed_as_unhealthy() {
    let h = Harness::start().await;
    let mut net = h.client(NET).await;
    let mut stream = watch(&mut net).await;
    stream.message().await.unwrap().unwrap();
    // The device breaks while its PF still has it (sriov_numvfs unchanged).
    let vf = h.node.pfs()[3].vfs[0].address;
    std::fs::write(h.node.device_dir(vf).join("uevent"), "PCI_CLASS=20000\nPCI_ID=garbage\n").unwrap();
    std::fs::remove_file(h.node.root().join("bus/pci/devices").join(vf.to_string())).unwrap();
    h.node.pci_event("remove", vf);
    let (message, _) =
        next_matching(&mut stream, |m| m.devices.iter().any(|d| d.health == "Unhealthy")).await;
    let device = message.devices.iter().find(|d| d.id == vf.to_string()).unwrap();
    assert_eq!(device.health, "Unhealthy");
    assert_eq!(message.devices.len(), 12);
    let _ = h.stop().await;
}

#[tokio::test]
async fn a_kubelet_restart_is_noticed_and_every_pool_registers_again() {
    let mut h = Harness::start().await;
    let before = h.kubelet.registrations().len();
    let start = Instant::now();
    h.kubelet.restart().await.unwrap();
    for resource in [NET, DPDK] {
        let again = h.kubelet.wait_for_registration(resource, before, WAIT).await;
        assert!(again.is_some(), "{resource} registers again");
    }
    let delay = start.elapsed();
    println!("kubelet restart: all pools registered again after {delay:?}");
    assert!(delay < Duration::from_secs(1), "took {delay:?}");
    // The new sockets serve.
    let mut net = h.client(NET).await;
    assert_eq!(watch(&mut net).await.message().await.unwrap().unwrap().devices.len(), 12);
    let _ = h.stop().await;
}

#[tokio::test]
async fn shutdown_removes_sockets_and_device_info_files() {
    let h = Harness::start().await;
    let mut net = h.client(NET).await;
    let request = AllocateRequest {
        container_requests: vec![ContainerAllocateRequest { devices_ids: vec!["0000:20:02.0".into()] }],
    };
    net.allocate(request).await.unwrap();
    let plugins_dir = h.kubelet_dir.join("device-plugins");
    let devinfo = h.devinfo_dir.join("dp");
    assert_eq!(std::fs::read_dir(&devinfo).unwrap().count(), 1);
    // A file of another plugin is left alone.
    std::fs::write(devinfo.join("other.com-x-0000:99:00.0-device.json"), "{}").unwrap();
    let mut stream = watch(&mut net).await;
    stream.message().await.unwrap().unwrap();
    let _scratch = h.stop().await;
    let left: Vec<String> = std::fs::read_dir(&plugins_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "sockets left: {left:?}");
    let left: Vec<String> = std::fs::read_dir(&devinfo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["other.com-x-0000:99:00.0-device.json"]);
    // The open ListAndWatch stream ended with the plugin.
    assert!(matches!(stream.message().await, Ok(None) | Err(_)));
}

#[tokio::test]
async fn pod_resources_answers_a_pods_devices_by_get_or_by_list() {
    use plexus_device_plugin::podresources::{SOCKET, pod_devices};
    let scratch = plexus_sim::scratch("podres").unwrap();
    let kubelet = KubeletStandIn::start(scratch.path()).await.unwrap();
    let api = kubelet.pod_resources();
    api.assign("tenant", "dpdk", "app", "intel.com/sriov_net", &["0000:20:02.3", "0000:20:02.1"]);
    api.assign("tenant", "dpdk", "sidecar", "intel.com/sriov_net", &["0000:30:02.0"]);
    api.assign("tenant", "dpdk", "app", "intel.com/other", &["x"]);
    api.assign("tenant", "web", "app", "intel.com/sriov_net", &["0000:20:02.7"]);
    let socket = scratch.path().join(SOCKET);
    let want = ["0000:20:02.1", "0000:20:02.3", "0000:30:02.0"];
    // A kubelet up to 1.33 (the stand-in's default): Get answers Unknown, List is asked.
    assert_eq!(pod_devices(&socket, "tenant", "dpdk", "intel.com/sriov_net").await.unwrap(), want);
    assert!(pod_devices(&socket, "tenant", "gone", "intel.com/sriov_net").await.unwrap().is_empty());
    // With the Get gate on (1.34 and later): the same answers from Get; a pod the kubelet
    // does not know (NotFound) has no devices.
    api.set_get_supported(true);
    assert_eq!(pod_devices(&socket, "tenant", "dpdk", "intel.com/sriov_net").await.unwrap(), want);
    assert!(pod_devices(&socket, "tenant", "gone", "intel.com/sriov_net").await.unwrap().is_empty());
    let err = pod_devices(&scratch.path().join("nothing.sock"), "tenant", "dpdk", "r").await.unwrap_err();
    assert!(err.to_string().contains("nothing.sock"), "{err}");
    kubelet.stop().await;
}

#[tokio::test]
async fn pod_resources_gives_the_devices_of_a_pods_dra_claims() {
    // A kubelet with DRA reports each claim prepared for a container, with its CDI devices:
    // a NAD's resourceName finds them by claim name, by driver, or by CDI kind.
    use plexus_device_plugin::podresources::{SOCKET, pod_devices};
    let scratch = plexus_sim::scratch("podres-dra").unwrap();
    let kubelet = KubeletStandIn::start(scratch.path()).await.unwrap();
    let api = kubelet.pod_resources();
    let cdi = ["sriovnetwork.example.com/vf=0000:20:02.2", "sriovnetwork.example.com/vf=0000:20:02.1"];
    api.assign_claim("tenant", "dra", "app", "app-vf-claim", "sriov.dra.example.com", &cdi);
    api.assign("tenant", "dra", "app", "intel.com/sriov_net", &["0000:30:02.0"]);
    let socket = scratch.path().join(SOCKET);
    let want = ["0000:20:02.1", "0000:20:02.2"];
    for resource in
        ["app-vf-claim", "tenant/app-vf-claim", "sriov.dra.example.com", "sriovnetwork.example.com/vf"]
    {
        assert_eq!(pod_devices(&socket, "tenant", "dra", resource).await.unwrap(), want, "{resource}");
    }
    assert_eq!(pod_devices(&socket, "tenant", "dra", "intel.com/sriov_net").await.unwrap(), ["0000:30:02.0"]);
    assert!(pod_devices(&socket, "tenant", "dra", "other-claim").await.unwrap().is_empty());
    kubelet.stop().await;
}
