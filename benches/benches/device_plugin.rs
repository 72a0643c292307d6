//! The device plugin's hot paths: GetPreferredAllocation on a 256-VF pool (the allocator
//! itself, and the whole gRPC call), and an Allocate round trip over the unix socket.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use plexus_device_plugin::allocator;
use plexus_device_plugin::config::{DEFAULT_PREFIX, PoolConfig};
use plexus_device_plugin::plugin::{self, PluginOptions};
use plexus_device_plugin::pools;
use plexus_device_plugin::proto::deviceplugin::device_plugin_client::DevicePluginClient;
use plexus_device_plugin::proto::deviceplugin::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest,
    PreferredAllocationRequest,
};
use plexus_device_plugin::transport::Channel;
use plexus_hw::{SysfsRoot, discover};
use plexus_sim::kubelet::KubeletStandIn;
use plexus_sim::{ScratchNode, SimSpec};

const POOL: &str = r#"{"resourceList": [{"resourceName": "sriov", "selectors": {"vendors": ["8086"]}}]}"#;

/// 4 PFs x 64 VFs over 2 NUMA nodes, all in one pool.
fn node() -> ScratchNode {
    let spec = SimSpec { pfs: 4, numa_nodes: 2, vfs_per_pf: 64, vfio_vfs_per_pf: 0, cpus_per_node: 8 };
    match ScratchNode::tree("bench", &spec) {
        Ok(node) => node,
        Err(e) => panic!("cannot build the simulated node: {e}"),
    }
}

fn config() -> PoolConfig {
    match PoolConfig::parse(POOL, "bench", DEFAULT_PREFIX) {
        Ok(config) => config,
        Err(e) => panic!("{e}"),
    }
}

fn preferred_allocation(c: &mut Criterion) {
    let bench = node();
    let Ok(found) = discover(&SysfsRoot::new(bench.root())) else { panic!("discovery failed") };
    let devices = pools::assign(&config(), &found, &Default::default()).pools.remove(0);
    assert_eq!(devices.len(), 256);
    let available: Vec<String> = devices.iter().map(|d| d.id()).collect();
    let mut group = c.benchmark_group("GetPreferredAllocation, 256-VF pool");
    for size in [1usize, 4, 16] {
        group.bench_function(format!("allocator, {size} of 256"), |b| {
            b.iter(|| allocator::preferred(&devices, &found.numa, black_box(&available), &[], size))
        });
    }
    let must = vec![available[200].clone()];
    group.bench_function("allocator, 4 of 256 with one must-include", |b| {
        b.iter(|| allocator::preferred(&devices, &found.numa, black_box(&available), &must, 4))
    });
    group.finish();
}

/// The runner on the simulated node, registered with a kubelet stand-in; returns a client and
/// what keeps it all alive.
struct Served {
    runtime: tokio::runtime::Runtime,
    client: DevicePluginClient<Channel>,
    ids: Vec<String>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _kubelet: KubeletStandIn,
    _node: ScratchNode,
}

fn served() -> Served {
    let node = node();
    let Ok(found) = discover(&SysfsRoot::new(node.root())) else { panic!("discovery failed") };
    let ids = pools::assign(&config(), &found, &Default::default())
        .pools
        .remove(0)
        .iter()
        .map(|d| d.id())
        .collect();
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    else {
        panic!("runtime")
    };
    let mut options = PluginOptions::new(SysfsRoot::new(node.root()));
    options.kubelet_dir = node.dir().join("kubelet");
    options.devinfo_dir = node.dir().join("devinfo");
    options.route_file = node.dir().join("none");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (kubelet, client) = runtime.block_on(async {
        let Ok(kubelet) = KubeletStandIn::start(&options.kubelet_dir).await else {
            panic!("kubelet stand-in")
        };
        tokio::spawn(plugin::run(config(), options, async move {
            let _ = stopped.await;
        }));
        let Some(registration) =
            kubelet.wait_for_registration("intel.com/sriov", 0, Duration::from_secs(10)).await
        else {
            panic!("no registration")
        };
        let Ok(client) = kubelet.plugin(&registration.endpoint).await else { panic!("connect") };
        (kubelet, client)
    });
    Served { runtime, client, ids, _stop: stop, _kubelet: kubelet, _node: node }
}

fn grpc_round_trips(c: &mut Criterion) {
    let mut served = served();
    let ids = served.ids.clone();
    let mut group = c.benchmark_group("device plugin over the unix socket");
    group.bench_function("GetPreferredAllocation, 4 of 256", |b| {
        b.iter(|| {
            let request = PreferredAllocationRequest {
                container_requests: vec![ContainerPreferredAllocationRequest {
                    available_device_i_ds: ids.clone(),
                    must_include_device_i_ds: Vec::new(),
                    allocation_size: 4,
                }],
            };
            let result = served.runtime.block_on(served.client.get_preferred_allocation(request));
            assert!(matches!(&result, Ok(r) if r.get_ref().container_responses[0].device_i_ds.len() == 4));
        })
    });
    group.bench_function("Allocate, 1 VF", |b| {
        b.iter(|| {
            let request = AllocateRequest {
                container_requests: vec![ContainerAllocateRequest { devices_ids: vec![ids[0].clone()] }],
            };
            let result = served.runtime.block_on(served.client.allocate(request));
            assert!(result.is_ok(), "{result:?}");
        })
    });
    group.finish();
}

/// From the device plugin's start (discovery, its sockets) to the kubelet holding its
/// registration: the window in which a restarting agent's devices are unhealthy to the
/// kubelet (docs/install.md).
fn start_to_registered(c: &mut Criterion) {
    let node = node();
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    else {
        panic!("runtime")
    };
    let kubelet_dir = node.dir().join("kubelet");
    let Ok(kubelet) = runtime.block_on(KubeletStandIn::start(&kubelet_dir)) else {
        panic!("kubelet stand-in")
    };
    let mut group = c.benchmark_group("device plugin start");
    group.sample_size(20);
    group.bench_function("start to registered, 256-VF pool", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let mut options = PluginOptions::new(SysfsRoot::new(node.root()));
                options.kubelet_dir = kubelet_dir.clone();
                options.devinfo_dir = node.dir().join("devinfo");
                options.route_file = node.dir().join("none");
                let seen = kubelet.registrations().len();
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let start = std::time::Instant::now();
                let plugin = runtime.spawn(plugin::run(config(), options, async move {
                    let _ = stopped.await;
                }));
                let registered = runtime.block_on(kubelet.wait_for_registration(
                    "intel.com/sriov",
                    seen,
                    Duration::from_secs(10),
                ));
                total += start.elapsed();
                assert!(registered.is_some(), "no registration");
                let _ = stop.send(());
                let _ = runtime.block_on(plugin);
            }
            total
        })
    });
    group.finish();
    runtime.block_on(kubelet.stop());
}

criterion_group!(benches, preferred_allocation, grpc_round_trips, start_to_registered);
criterion_main!(benches);
