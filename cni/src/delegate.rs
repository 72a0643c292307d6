//! Running delegates: a plugin binary by the CNI exec protocol (config on stdin, result on
//! stdout, exit code plus JSON error on failure), or a delegate type implemented inside Plexus,
//! called in-process. A conflist runs plugin by plugin, each getting the previous result as
//! `prevResult`, and in reverse on DEL.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::multus::cluster::Cluster;
use crate::spec::conf::capabilities;
use crate::spec::{CniError, Command, ErrorCode, Invocation, NetworkConfig};

/// A delegate type implemented inside Plexus: it gets what a binary would get (the
/// invocation, the interface name and the plugin config) and answers what a binary would
/// print (the ADD result). Under the meta-plugin it also gets the meta-plugin's Kubernetes
/// access, where a binary would need a kubeconfig of its own (the userspace delegate reads
/// the pod's volumes and annotates it).
pub trait InProcessPlugin: Send + Sync {
    /// Runs `command` for interface `ifname` with the plugin config `config`.
    fn call(
        &self,
        command: Command,
        invocation: &Invocation,
        ifname: &str,
        config: &Value,
        cluster: Option<&dyn Cluster>,
    ) -> Result<Option<Value>, CniError>;
}

/// The delegate types called in-process, by `type`.
#[derive(Clone, Default)]
pub struct Registry {
    plugins: BTreeMap<String, Arc<dyn InProcessPlugin>>,
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

    fn get(&self, plugin_type: &str) -> Option<&Arc<dyn InProcessPlugin>> {
        self.plugins.get(plugin_type)
    }
}

/// Finds and runs delegates.
#[derive(Clone)]
pub struct Delegator<'a> {
    /// Where binaries are looked for: `binDir`, then CNI_PATH.
    dirs: Vec<PathBuf>,
    registry: Registry,
    /// Given to in-process delegates.
    cluster: Option<&'a dyn Cluster>,
}

impl std::fmt::Debug for Delegator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delegator").field("dirs", &self.dirs).field("registry", &self.registry).finish()
    }
}

/// What a conflist's ADD produced: the final result, as the last plugin printed it.
pub type AddResult = Value;

impl<'a> Delegator<'a> {
    /// Looks for binaries in `bin_dir` first, then in `cni_path`.
    pub fn new(bin_dir: Option<&Path>, cni_path: &[PathBuf], registry: Registry) -> Self {
        let mut dirs: Vec<PathBuf> = bin_dir.map(Path::to_path_buf).into_iter().collect();
        for dir in cni_path {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        Self { dirs, registry, cluster: None }
    }

    /// Gives in-process delegates `cluster`.
    #[must_use]
    pub fn with_cluster(mut self, cluster: Option<&'a dyn Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The CNI_PATH delegates get, so they find their own IPAM plugins where we found them.
    fn path_env(&self) -> String {
        std::env::join_paths(&self.dirs).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The binary of `plugin_type`.
    pub fn find(&self, plugin_type: &str) -> Result<PathBuf, CniError> {
        if plugin_type.is_empty() || plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("invalid plugin type {plugin_type:?}"),
            ));
        }
        self.dirs.iter().map(|dir| dir.join(plugin_type)).find(|path| path.is_file()).ok_or_else(|| {
            let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("plugin {plugin_type:?} not found in {}", dirs.join(":")),
            )
        })
    }

    /// Whether `plugin_type` can be run: in-process, or a binary found.
    pub fn available(&self, plugin_type: &str) -> bool {
        self.registry.get(plugin_type).is_some() || self.find(plugin_type).is_ok()
    }

    /// Runs one plugin with its full config.
    pub fn call(
        &self,
        command: Command,
        invocation: &Invocation,
        ifname: &str,
        config: &Value,
    ) -> Result<Option<Value>, CniError> {
        let plugin_type = config.get("type").and_then(Value::as_str).unwrap_or_default();
        if let Some(plugin) = self.registry.get(plugin_type) {
            return plugin.call(command, invocation, ifname, config, self.cluster);
        }
        self.exec(plugin_type, command, invocation, ifname, config)
    }

    /// Runs the binary of `plugin_type` with `config` on its stdin, by the CNI exec protocol
    /// (an IPAM plugin gets its network's whole config this way).
    pub fn exec(
        &self,
        plugin_type: &str,
        command: Command,
        invocation: &Invocation,
        ifname: &str,
        config: &Value,
    ) -> Result<Option<Value>, CniError> {
        let binary = self.find(plugin_type)?;
        let stdin = serde_json::to_vec(config).map_err(|e| {
            CniError::new(ErrorCode::Decode, "cannot encode plugin config").with_details(e.to_string())
        })?;
        let io = |what: &str, e: std::io::Error| {
            CniError::new(ErrorCode::Io, format!("{what} plugin {}", binary.display()))
                .with_details(e.to_string())
        };
        let mut child = Process::new(&binary)
            .envs(invocation.env_for(command, ifname, &self.path_env()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io("starting", e))?;
        // A config is far below a pipe's buffer: written whole before reading the answer.
        if let Some(mut input) = child.stdin.take() {
            input.write_all(&stdin).map_err(|e| io("writing to", e))?;
        }
        let output = child.wait_with_output().map_err(|e| io("waiting for", e))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(match serde_json::from_slice::<CniError>(&output.stdout) {
                Ok(err) => err,
                Err(_) => CniError::new(
                    ErrorCode::Plugin,
                    format!("plugin {plugin_type} failed ({})", output.status),
                )
                .with_details(stderr),
            });
        }
        if command != Command::Add || output.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&output.stdout).map(Some).map_err(|e| {
            CniError::new(ErrorCode::Decode, format!("plugin {plugin_type} printed no valid result"))
                .with_details(e.to_string())
        })
    }

    /// ADD of a conf or conflist; returns the final result.
    pub fn add(
        &self,
        network: &NetworkConfig,
        invocation: &Invocation,
        ifname: &str,
        runtime: &Map<String, Value>,
    ) -> Result<AddResult, CniError> {
        let mut previous: Option<Value> = None;
        for plugin in network.plugins() {
            let config = plugin_config(plugin, runtime, previous.as_ref());
            let result = self.call(Command::Add, invocation, ifname, &config)?;
            previous = Some(result.ok_or_else(|| {
                CniError::new(ErrorCode::Decode, format!("plugin {} printed no result", plugin_type(&config)))
            })?);
        }
        previous.ok_or_else(|| CniError::new(ErrorCode::InvalidNetworkConfig, "no plugins"))
    }

    /// DEL of a conf or conflist, plugins in reverse; keeps going past failures and returns
    /// every error.
    pub fn del(
        &self,
        network: &NetworkConfig,
        invocation: &Invocation,
        ifname: &str,
        runtime: &Map<String, Value>,
        previous: Option<&Value>,
    ) -> Vec<CniError> {
        let mut errors = Vec::new();
        for plugin in network.plugins().into_iter().rev() {
            let config = plugin_config(plugin, runtime, previous);
            if let Err(e) = self.call(Command::Del, invocation, ifname, &config) {
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
        ifname: &str,
        runtime: &Map<String, Value>,
        previous: &Value,
    ) -> Result<(), CniError> {
        if network.check_disabled() {
            return Ok(());
        }
        for plugin in network.plugins() {
            let config = plugin_config(plugin, runtime, Some(previous));
            self.call(Command::Check, invocation, ifname, &config)
                .map_err(|e| e.context(format!("plugin {}", plugin_type(&config))))?;
        }
        Ok(())
    }
}

fn plugin_type(config: &Value) -> &str {
    config.get("type").and_then(Value::as_str).unwrap_or("?")
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

    #[test]
    fn binaries_are_looked_for_in_bin_dir_then_cni_path_and_never_outside() {
        let delegator = Delegator::new(
            Some(Path::new("/nonexistent/bin")),
            &[PathBuf::from("/usr/bin")],
            Registry::default(),
        );
        assert_eq!(delegator.find("env").unwrap(), PathBuf::from("/usr/bin/env"));
        let err = delegator.find("no-such-plugin").unwrap_err();
        assert!(err.msg.contains("/nonexistent/bin:/usr/bin"), "{err:?}");
        assert!(delegator.find("../bin/sh").is_err());
    }
}
