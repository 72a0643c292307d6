//! The edge of a CNI call: the environment and stdin in; the result, or the spec's JSON error,
//! and an exit code out. Errors stay typed everywhere below; this is the one place they
//! become the wire format ([`outcome`]). The `plexus` binary is [`run`]; the agent runs
//! [`execute`] for each forwarded call, so it can label its metrics with the typed error, then
//! makes the same [`Outcome`], answers, and only then finishes what an ADD left for after its
//! answer ([`Aftermath`]).

use std::sync::Arc;

use plexus_hw::Node;
use serde_json::Value;

use crate::delegate::{InProcessPlugin, Registry, Request, call_in_process};
use crate::error::Error;
use crate::multus::cluster::{Cluster, ClusterError};
use crate::multus::config::MetaConfig;
use crate::multus::devices::Devices;
use crate::multus::meta::{self, Aftermath, MetaPlugin};
use crate::spec::{Call, ConfigError};

/// What a call prints on stdout, and its exit code (defined with the wire format to the
/// agent, in `plexus-shim`).
pub use plexus_shim::{Outcome, error_version};

/// Makes the Kubernetes access for a config: `None` for static delegates only.
pub type ClusterFactory<'a> = &'a dyn Fn(&MetaConfig) -> Result<Option<Box<dyn Cluster>>, ClusterError>;

/// What a call needs from its surroundings.
pub struct Context<'a> {
    /// Delegate types called in-process.
    pub registry: Registry,
    /// The node: its host namespace, for the calls' kernel sessions.
    pub node: &'a Node,
    /// Makes the Kubernetes client for the config, `None` for static delegates only.
    pub cluster: ClusterFactory<'a>,
    /// The pod's allocated devices (PodResources in the agent, the kubelet checkpoint in the
    /// binary), `None` to inject no device IDs.
    pub devices: Option<&'a dyn Devices>,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("registry", &self.registry).field("node", &self.node).finish()
    }
}

/// The delegates built into Plexus, on `node`: `sriov`, `userspace` (with the node's paths),
/// `bond`.
pub fn builtin_registry(node: &Node, userspace: crate::userspace::Userspace) -> Registry {
    let mut registry = Registry::default();
    registry.register("sriov", Arc::new(crate::sriov::Sriov::new(node.clone())));
    registry.register("userspace", Arc::new(userspace));
    registry.register("bond", Arc::new(crate::bond::Bond));
    registry
}

/// The built-in delegate a binary named `name` is (the `plexus` binary installed, or linked,
/// as `sriov` is the SR-IOV plugin by itself, for plain Multus).
pub fn builtin_named(name: &str, node: &Node) -> Option<Arc<dyn InProcessPlugin>> {
    match name {
        "sriov" => Some(Arc::new(crate::sriov::Sriov::new(node.clone()))),
        "userspace" => Some(Arc::new(crate::userspace::Userspace::default())),
        "bond" => Some(Arc::new(crate::bond::Bond)),
        _ => None,
    }
}

/// What a call's result prints and exits with, for a caller whose config is `stdin`.
pub fn outcome(result: Result<Option<Value>, Error>, stdin: &[u8]) -> Outcome {
    match result {
        Ok(Some(value)) => Outcome { stdout: value.to_string(), code: 0 },
        Ok(None) => Outcome { stdout: String::new(), code: 0 },
        Err(err) => {
            tracing::debug!("failed: {err}");
            Outcome::error(&err.reply(), stdin)
        }
    }
}

/// Runs one call of a built-in delegate as a standalone CNI plugin on `node`.
pub fn run_plugin(
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    plugin: &dyn InProcessPlugin,
    plugin_type: &str,
    node: &Node,
) -> Outcome {
    let call = || -> Result<Option<Value>, Error> {
        let invocation = match Call::from_env(env)? {
            Call::Version => return Ok(Some(meta::version_info())),
            // Nothing to report or collect beyond what DEL restores.
            Call::Status { .. } | Call::Gc { .. } => return Ok(None),
            Call::Attachment(invocation) => invocation,
        };
        let config: Value = serde_json::from_slice(stdin)
            .map_err(|error| ConfigError::Decode { what: format!("{plugin_type} config"), error })?;
        let kernel = node.session(invocation.netns.as_deref());
        let request = Request { invocation: &invocation, config: &config, cluster: None, kernel: &kernel };
        call_in_process(plugin, plugin_type, &request)
    };
    outcome(call(), stdin)
}

/// Runs one call.
pub fn run(env: impl Fn(&str) -> Option<String>, stdin: &[u8], context: &Context<'_>) -> Outcome {
    let executed = execute(env, stdin, context);
    // Finished before the answer is printed: this process's exit ends the call anyway.
    drop(executed.aftermath);
    outcome(executed.result, stdin)
}

/// A call run: its result, and what an ADD left for after the answer.
#[derive(Debug)]
pub struct Executed {
    /// The result, typed.
    pub result: Result<Option<Value>, Error>,
    /// Finished when dropped (see [`Aftermath`]); drop it once the answer is out.
    pub aftermath: Option<Aftermath>,
}

/// Runs one call; an ADD leaves its [`Aftermath`] to the caller.
pub fn execute(env: impl Fn(&str) -> Option<String>, stdin: &[u8], context: &Context<'_>) -> Executed {
    let mut aftermath = None;
    let result = execute_leaving(env, stdin, context, &mut aftermath);
    Executed { result, aftermath }
}

fn execute_leaving(
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    context: &Context<'_>,
    aftermath: &mut Option<Aftermath>,
) -> Result<Option<Value>, Error> {
    let call = Call::from_env(env)?;
    if call == Call::Version {
        return Ok(Some(meta::version_info()));
    }
    let config = MetaConfig::parse(stdin)?;
    let cluster = (context.cluster)(&config)?;
    let path = match &call {
        Call::Attachment(invocation) => invocation.path.clone(),
        Call::Status { path } | Call::Gc { path } => path.clone(),
        Call::Version => Vec::new(),
    };
    let plugin = MetaPlugin {
        config,
        cluster: cluster.as_deref(),
        node: context.node,
        registry: context.registry.clone(),
        path,
        devices: context.devices,
    };
    match call {
        Call::Attachment(invocation) => {
            tracing::info!(
                "{} container {} interface {} netns {}",
                invocation.command.as_str(),
                invocation.container_id,
                invocation.ifname,
                invocation.netns_str()
            );
            match invocation.command {
                crate::spec::Command::Add => {
                    let (answer, after) = plugin.add_answering_first(&invocation, meta::READINESS_WAIT)?;
                    *aftermath = Some(after);
                    Ok(Some(answer))
                }
                crate::spec::Command::Del => plugin.del(&invocation).map(|()| None),
                _ => plugin.check(&invocation).map(|()| None),
            }
        }
        Call::Status { .. } => plugin.status().map(|()| None),
        Call::Gc { .. } => {
            let value: Value = serde_json::from_slice(stdin)
                .map_err(|error| ConfigError::Decode { what: "GC".into(), error })?;
            plugin.gc(&value).map(|()| None)
        }
        Call::Version => Ok(Some(meta::version_info())),
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
    let file = config.log_file.as_ref().and_then(|path| {
        crate::log_file::RotatingFile::open(path, config.log_rotation).ok().map(std::sync::Arc::new)
    });
    let to_stderr = config.log_to_stderr;
    let writer = move || -> Box<dyn std::io::Write> {
        match (&file, to_stderr) {
            (Some(file), _) => Box::new(crate::log_file::Shared(file.clone())),
            (None, true) => Box::new(std::io::stderr()),
            (None, false) => Box::new(std::io::sink()),
        }
    };
    let _ = tracing_subscriber::fmt().with_writer(writer).with_max_level(level).with_ansi(false).try_init();
}
