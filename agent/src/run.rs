//! `plexus-agent run`: the node agent in the foreground. For now it serves the device plugin;
//! the CNI side and the Kubernetes watches join it later.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use plexus_device_plugin::config::PoolConfig;
use plexus_device_plugin::plugin::{self, PluginOptions};
use plexus_hw::SysfsRoot;
use tokio::signal::unix::{SignalKind, signal};

/// Where things are.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pools: crate::PoolsArgs,
    /// The kubelet's directory (its device plugin sockets are in device-plugins/).
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// Where device-info files are written (<dir>/dp/).
    #[arg(long, default_value = plexus_device_plugin::allocate::DEFAULT_DEVINFO_DIR)]
    pub devinfo_dir: PathBuf,
    /// How often the node and the kubelet are checked, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub poll_interval_ms: u64,
}

/// Runs until SIGTERM or SIGINT, then cleans up and returns.
pub fn run(args: &RunArgs, config: PoolConfig) -> anyhow::Result<()> {
    let mut options = PluginOptions::new(SysfsRoot::new(&args.pools.sysfs_root));
    options.kubelet_dir = args.kubelet_dir.clone();
    options.devinfo_dir = args.devinfo_dir.clone();
    options.route_file = args.pools.route_file.clone();
    options.poll_interval = Duration::from_millis(args.poll_interval_ms);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
        };
        plugin::run(config, options, stop).await.context("device plugin")
    })
}
