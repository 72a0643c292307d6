//! Running delegates: a plugin binary by the CNI exec protocol (config on stdin, result on
//! stdout, exit code plus JSON error on failure), or a delegate type implemented inside Plexus,
//! called in-process with one typed request. A conflist runs plugin by plugin, each getting
//! the previous result as `prevResult`, and in reverse on DEL.

use std::collections::BTreeMap;
use std::io::{PipeWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;

use plexus_hw::kernel::Kernel;
use serde_json::{Map, Value};

use crate::error::{Error, ErrorList};
use crate::multus::cluster::Cluster;
use crate::plugin_process;
use crate::spec::conf::capabilities;
use crate::spec::{Command, ErrorCode, ErrorReply, Invocation, NetworkConfig};

/// A delegate that could not be found or run, or that failed.
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    /// A `type` that cannot name a plugin binary.
    #[error("invalid plugin type {0:?}")]
    InvalidType(String),
    /// No binary of the type in the plugin directories.
    #[error("plugin {plugin:?} not found in {dirs}")]
    NotFound {
        /// The type.
        plugin: String,
        /// Where it was looked for, `:`-separated.
        dirs: String,
    },
    /// The binary could not be started, fed or waited for.
    #[error("{what} plugin {binary}: {error}")]
    Io {
        /// `starting`, `writing to`, `waiting for`.
        what: &'static str,
        /// The binary.
        binary: PathBuf,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// The plugin failed and said why, in the spec's JSON (its code and words pass through).
    #[error("{reply}")]
    Failed {
        /// The type.
        plugin: String,
        /// What it printed.
        reply: ErrorReply,
    },
    /// The plugin exited non-zero without the spec's JSON error.
    #[error("plugin {plugin} failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Crashed {
        /// The type.
        plugin: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The plugin's ADD printed something that is not a result.
    #[error("plugin {plugin} printed no valid result: {error}")]
    BadResult {
        /// The type.
        plugin: String,
        /// The parser's complaint.
        error: serde_json::Error,
    },
    /// The plugin's ADD printed nothing.
    #[error("plugin {0} printed no result")]
    NoResult(String),
    /// A network config with no plugins.
    #[error("no plugins")]
    NoPlugins,
    /// A verb an in-process delegate does not take.
    #[error("{plugin}: {command} is not a delegate command")]
    NotDelegateCommand {
        /// The type.
        plugin: String,
        /// The verb.
        command: &'static str,
    },
}

impl crate::error::Failure for DelegateError {
    /// A failed plugin's own code.
    fn code(&self) -> u32 {
        let code = match self {
            Self::Failed { reply, .. } => return reply.code,
            Self::InvalidType(_) | Self::NotFound { .. } | Self::NoPlugins => ErrorCode::InvalidNetworkConfig,
            Self::Io { .. } => ErrorCode::Io,
            Self::Crashed { .. } => ErrorCode::Plugin,
            Self::BadResult { .. } | Self::NoResult(_) => ErrorCode::Decode,
            Self::NotDelegateCommand { .. } => ErrorCode::InvalidEnvironment,
        };
        code.into()
    }

    /// A failed plugin's words pass through.
    fn reply(&self) -> Option<ErrorReply> {
        match self {
            Self::Failed { reply, .. } => Some(reply.clone()),
            _ => None,
        }
    }
}

/// One call of an in-process delegate: what a plugin binary would get (the invocation, with
/// this delegate's interface name, namespace and arguments, and its config), and what only an
/// in-process delegate can have: the meta-plugin's Kubernetes access (where a binary would need
/// a kubeconfig of its own) and the call's kernel session.
pub struct Request<'a> {
    /// The delegate's invocation.
    pub invocation: &'a Invocation,
    /// Its plugin config, as a binary would read it on stdin.
    pub config: &'a Value,
    /// Kubernetes, when the meta-plugin has it.
    pub cluster: Option<&'a dyn Cluster>,
    /// The call's kernel session (host and pod namespaces).
    pub kernel: &'a dyn Kernel,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("invocation", &self.invocation).field("config", &self.config).finish()
    }
}

/// A delegate type implemented inside Plexus, with the verbs of an attachment.
pub trait InProcessPlugin: Send + Sync {
    /// ADD: the result, as JSON of the config's version.
    fn add(&self, request: &Request<'_>) -> Result<Value, Error>;
    /// DEL: undoes what ADD made; nothing made is fine.
    fn del(&self, request: &Request<'_>) -> Result<(), Error>;
    /// CHECK: what ADD made is still there.
    fn check(&self, request: &Request<'_>) -> Result<(), Error>;
}

/// Runs `request` on `plugin` by its verb.
pub fn call_in_process(
    plugin: &dyn InProcessPlugin,
    plugin_type: &str,
    request: &Request<'_>,
) -> Result<Option<Value>, Error> {
    match request.invocation.command {
        Command::Add => plugin.add(request).map(Some),
        Command::Del => plugin.del(request).map(|()| None),
        Command::Check => plugin.check(request).map(|()| None),
        other => {
            Err(DelegateError::NotDelegateCommand { plugin: plugin_type.to_owned(), command: other.as_str() }
                .into())
        }
    }
}

/// The type of Multus's `passthru` plugin, which starts an auxiliary CNI chain.
pub const PASSTHRU: &str = "passthru";

/// Multus's `passthru` plugin: ADD answers an empty result of its config's version (so the
/// plugins chained after it get an empty `prevResult`); DEL and CHECK have nothing to do.
#[derive(Debug, Default)]
pub struct Passthru;

impl InProcessPlugin for Passthru {
    fn add(&self, request: &Request<'_>) -> Result<Value, Error> {
        let version = crate::spec::CniVersion::of_config(request.config, "passthru config")?;
        Ok(serde_json::json!({ "cniVersion": version.as_str() }))
    }

    fn del(&self, _: &Request<'_>) -> Result<(), Error> {
        Ok(())
    }

    fn check(&self, _: &Request<'_>) -> Result<(), Error> {
        Ok(())
    }
}

/// The delegate types called in-process, by `type`; `passthru` is always one.
#[derive(Clone)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<dyn InProcessPlugin>>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut plugins: BTreeMap<String, Arc<dyn InProcessPlugin>> = BTreeMap::new();
        plugins.insert(PASSTHRU.to_owned(), Arc::new(Passthru));
        Self { plugins }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.plugins.keys()).finish()
    }
}

impl Registry {
    /// Calls `plugin` in-process for configs of type `plugin_type`, instead of a binary.
    pub fn register(&mut self, plugin_type: &str, plugin: Arc<dyn InProcessPlugin>) {
        self.plugins.insert(plugin_type.to_owned(), plugin);
    }

    /// The in-process delegate of `plugin_type`.
    pub fn get(&self, plugin_type: &str) -> Option<&Arc<dyn InProcessPlugin>> {
        self.plugins.get(plugin_type)
    }
}

/// The root every plugin binary this process executes runs in, when set (the agent's
/// `--chroot-dir`, Multus's `chrootDir`): the node's root mounted in the agent's container, so
/// that the primary plugin finds its own files (`/run/flannel/subnet.env`, Calico's state),
/// which the agent's container does not have. Binaries are looked for there too.
static CHROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// What runs a binary in another root.
pub const CHROOT_PROGRAM: &str = "/usr/sbin/chroot";

/// Runs every plugin binary of this process chrooted into `root` from now on. Set once, where
/// the process starts; a second call changes nothing.
pub fn execute_chrooted(root: PathBuf) {
    let _ = CHROOT.set(root);
}

/// `path` (absolute, as a plugin sees it) as this process sees it.
fn seen_from_here(path: &Path) -> PathBuf {
    match CHROOT.get() {
        Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

/// Plugin binaries: where they are looked for, and how they are run.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `binDir`, then CNI_PATH.
    dirs: Vec<PathBuf>,
}

impl Binaries {
    /// Looks in `bin_dir` first, then in `cni_path`.
    pub fn new(bin_dir: Option<&Path>, cni_path: &[PathBuf]) -> Self {
        let mut dirs: Vec<PathBuf> = bin_dir.map(Path::to_path_buf).into_iter().collect();
        for dir in cni_path {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        Self { dirs }
    }

    /// The CNI_PATH plugins get, so they find their own IPAM plugins where we found them.
    pub fn path_env(&self) -> String {
        std::env::join_paths(&self.dirs).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The binary of `plugin_type`.
    pub fn find(&self, plugin_type: &str) -> Result<PathBuf, DelegateError> {
        if plugin_type.is_empty() || plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
            return Err(DelegateError::InvalidType(plugin_type.to_owned()));
        }
        // In a chroot, a binary may be a link pointing inside it: only its presence is checked.
        let present = |path: &PathBuf| match CHROOT.get() {
            Some(_) => std::fs::symlink_metadata(seen_from_here(path)).is_ok_and(|m| !m.is_dir()),
            None => path.is_file(),
        };
        self.dirs.iter().map(|dir| dir.join(plugin_type)).find(present).ok_or_else(|| {
            let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            DelegateError::NotFound { plugin: plugin_type.to_owned(), dirs: dirs.join(":") }
        })
    }

    /// Runs the binary of `plugin_type` with `env` and `config` on its stdin, by the CNI exec
    /// protocol (an IPAM plugin gets its network's whole config this way). Returns what an ADD
    /// printed.
    pub fn exec(
        &self,
        plugin_type: &str,
        command: Command,
        env: Vec<(&'static str, String)>,
        config: &Value,
    ) -> Result<Option<Value>, DelegateError> {
        let binary = self.find(plugin_type)?;
        // A config is JSON values only: it always encodes.
        let stdin = serde_json::to_vec(config).unwrap_or_default();
        let io = |what, error| DelegateError::Io { what, binary: binary.clone(), error };
        // In a chroot, through chroot(8) (coreutils, in every image): it changes root and
        // directory between fork and exec, which std offers only as unsafe code.
        let (program, args) = match CHROOT.get() {
            Some(root) => (Path::new(CHROOT_PROGRAM), vec![root.as_os_str(), binary.as_os_str()]),
            None => (binary.as_path(), Vec::new()),
        };
        // A config nearly always fits in the pipe's buffer: it goes in before the plugin starts,
        // and the pipe is closed, so the plugin never waits on this thread for its stdin. (After
        // the plugin's exec, the kernel may not run the spawning thread again for a millisecond,
        // until the plugin blocks: on this project's VM, feeding the pipe after the spawn cost
        // the plugin a tenth of a millisecond.) What does not fit is fed from a thread of its own
        // while this one collects the answer, so a plugin that prints before it reads cannot
        // stall the call. (The thread cost a twentieth of a millisecond per delegate.)
        let (config_in, feed) = std::io::pipe().map_err(|e| io("starting", e))?;
        let rest = write_now(feed, &stdin).map_err(|e| io("writing to", e))?;
        // The read end is closed once the plugin has it, so that a plugin that exits without
        // reading fails the rest's write instead of stalling it.
        let started =
            plugin_process::start(program, &args, &env, config_in).map_err(|e| io("starting", e))?;
        let (written, output) = match rest {
            None => (Ok(()), started.wait()),
            Some((mut feed, done)) => std::thread::scope(|scope| {
                let rest = &stdin[done..];
                // The pipe moves into the writer, which closes it when done: the plugin's EOF.
                let writer = scope.spawn(move || feed.write_all(rest));
                // Waited for whatever happened to its stdin: a child is always reaped.
                let output = started.wait();
                (writer.join().unwrap_or(Ok(())), output)
            }),
        };
        let output = output.map_err(|e| io("waiting for", e))?;
        match written {
            // A plugin may exit without reading its config (SR-IOV CNI's test IPAM does): Go's
            // exec ignores that, and so does its answer here.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                tracing::debug!("plugin {} exited without reading its config", binary.display());
            }
            Err(e) => return Err(io("writing to", e)),
            Ok(()) => {}
        }
        let plugin = || plugin_type.to_owned();
        if !output.status.success() {
            return Err(match serde_json::from_slice::<ErrorReply>(&output.stdout) {
                Ok(reply) => DelegateError::Failed { plugin: plugin(), reply },
                Err(_) => DelegateError::Crashed {
                    plugin: plugin(),
                    status: output.status,
                    stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                },
            });
        }
        if command != Command::Add || output.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&output.stdout)
            .map(Some)
            .map_err(|error| DelegateError::BadResult { plugin: plugin(), error })
    }
}

/// Writes what of `bytes` the pipe takes without waiting. `None`: all of it, and the pipe is
/// closed; else the pipe (blocking again) and how much went in.
fn write_now(mut pipe: PipeWriter, bytes: &[u8]) -> std::io::Result<Option<(PipeWriter, usize)>> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(&pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let mut done = 0;
    while done < bytes.len() {
        match pipe.write(&bytes[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                fcntl(&pipe, FcntlArg::F_SETFL(OFlag::empty()))?;
                return Ok(Some((pipe, done)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Finds and runs the delegates of one call.
#[derive(Clone)]
pub struct Delegator<'a> {
    binaries: Binaries,
    registry: Registry,
    /// Given to in-process delegates.
    cluster: Option<&'a dyn Cluster>,
    /// The call's kernel session, given to in-process delegates.
    kernel: &'a dyn Kernel,
}

impl std::fmt::Debug for Delegator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delegator")
            .field("binaries", &self.binaries)
            .field("registry", &self.registry)
            .finish()
    }
}

/// What a conflist's ADD produced: the final result, as the last plugin printed it.
pub type AddResult = Value;

impl<'a> Delegator<'a> {
    /// Binaries from `binaries`, in-process delegates from `registry`, which get `kernel`.
    pub fn new(binaries: Binaries, registry: Registry, kernel: &'a dyn Kernel) -> Self {
        Self { binaries, registry, cluster: None, kernel }
    }

    /// Gives in-process delegates `cluster`.
    #[must_use]
    pub fn with_cluster(mut self, cluster: Option<&'a dyn Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The same delegates, with another kernel session (a GC deletes each container on its own).
    #[must_use]
    pub fn with_kernel<'b>(&self, kernel: &'b dyn Kernel) -> Delegator<'b>
    where
        'a: 'b,
    {
        Delegator {
            binaries: self.binaries.clone(),
            registry: self.registry.clone(),
            cluster: self.cluster,
            kernel,
        }
    }

    /// The plugin binaries.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// Whether `plugin_type` can be run: in-process, or a binary found.
    pub fn available(&self, plugin_type: &str) -> bool {
        self.registry.get(plugin_type).is_some() || self.binaries.find(plugin_type).is_ok()
    }

    /// Runs one plugin of `invocation`'s verb with its full config.
    pub fn call(&self, invocation: &Invocation, config: &Value) -> Result<Option<Value>, Error> {
        let plugin_type = plugin_type(config);
        if let Some(plugin) = self.registry.get(plugin_type) {
            let request = Request { invocation, config, cluster: self.cluster, kernel: self.kernel };
            return call_in_process(&**plugin, plugin_type, &request);
        }
        let env = invocation.env(&self.binaries.path_env());
        Ok(self.binaries.exec(plugin_type, invocation.command, env, config)?)
    }

    /// STATUS of one plugin (CNI 1.1): in-process delegates are always ready.
    pub fn status(&self, config: &Value) -> Result<(), Error> {
        let plugin_type = plugin_type(config);
        if self.registry.get(plugin_type).is_some() {
            return Ok(());
        }
        let env = vec![
            ("CNI_COMMAND", Command::Status.as_str().to_owned()),
            ("CNI_PATH", self.binaries.path_env()),
        ];
        self.binaries.exec(plugin_type, Command::Status, env, config)?;
        Ok(())
    }

    /// ADD of a conf or conflist; returns the final result.
    pub fn add(
        &self,
        network: &NetworkConfig,
        invocation: &Invocation,
        runtime: &Map<String, Value>,
    ) -> Result<AddResult, Error> {
        let mut previous: Option<Value> = None;
        for plugin in network.plugins() {
            let config = plugin_config(plugin, runtime, previous.as_ref());
            let result = self.call(invocation, &config)?;
            previous = Some(result.ok_or_else(|| DelegateError::NoResult(plugin_type(&config).to_owned()))?);
        }
        Ok(previous.ok_or(DelegateError::NoPlugins)?)
    }

    /// DEL of a conf or conflist, plugins in reverse; keeps going past failures and returns
    /// every error.
    pub fn del(
        &self,
        network: &NetworkConfig,
        invocation: &Invocation,
        runtime: &Map<String, Value>,
        previous: Option<&Value>,
    ) -> ErrorList {
        let mut errors = ErrorList::new();
        for plugin in network.plugins().into_iter().rev() {
            let config = plugin_config(plugin, runtime, previous);
            if let Err(e) = self.call(invocation, &config) {
                errors.push(e.context(format!("plugin {}", plugin_type(&config))));
            }
        }
        errors
    }

    /// CHECK of a conf or conflist against the result of its ADD.
    pub fn check(
        &self,
        network: &NetworkConfig,
        invocation: &Invocation,
        runtime: &Map<String, Value>,
        previous: &Value,
    ) -> Result<(), Error> {
        if network.check_disabled() {
            return Ok(());
        }
        for plugin in network.plugins() {
            let config = plugin_config(plugin, runtime, Some(previous));
            self.call(invocation, &config)
                .map_err(|e| e.context(format!("plugin {}", plugin_type(&config))))?;
        }
        Ok(())
    }
}

/// A plugin config's `type`.
pub fn plugin_type(config: &Value) -> &str {
    config.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// One plugin's stdin: its config, the runtime's arguments it has the capability for, and the
/// previous result.
fn plugin_config(
    mut plugin: Map<String, Value>,
    runtime: &Map<String, Value>,
    previous: Option<&Value>,
) -> Value {
    let caps = capabilities(&plugin);
    let granted: Map<String, Value> =
        runtime.iter().filter(|(key, _)| caps.contains(key)).map(|(k, v)| (k.clone(), v.clone())).collect();
    if !granted.is_empty() {
        let entry = plugin.entry("runtimeConfig").or_insert_with(|| Value::Object(Map::new()));
        if let Some(existing) = entry.as_object_mut() {
            existing.extend(granted);
        }
    }
    if let Some(previous) = previous {
        plugin.insert("prevResult".into(), previous.clone());
    }
    Value::Object(plugin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runtime_config_only_for_the_capabilities_asked() {
        let plugin = json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}});
        let runtime = json!({"portMappings": [{"hostPort": 80}], "bandwidth": {"rate": 1}, "mac": "x"});
        let config = plugin_config(
            plugin.as_object().unwrap().clone(),
            runtime.as_object().unwrap(),
            Some(&json!({"cniVersion": "1.0.0"})),
        );
        assert_eq!(config["runtimeConfig"], json!({"portMappings": [{"hostPort": 80}]}));
        assert_eq!(config["prevResult"]["cniVersion"], "1.0.0");
        let plain = plugin_config(
            json!({"type": "x"}).as_object().unwrap().clone(),
            runtime.as_object().unwrap(),
            None,
        );
        assert_eq!(plain, json!({"type": "x"}));
    }

    /// A plugin script in a fresh directory; the directory and what runs it.
    fn script(name: &str, body: &str) -> (plexus_sim::TempDir, Binaries) {
        use std::os::unix::fs::PermissionsExt;
        let dir = plexus_sim::scratch(name).unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let binaries = Binaries::new(Some(dir.path()), &[]);
        (dir, binaries)
    }

    #[test]
    fn a_plugin_that_never_reads_its_config_still_answers() {
        // It closes its stdin at once; a config beyond the pipe's 64 KiB buffer makes the
        // write fail with EPIPE every time, not only when the plugin wins the race.
        let (_dir, binaries) =
            script("no-stdin", "exec 0<&-\necho '{\"cniVersion\": \"1.0.0\", \"ips\": []}'");
        // A small config goes into the pipe's buffer at once, whenever the plugin closes it.
        for pad in [16, 256 * 1024] {
            let config = json!({"cniVersion": "1.0.0", "type": "no-stdin", "pad": "x".repeat(pad)});
            assert_eq!(binaries.exec("no-stdin", Command::Del, vec![], &config).unwrap(), None);
            let result = binaries.exec("no-stdin", Command::Add, vec![], &config).unwrap().unwrap();
            assert_eq!(result["cniVersion"], "1.0.0");
        }
    }

    #[test]
    fn a_plugin_that_prints_before_it_reads_gets_its_config() {
        // 200 KiB to stdout before it reads: a writer that waited for the whole config to go
        // in first would never see it read.
        let (_dir, binaries) = script(
            "chatty",
            "head -c 204800 /dev/zero >&2\ncat > /dev/null\necho '{\"cniVersion\": \"1.0.0\"}'",
        );
        let config = json!({"cniVersion": "1.0.0", "type": "chatty", "pad": "x".repeat(256 * 1024)});
        let result = binaries.exec("chatty", Command::Add, vec![], &config).unwrap().unwrap();
        assert_eq!(result["cniVersion"], "1.0.0");
    }

    #[test]
    fn binaries_are_looked_for_in_bin_dir_then_cni_path_and_never_outside() {
        let binaries = Binaries::new(Some(Path::new("/nonexistent/bin")), &[PathBuf::from("/usr/bin")]);
        assert_eq!(binaries.find("env").unwrap(), PathBuf::from("/usr/bin/env"));
        let err = binaries.find("no-such-plugin").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/bin:/usr/bin"), "{err:?}");
        assert!(matches!(binaries.find("../bin/sh"), Err(DelegateError::InvalidType(_))));
    }
}
