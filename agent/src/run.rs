//! `plexus-agent run`: the node agent in the foreground. It serves the device plugin for the
//! configured pools and the CNI socket the `plexus` binary forwards to, and exports setup
//! latency on `--metrics-addr`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use plexus_device_plugin::config::PoolConfig;
use plexus_device_plugin::plugin::{self, PluginOptions};
use plexus_hw::events::EventSource;
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
    /// How often the kubelet's sockets are checked, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub poll_interval_ms: u64,
    /// How often the node's devices are polled, in milliseconds: a safety net, since the
    /// kernel's link and PCI events make the device plugin look again at once.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub device_poll_interval_ms: u64,
    /// The directory of the CNI socket the `plexus` binary forwards calls to (the meta-plugin
    /// config's `daemonSocketDir`; default /run/plexus, or the --config file's socketDir).
    #[arg(long)]
    pub socket_dir: Option<PathBuf>,
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
    /// The runtime's CNI config directory, for --auto-config (default /etc/cni/net.d, or the
    /// --config file's multusAutoconfigDir or cniConfigDir). Multus's --multus-autoconfig-dir.
    #[arg(long, alias = "multus-autoconfig-dir")]
    pub cni_conf_dir: Option<PathBuf>,
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
    /// Multus's thick daemon-config.json: its keys where they mean the same (a flag given
    /// here wins over the file; docs/configuration.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Execute delegate binaries chrooted into this directory, the node's root mounted in
    /// the agent's container (Multus's chrootDir): the primary plugin finds its files there.
    #[arg(long)]
    pub chroot_dir: Option<PathBuf>,
    /// The meta-plugin's namespaceIsolation, written into the generated config (Multus's
    /// --namespace-isolation; kubespray sets it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub namespace_isolation: Option<bool>,
    /// The meta-plugin's globalNamespaces (comma-separated), written into the generated config.
    #[arg(long)]
    pub global_namespaces: Option<String>,
    /// The generated config's cniVersion (default: the primary's).
    #[arg(long)]
    pub cni_version: Option<String>,
    /// Give the wrapped primary config --cni-version too (Multus's forceCNIVersion).
    #[arg(long)]
    pub force_cni_version: bool,
    /// The meta-plugin's logLevel (panic, error, verbose, debug), written into the generated
    /// config: what the plexus binary logs when it works without the agent.
    #[arg(long)]
    pub multus_log_level: Option<String>,
    /// The meta-plugin's logFile, written into the generated config.
    #[arg(long)]
    pub multus_log_file: Option<PathBuf>,
    /// Multus's --multus-conf-file: `auto` is --auto-config; a file is refused (Plexus writes
    /// its own).
    #[arg(long)]
    pub multus_conf_file: Option<String>,
    /// Multus flags with no meaning here, accepted so its DaemonSet arguments work, and named
    /// in a warning: --cleanup-config-on-exit (Plexus never removes its config),
    /// --multus-kubeconfig-file-host, --skip-multus-binary-copy, --additional-bin-dir.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub cleanup_config_on_exit: Option<String>,
    #[arg(long, hide = true)]
    pub multus_kubeconfig_file_host: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub skip_multus_binary_copy: Option<String>,
    #[arg(long, hide = true)]
    pub additional_bin_dir: Option<String>,
    /// The SR-IOV device plugin's --use-cdi: accepted and named in a warning (Plexus gives
    /// device nodes, not CDI devices).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub use_cdi: Option<String>,
    /// The SR-IOV device plugin's log rotation, for --log-dir's file: megabytes before it
    /// rotates, rotated files kept, days they are kept (as --config's logOptions).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1 << 20))]
    pub log_max_size: Option<u64>,
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub log_max_files: Option<u32>,
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub log_max_age: Option<u32>,
    /// Keys for the generated meta-plugin config, from the flags and --config.
    #[arg(skip)]
    pub plugin_keys: serde_json::Map<String, serde_json::Value>,
}

impl RunArgs {
    /// The CNI socket's directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.socket_dir.clone().unwrap_or_else(|| PathBuf::from(plexus_cni::paths::SOCKET_DIR))
    }

    /// The runtime's CNI config directory.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.cni_conf_dir.clone().unwrap_or_else(|| PathBuf::from("/etc/cni/net.d"))
    }

    /// Folds in the --config file and the Multus flags: a flag wins over the file. Names what
    /// is accepted without a meaning here.
    pub fn settle(&mut self) -> anyhow::Result<()> {
        let daemon = match &self.config {
            Some(path) => crate::daemon_config::DaemonConfig::load(path)?,
            None => crate::daemon_config::DaemonConfig::default(),
        };
        self.socket_dir = self.socket_dir.take().or(daemon.socket_dir);
        self.cni_conf_dir = self.cni_conf_dir.take().or(daemon.cni_conf_dir);
        self.chroot_dir = self.chroot_dir.take().or(daemon.chroot_dir);
        self.readiness_indicator_file =
            self.readiness_indicator_file.take().or(daemon.readiness_indicator_file);
        self.cni_version = self.cni_version.take().or(daemon.cni_version);
        self.force_cni_version |= daemon.force_cni_version;
        match self.multus_conf_file.as_deref() {
            None => {}
            Some("auto") => self.auto_config = true,
            Some(file) => anyhow::bail!(
                "--multus-conf-file {file}: Plexus writes its own config (auto); to keep a hand-written \
                 one, leave --auto-config off and give it \"type\": \"plexus\""
            ),
        }
        self.auto_config |= daemon.auto_config;
        let mut keys = daemon.plugin_keys;
        if let Some(on) = self.namespace_isolation {
            keys.insert("namespaceIsolation".into(), on.into());
        }
        if let Some(list) = &self.global_namespaces {
            keys.insert("globalNamespaces".into(), list.clone().into());
        }
        if let Some(level) = &self.multus_log_level {
            keys.insert("logLevel".into(), level.clone().into());
        }
        if let Some(file) = &self.multus_log_file {
            keys.insert("logFile".into(), file.display().to_string().into());
        }
        keys.insert("daemonSocketDir".into(), self.socket_dir().display().to_string().into());
        self.plugin_keys = keys;
        let ignored = [
            (
                "--cleanup-config-on-exit",
                self.cleanup_config_on_exit.is_some(),
                "Plexus never removes its config",
            ),
            (
                "--multus-kubeconfig-file-host",
                self.multus_kubeconfig_file_host.is_some(),
                "the agent has its own access",
            ),
            (
                "--skip-multus-binary-copy",
                self.skip_multus_binary_copy.is_some(),
                "install-cni installs plexus",
            ),
            (
                "--additional-bin-dir",
                self.additional_bin_dir.is_some(),
                "delegates are looked for in binDir and CNI_PATH",
            ),
            ("--use-cdi", self.use_cdi.is_some(), "Plexus gives device nodes, not CDI devices"),
        ];
        for (flag, given, why) in ignored {
            if given {
                tracing::warn!("{flag} is accepted and ignored: {why}");
            }
        }
        Ok(())
    }

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
    options.device_poll_interval = Duration::from_millis(args.device_poll_interval_ms);
    // A simulated node sends the kernel's events about itself to a socket in its root.
    options.events = Some(match args.simulated_node {
        true => EventSource::Socket(args.pools.sysfs_root.join(plexus_sim::EVENTS_SOCKET)),
        false => EventSource::Kernel,
    });
    let userspace = plexus_cni::userspace::Userspace {
        ovsdb_socket: args.ovsdb_socket.clone(),
        ovs_run_dir: args.ovs_run_dir.clone(),
        kubelet_dir: args.kubelet_dir.clone(),
        run_dir: args.socket_dir(),
        devinfo_dir: args.devinfo_dir.clone(),
        ..Default::default()
    };
    let registry = plexus_cni::entry::builtin_registry(&node, userspace);
    // What calls killed mid-write (or an agent killed mid-call) left behind.
    for dir in plexus_cni::paths::default_stores(&args.devinfo_dir) {
        plexus_cni::files::sweep(&dir);
    }
    let metrics = Arc::new(Metrics::default());
    let mut extra = Vec::new();
    if let Some(root) = &args.chroot_dir {
        // Checked here: a wrong mount would otherwise surface as every delegate "not found".
        if !root.join("bin").exists() && !root.join("usr").is_dir() {
            anyhow::bail!("--chroot-dir {}: not a root file system (no bin, no usr)", root.display());
        }
        if !Path::new(plexus_cni::delegate::CHROOT_PROGRAM).exists() {
            anyhow::bail!("--chroot-dir: {} is missing (coreutils)", plexus_cni::delegate::CHROOT_PROGRAM);
        }
        plexus_cni::delegate::execute_chrooted(root.clone());
        tracing::info!("delegate binaries run chrooted into {}", root.display());
        extra.push(caps::Capability::CAP_SYS_CHROOT);
    }
    let kept = crate::privileges::drop_to_kept(&extra).context("dropping capabilities")?;
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
        let listener = cni_server::bind(&args.socket_dir())?;
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
            let auto = AutoConfig::new(
                &args.cni_conf_dir(),
                args.readiness_indicator_file.as_deref(),
                args.plugin_keys.clone(),
            )
            .with_cni_version(args.cni_version.clone(), args.force_cni_version);
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
        tracing::info!("serving CNI on {}", cni_server::socket_path(&args.socket_dir()).display());
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
