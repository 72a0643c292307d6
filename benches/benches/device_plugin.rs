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
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
    PreferredAllocationRequest,
};
use plexus_device_plugin::transport::Channel;
use plexus_hw::events::EventSource;
use plexus_hw::{OperState, SysfsRoot, discover};
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
    node: ScratchNode,
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
    // The simulated node's events, as the agent listens to them; the safety-net poll never
    // comes within the bench.
    options.events = Some(EventSource::Socket(node.root().join(plexus_sim::EVENTS_SOCKET)));
    options.device_poll_interval = Duration::from_secs(600);
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
    Served { runtime, client, ids, _stop: stop, _kubelet: kubelet, node }
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

/// From a PF's link going down (or up) to the ListAndWatch message that marks its VFs unhealthy
/// (or healthy again): the kernel's event, a discovery of the 256-VF node, the pool's update.
fn device_change_to_list_and_watch(c: &mut Criterion) {
    let mut served = served();
    let Ok(stream) = served.runtime.block_on(served.client.list_and_watch(Empty {})) else {
        panic!("ListAndWatch")
    };
    let mut stream = stream.into_inner();
    let mut next = |want_unhealthy: bool| loop {
        let message = served
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), stream.message()).await });
        let Ok(Ok(Some(message))) = message else { panic!("no ListAndWatch update: {message:?}") };
        if message.devices.iter().any(|d| d.health == "Unhealthy") == want_unhealthy {
            return;
        }
    };
    next(false);
    // PF 1's link: down or not, and the time a change took to reach ListAndWatch.
    let down = std::cell::Cell::new(false);
    let mut change = |to_down: bool| {
        let start = std::time::Instant::now();
        let state = if to_down { OperState::Down } else { OperState::Up };
        assert!(served.node.set_pf_operstate(1, state).is_ok());
        next(to_down);
        down.set(to_down);
        start.elapsed()
    };
    let mut group = c.benchmark_group("device change to ListAndWatch, 256-VF pool");
    for (name, to_down) in [("PF link down", true), ("PF link up again", false)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    if down.get() == to_down {
                        // Back first, untimed.
                        change(!to_down);
                    }
                    total += change(to_down);
                }
                total
            })
        });
    }
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

criterion_group!(
    benches,
    preferred_allocation,
    grpc_round_trips,
    device_change_to_list_and_watch,
    start_to_registered
);
criterion_main!(benches);
