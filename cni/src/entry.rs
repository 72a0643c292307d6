//! One CNI call, start to finish: environment and stdin in, result or error JSON and an exit
//! code out. The `plexus` binary is this function; the agent will call it for forwarded calls.

use serde_json::Value;

use std::sync::Arc;

use crate::delegate::{Delegator, InProcessPlugin, Registry};
use crate::meta::{self, MetaPlugin};
use crate::multus::cluster::Cluster;
use crate::multus::config::MetaConfig;
use crate::routes::PodRoutes;
use crate::spec::{CniError, Command, ErrorCode, Invocation};

/// What a call prints on stdout, and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// stdout.
    pub stdout: String,
    /// The exit code: 0, or 1 with the error JSON on stdout.
    pub code: i32,
}

/// Makes the Kubernetes access for a config: `None` for static delegates only.
pub type ClusterFactory<'a> = &'a dyn Fn(&MetaConfig) -> Result<Option<Box<dyn Cluster>>, CniError>;

/// What a call needs from its surroundings.
pub struct Context<'a> {
    /// Delegate types called in-process.
    pub registry: Registry,
    /// Route changes in the pod's namespace.
    pub routes: &'a dyn PodRoutes,
    /// Makes the Kubernetes client for the config, `None` for static delegates only.
    pub cluster: ClusterFactory<'a>,
    /// The pod's allocated devices (PodResources in the agent, the kubelet checkpoint in the
    /// binary), `None` to inject no device IDs.
    pub devices: Option<&'a dyn crate::multus::devices::Devices>,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("registry", &self.registry).finish()
    }
}

/// The delegates built into Plexus: `sriov`, `userspace`, `bond`.
pub fn builtin_registry() -> Registry {
    let mut registry = Registry::default();
    registry.register("sriov", Arc::new(SriovFromEnv));
    registry.register("userspace", Arc::new(crate::userspace::Userspace::default()));
    registry.register("bond", Arc::new(crate::bond::Bond));
    registry
}

/// The delegates built into Plexus, on the node whose sysfs is at `sysfs` (the agent's view
/// of the node, rather than the environment's), with the node's paths for `userspace`.
pub fn builtin_registry_for(
    sysfs: &plexus_hw::SysfsRoot,
    userspace: crate::userspace::Userspace,
) -> Result<Registry, CniError> {
    let control = plexus_hw::vf::control_for(sysfs)
        .map_err(|e| CniError::new(ErrorCode::Plugin, format!("sriov: {e}")))?;
    let mut registry = Registry::default();
    registry.register("sriov", Arc::new(crate::sriov::Sriov::new(sysfs.clone(), control)));
    registry.register("userspace", Arc::new(userspace));
    registry.register("bond", Arc::new(crate::bond::Bond));
    Ok(registry)
}

/// The `sriov` delegate of the node `PLEXUS_SYSFS_ROOT` names, made per call: the variable is
/// read where the call runs.
struct SriovFromEnv;

impl InProcessPlugin for SriovFromEnv {
    fn call(
        &self,
        command: Command,
        invocation: &Invocation,
        ifname: &str,
        config: &Value,
        cluster: Option<&dyn Cluster>,
    ) -> Result<Option<Value>, CniError> {
        crate::sriov::Sriov::from_env()?.call(command, invocation, ifname, config, cluster)
    }
}

/// The built-in delegate a binary named `name` is (the `plexus` binary installed, or linked,
/// as `sriov` is the SR-IOV plugin by itself, for plain Multus).
pub fn builtin_named(name: &str) -> Option<Arc<dyn InProcessPlugin>> {
    match name {
        "sriov" => Some(Arc::new(SriovFromEnv)),
        "userspace" => Some(Arc::new(crate::userspace::Userspace::default())),
        "bond" => Some(Arc::new(crate::bond::Bond)),
        _ => None,
    }
}

/// Runs one call of a built-in delegate as a standalone CNI plugin.
pub fn run_plugin(
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    plugin: &dyn InProcessPlugin,
) -> Outcome {
    let call = || -> Result<Option<Value>, CniError> {
        let invocation = Invocation::from_env(env)?;
        match invocation.command {
            Command::Version => return Ok(Some(meta::version_info())),
            // Nothing to report or collect beyond what DEL restores.
            Command::Status | Command::Gc => return Ok(None),
            _ => {}
        }
        let config: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(ErrorCode::Decode, "the network config is not valid JSON")
                .with_details(e.to_string())
        })?;
        plugin.call(invocation.command, &invocation, &invocation.ifname, &config, None)
    };
    match call() {
        Ok(Some(value)) => Outcome { stdout: value.to_string(), code: 0 },
        Ok(None) => Outcome { stdout: String::new(), code: 0 },
        Err(err) => Outcome { stdout: err.to_json(&error_version(stdin)), code: 1 },
    }
}

/// The cniVersion to answer an error with: the config's if it says one, else the newest.
pub fn error_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| crate::spec::CniVersion::LATEST.as_str().to_owned())
}

/// Runs one call.
pub fn run(env: impl Fn(&str) -> Option<String>, stdin: &[u8], context: &Context<'_>) -> Outcome {
    match call(env, stdin, context) {
        Ok(Some(value)) => Outcome { stdout: value.to_string(), code: 0 },
        Ok(None) => Outcome { stdout: String::new(), code: 0 },
        Err(err) => Outcome { stdout: err.to_json(&error_version(stdin)), code: 1 },
    }
}

fn call(
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    context: &Context<'_>,
) -> Result<Option<Value>, CniError> {
    let invocation = Invocation::from_env(env)?;
    if invocation.command == Command::Version {
        return Ok(Some(meta::version_info()));
    }
    let config = MetaConfig::parse(stdin)?;
    tracing::info!(
        "{} container {} interface {} netns {}",
        invocation.command.as_str(),
        invocation.container_id,
        invocation.ifname,
        invocation.netns
    );
    let cluster = (context.cluster)(&config)?;
    let delegator = Delegator::new(Some(&config.bin_dir), &invocation.path, context.registry.clone())
        .with_cluster(cluster.as_deref());
    let plugin = MetaPlugin {
        config,
        invocation: invocation.clone(),
        cluster: cluster.as_deref(),
        delegator,
        routes: context.routes,
        devices: context.devices,
    };
    match invocation.command {
        Command::Add => plugin.add().map(Some),
        Command::Del => plugin.del().map(|()| None),
        Command::Check => plugin.check().map(|()| None),
        Command::Status => plugin.status().map(|()| None),
        Command::Gc => {
            let value: Value = serde_json::from_slice(stdin).map_err(|e| {
                CniError::new(ErrorCode::Decode, "GC: stdin is not JSON").with_details(e.to_string())
            })?;
            plugin.gc(&value).map(|()| None)
        }
        Command::Version => Ok(Some(meta::version_info())),
    }
}

/// Installs the logger the config asks for: `logLevel` (panic, the default, logs nothing;
/// error; verbose; debug) to `logFile` (appended) when given, else to stderr unless
/// `logToStderr` is false. Never to stdout, which carries the result. A log file that cannot be
/// opened is skipped.
pub fn init_logging(stdin: &[u8]) {
    use tracing_subscriber::filter::LevelFilter;
    let Ok(config) = MetaConfig::parse(stdin) else {
        return;
    };
    let level = match config.log_level.as_str() {
        "debug" => LevelFilter::DEBUG,
        "verbose" => LevelFilter::INFO,
        "error" => LevelFilter::ERROR,
        _ => return,
    };
    let file = config
        .log_file
        .as_ref()
        .and_then(|path| std::fs::OpenOptions::new().create(true).append(true).open(path).ok());
    let to_stderr = config.log_to_stderr;
    let writer = move || -> Box<dyn std::io::Write> {
        match (&file, to_stderr) {
            (Some(file), _) => match file.try_clone() {
                Ok(file) => Box::new(file),
                Err(_) => Box::new(std::io::sink()),
            },
            (None, true) => Box::new(std::io::stderr()),
            (None, false) => Box::new(std::io::sink()),
        }
    };
    let _ = tracing_subscriber::fmt().with_writer(writer).with_max_level(level).with_ansi(false).try_init();
}
