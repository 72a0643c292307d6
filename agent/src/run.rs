//! `plexus-agent run`: the node agent in the foreground. It serves the device plugin for the
//! configured pools and the CNI socket the `plexus` binary forwards to, and exports setup
//! latency on `--metrics-addr`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use plexus_device_plugin::config::PoolConfig;
use plexus_device_plugin::plugin::{self, PluginOptions};
use plexus_hw::{Node, SysfsRoot};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::autoconf::AutoConfig;
use crate::cni_server::{self, CniService};
use crate::metrics::Metrics;

/// Where things are.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pools: crate::pools::PoolsArgs,
    /// The kubelet's directory (its device plugin sockets are in device-plugins/).
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// Where device-info files are written (<dir>/dp/).
    #[arg(long, default_value = plexus_device_plugin::allocate::DEFAULT_DEVINFO_DIR)]
    pub devinfo_dir: PathBuf,
    /// How often the node and the kubelet are checked, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub poll_interval_ms: u64,
    /// The directory of the CNI socket the `plexus` binary forwards calls to (the meta-plugin
    /// config's `daemonSocketDir`).
    #[arg(long, default_value = plexus_cni::paths::SOCKET_DIR)]
    pub socket_dir: PathBuf,
    /// At most this many CNI calls run at once; the others wait their turn.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_parallel_cni: u64,
    /// Serve Prometheus metrics (GET /metrics) on this address.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Kubernetes access; else in-cluster when run in a pod; else none (the device plugin and
    /// static networks only).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Write 00-plexus.conflist into --cni-conf-dir, wrapping the node's primary CNI config,
    /// and keep it there.
    #[arg(long)]
    pub auto_config: bool,
    /// The runtime's CNI config directory, for --auto-config.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// With --auto-config: write nothing until this file exists (the primary network's
    /// readiness), and make ADD wait for it.
    #[arg(long)]
    pub readiness_indicator_file: Option<PathBuf>,
    /// ovsdb-server's socket, for vhost-user attachments (`"type": "userspace"`).
    #[arg(long, default_value = plexus_cni::paths::OVSDB_SOCKET)]
    pub ovsdb_socket: PathBuf,
    /// ovs-vswitchd's run directory, where it makes server-mode vhost-user sockets.
    #[arg(long, default_value = plexus_cni::paths::OVS_RUN_DIR)]
    pub ovs_run_dir: PathBuf,
    /// This node's name, for the pod watch (default: $NODE_NAME, else the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// --sysfs-root holds a simulated node (`plexus-agent sim up`): VF settings go to the
    /// simulator's store and the node's namespace is the host (the demo and the tests).
    #[arg(long)]
    pub simulated_node: bool,
}

impl RunArgs {
    fn node_name(&self) -> String {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned())
            })
            .unwrap_or_default()
    }
}

/// The Kubernetes client: `--kubeconfig`, else in-cluster, else `None`.
async fn kube_client(args: &RunArgs) -> anyhow::Result<Option<kube::Client>> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            kube::Config::incluster().context("the in-cluster Kubernetes config")?
        }
        None => return Ok(None),
    };
    Ok(Some(kube::Client::try_from(config).context("making the Kubernetes client")?))
}

/// The node the agent works on: chosen here, once, from the flags.
fn node(args: &RunArgs) -> anyhow::Result<Node> {
    let root = &args.pools.sysfs_root;
    if args.simulated_node {
        return plexus_sim::load_node(root)
            .with_context(|| format!("--simulated-node: the simulated node at {}", root.display()));
    }
    Ok(Node::real(SysfsRoot::new(root)))
}

/// Runs until SIGTERM or SIGINT, then cleans up and returns.
pub fn run(args: &RunArgs, config: PoolConfig) -> anyhow::Result<()> {
    let node = node(args)?;
    let sysfs = node.sysfs().clone();
    let mut options = PluginOptions::new(sysfs.clone());
    options.kubelet_dir = args.kubelet_dir.clone();
    options.devinfo_dir = args.devinfo_dir.clone();
    options.route_file = args.pools.route_file.clone();
    options.poll_interval = Duration::from_millis(args.poll_interval_ms);
    let userspace = plexus_cni::userspace::Userspace {
        ovsdb_socket: args.ovsdb_socket.clone(),
        ovs_run_dir: args.ovs_run_dir.clone(),
        kubelet_dir: args.kubelet_dir.clone(),
        run_dir: args.socket_dir.clone(),
        devinfo_dir: args.devinfo_dir.clone(),
        ..Default::default()
    };
    let registry = plexus_cni::entry::builtin_registry(&node, userspace);
    // What calls killed mid-write (or an agent killed mid-call) left behind.
    for dir in plexus_cni::paths::default_stores(&args.devinfo_dir) {
        plexus_cni::files::sweep(&dir);
    }
    let metrics = Arc::new(Metrics::default());
    let kept = crate::privileges::drop_to_kept().context("dropping capabilities")?;
    let mut kept: Vec<String> = kept.iter().map(ToString::to_string).collect();
    kept.sort();
    tracing::info!("capabilities kept: {}", kept.join(", "));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let devices =
        crate::devices::KubeletDevices::new(&args.kubelet_dir, &args.devinfo_dir, runtime.handle().clone());
    runtime.block_on(async {
        let cluster: Option<crate::cni_server::SharedCluster> = match kube_client(args).await? {
            Some(client) => {
                let node = args.node_name();
                tracing::info!("watching the pods of node {node} and NetworkAttachmentDefinitions");
                Some(crate::kube_cache::KubeCache::start(client, &node))
            }
            None => {
                tracing::info!("no Kubernetes access: serving the device plugin and static networks");
                None
            }
        };
        let service = Arc::new(CniService::new(
            node,
            registry,
            cluster,
            Some(Arc::new(devices)),
            args.max_parallel_cni as usize,
            metrics.clone(),
        ));
        let listener = cni_server::bind(&args.socket_dir)?;
        if let Some(addr) = args.metrics_addr {
            let metrics_listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics on {addr}"))?;
            tokio::spawn(crate::metrics::serve(metrics_listener, metrics.clone()));
        }
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let auto_config_stop = Arc::new(AtomicBool::new(false));
        let auto_config = args.auto_config.then(|| {
            let keys = serde_json::json!({"daemonSocketDir": args.socket_dir});
            let keys = keys.as_object().cloned().unwrap_or_default();
            let auto = AutoConfig::new(&args.cni_conf_dir, args.readiness_indicator_file.as_deref(), keys);
            let (stop, interval) = (auto_config_stop.clone(), Duration::from_millis(args.poll_interval_ms));
            std::thread::spawn(move || auto.run(interval, &stop))
        });
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        tracing::info!("serving CNI on {}", cni_server::socket_path(&args.socket_dir).display());
        let cni = cni_server::serve(listener, service, stopped(stop_rx.clone()));
        let (device_plugin, ()) = tokio::join!(plugin::run(config, options, stopped(stop_rx)), cni);
        // The CNI config stays: without it pods would start without their secondary networks
        // until the agent is back.
        auto_config_stop.store(true, Ordering::Relaxed);
        if let Some(thread) = auto_config {
            let _ = thread.join();
        }
        device_plugin.context("device plugin")
    })
}
