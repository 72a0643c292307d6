//! The command line: what each command takes, and which module runs it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::pools::PoolsArgs;
use crate::table::Output;
use crate::{cni_server, demo, discover, install, pools, run, sim};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "plexus-agent",
    version,
    about = "Plexus node agent: SR-IOV discovery, device plugin and CNI in one daemon"
)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace; Multus's panic and verbose; a glog
    /// verbosity number, as the SR-IOV device plugin's --log-level=10 (overrides PLEXUS_LOG).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Also log to <dir>/plexus-agent.log (the SR-IOV device plugin's --log-dir).
    #[arg(long, global = true)]
    pub log_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Where and how much to log: the flags, else `run --config`'s logFile, logLevel and
    /// logToStderr.
    pub fn log_settings(&self) -> anyhow::Result<crate::logging::LogSettings> {
        let mut settings = match &self.command {
            Command::Run(args) => {
                let mut settings = match &args.config {
                    Some(path) => crate::daemon_config::DaemonConfig::load(path)?.log,
                    None => crate::logging::LogSettings::default(),
                };
                // The device plugin's rotation flags, as it takes them.
                let rotation = &mut settings.rotation;
                rotation.max_size_mb = args.log_max_size.unwrap_or(rotation.max_size_mb);
                rotation.max_backups = args.log_max_files.unwrap_or(rotation.max_backups);
                rotation.max_age_days = args.log_max_age.unwrap_or(rotation.max_age_days);
                settings
            }
            _ => crate::logging::LogSettings::default(),
        };
        if let Some(level) = &self.log_level {
            settings.level = Some(level.clone());
        }
        if let Some(dir) = &self.log_dir {
            settings.file = Some(dir.join("plexus-agent.log"));
        }
        Ok(settings)
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the node's SR-IOV physical and virtual functions and NUMA nodes.
    Discover {
        /// Where sysfs is mounted (a simulated node's root for tests).
        #[arg(long, default_value = plexus_hw::SysfsRoot::DEFAULT)]
        sysfs_root: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run the node agent in the foreground: the device plugin for the pools and the CNI server.
    Run(Box<run::RunArgs>),
    /// Show which devices each pool of a config gets, and why the others are left out.
    Pools {
        #[command(flatten)]
        pools: PoolsArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show the slowest recent CNI calls of the running agent, phase by phase.
    Trace {
        /// The agent's CNI socket directory.
        #[arg(long, default_value = plexus_cni::paths::SOCKET_DIR)]
        socket_dir: PathBuf,
        /// How many calls.
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Build or remove a simulated SR-IOV node (a fake sysfs tree, optionally real links).
    #[command(subcommand)]
    Sim(SimCommand),
    /// Install the plexus CNI binary and plexus-standalone into the node's CNI bin directory
    /// (atomically: a running plexus is never overwritten in place).
    InstallCni {
        /// The binary to install (default: `plexus` next to this program); plexus-standalone is
        /// taken from the same directory.
        #[arg(long)]
        from: Option<PathBuf>,
        /// The CNI bin directory.
        #[arg(long, default_value = plexus_cni::paths::BIN_DIR)]
        bin_dir: PathBuf,
    },
    /// The whole node on this machine (root): a simulated node, the agent, pods attached
    /// through the plexus binary; then everything removed, checked.
    Demo,
}

/// The simulator's commands.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Write a simulated node's sysfs tree and, with --netns, make its links (root).
    Up(sim::UpArgs),
    /// Remove a simulated node: its links' namespace and its tree.
    Down {
        /// The simulated node's root, as given to `sim up`.
        #[arg(long)]
        root: PathBuf,
    },
}

/// `trace`: each call with its total, then its phases.
fn trace(socket_dir: &std::path::Path, count: usize, output: Output) -> anyhow::Result<()> {
    let calls = cni_server::trace(socket_dir, count)?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&calls)?);
        return Ok(());
    }
    let ms = |s: f64| format!("{:.2} ms", s * 1000.0);
    for call in calls {
        println!("{} {} {} ({})", ms(call.total), call.command, call.container_id, call.outcome);
        for (phase, seconds) in &call.phases {
            println!("    {:>10}  {phase}", ms(*seconds));
        }
    }
    Ok(())
}

fn install_cni(from: Option<PathBuf>, bin_dir: &std::path::Path) -> anyhow::Result<()> {
    let from = match from {
        Some(from) => from,
        None => std::env::current_exe()?.with_file_name("plexus"),
    };
    for target in install::install(&from, bin_dir)? {
        println!("installed {}", target.display());
    }
    Ok(())
}

/// Runs `command`.
pub fn exec(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Discover { sysfs_root, output } => discover::run(&sysfs_root, output),
        Command::Run(mut args) => {
            args.settle()?;
            args.pools.load().and_then(|config| run::run(&args, config))
        }
        Command::Pools { pools: args, output } => {
            args.load().and_then(|config| pools::run(&config, &args.sysfs_root, &args.route_file, output))
        }
        Command::Trace { socket_dir, count, output } => trace(&socket_dir, count, output),
        Command::Sim(SimCommand::Up(args)) => sim::up(&args),
        Command::Sim(SimCommand::Down { root }) => sim::down(&root),
        Command::Demo => demo::run(),
        Command::InstallCni { from, bin_dir } => install_cni(from, &bin_dir),
    }
}
