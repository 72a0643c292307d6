//! The meta-plugin's verbs with Multus semantics: ADD attaches the cluster network and every
//! secondary network the pod asks for ([`super::plan`]), DEL removes them all (from the cache
//! alone if need be), CHECK checks each, STATUS and GC as CNI 1.1 has them. Each verb opens one
//! kernel session for the container it works on and hands it to every in-process delegate and
//! to the default-route step.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_hw::{IfName, Node};
use serde_json::{Value, json};

use super::cache::{self, CacheEntry, Durability};
use super::cluster::Cluster;
use super::config::MetaConfig;
use super::devices::{Devices, forget_device_info};
use super::plan::{Attachment, Planner, cached_config, effective_config};
use super::selection::NetworkSelection;
use super::status;
use crate::delegate::{Binaries, Delegator, Registry};
use crate::error::{Error, ErrorList};
use crate::phases::timed;
use crate::spec::{CniResult, CniVersion, Command, ErrorCode, Invocation};

/// How long ADD waits for `readinessindicatorfile` to appear.
pub const READINESS_WAIT: Duration = Duration::from_secs(10);

/// A verb's own failure.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The readiness indicator file did not appear in time (the spec's "try again later").
    #[error("readiness indicator file {file} did not appear within {wait:?}")]
    NotReady {
        /// The file.
        file: std::path::PathBuf,
        /// How long ADD waited.
        wait: Duration,
    },
    /// CHECK of a container never added.
    #[error("container {0} was not added")]
    NotAdded(String),
    /// CHECK of an attachment whose ADD did not finish.
    #[error("network {0}: its ADD did not finish")]
    Unfinished(String),
    /// STATUS: the plugin cannot take ADDs.
    #[error("{0}")]
    Unavailable(String),
}

impl crate::error::Failure for MetaError {
    fn code(&self) -> u32 {
        let code: ErrorCode = match self {
            Self::NotReady { .. } => ErrorCode::TryAgainLater,
            Self::NotAdded(_) | Self::Unfinished(_) => ErrorCode::UnknownContainer,
            Self::Unavailable(_) => ErrorCode::PluginNotAvailable,
        };
        code.into()
    }
}

/// CNI_ARGS for a delegate, as Multus gives them: `IgnoreUnknown=1` (plugins that know no
/// Kubernetes args refuse them otherwise, and runtimes do not always send it) and the pod's
/// identity; nothing else of the caller's. On ADD, the selection's `mac` and `ips` too, as
/// `MAC=` and `IP=` (comma-separated), whatever the network's capabilities: static IPAM and
/// host-local read them there (the selection checked both, so neither holds `;` or `=`).
fn delegate_args(invocation: &Invocation, selection: Option<&NetworkSelection>) -> String {
    let mut args = vec!["IgnoreUnknown=1".to_owned()];
    for key in ["K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"] {
        if let Some(value) = invocation.cni_arg(key) {
            args.push(format!("{key}={value}"));
        }
    }
    if let Some(selection) = selection {
        if let Some(mac) = &selection.mac {
            args.push(format!("MAC={mac}"));
        }
        if !selection.ips.is_empty() {
            args.push(format!("IP={}", selection.ips.join(",")));
        }
    }
    args.join(";")
}

/// The meta-plugin of one call.
pub struct MetaPlugin<'a> {
    /// Its config (stdin).
    pub config: MetaConfig,
    /// Kubernetes, when reachable.
    pub cluster: Option<&'a dyn Cluster>,
    /// The node: its host namespace, for the kernel sessions.
    pub node: &'a Node,
    /// The delegates run in-process.
    pub registry: Registry,
    /// CNI_PATH.
    pub path: Vec<std::path::PathBuf>,
    /// The pod's allocated devices, for NADs naming a resource.
    pub devices: Option<&'a dyn Devices>,
}

impl std::fmt::Debug for MetaPlugin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaPlugin").field("config", &self.config).field("registry", &self.registry).finish()
    }
}

impl MetaPlugin<'_> {
    fn planner(&self) -> Planner<'_> {
        Planner { config: &self.config, cluster: self.cluster, devices: self.devices }
    }

    fn binaries(&self) -> Binaries {
        Binaries::new(Some(&self.config.bin_dir), &self.path)
    }

    /// The invocation of attachment `ifname`'s delegate: its interface, the pod's namespace
    /// `netns`, and the delegate's CNI_ARGS.
    fn delegate_invocation(
        invocation: &Invocation,
        command: Command,
        ifname: &IfName,
        netns: Option<&Path>,
        selection: Option<&NetworkSelection>,
    ) -> Invocation {
        Invocation {
            command,
            netns: netns.map(Path::to_path_buf),
            ifname: ifname.clone(),
            args: delegate_args(invocation, selection),
            ..invocation.clone()
        }
    }

    fn wait_for_readiness(&self, wait: Duration) -> Result<(), MetaError> {
        let Some(file) = &self.config.readiness_indicator_file else {
            return Ok(());
        };
        let deadline = Instant::now() + wait;
        while !file.exists() {
            if Instant::now() >= deadline {
                return Err(MetaError::NotReady { file: file.clone(), wait });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// ADD: every attachment, or none. Returns the cluster network's result in the caller's
    /// version.
    pub fn add(&self, invocation: &Invocation) -> Result<Value, Error> {
        self.add_with_readiness_wait(invocation, READINESS_WAIT)
    }

    /// ADD, waiting at most `wait` for the readiness indicator file.
    pub fn add_with_readiness_wait(&self, invocation: &Invocation, wait: Duration) -> Result<Value, Error> {
        // Dropped at once: the ADD is whole when this returns.
        self.add_answering_first(invocation, wait).map(|(answer, _aftermath)| answer)
    }

    /// ADD, but what its answer does not depend on is left in the [`Aftermath`], for the caller
    /// to finish (by dropping it) once the answer is out: the agent answers first.
    pub fn add_answering_first(
        &self,
        invocation: &Invocation,
        wait: Duration,
    ) -> Result<(Value, Aftermath), Error> {
        let dir = &self.config.cni_dir;
        let held = timed("lock", || cache::lock(dir, &invocation.container_id))?;
        // Dropped on failure too: the lock goes as it always did.
        let mut aftermath = Aftermath {
            cni_dir: dir.clone(),
            container_id: invocation.container_id.clone(),
            entry: None,
            held: Some(held),
        };
        let answer = self.add_locked(invocation, wait, &mut aftermath.entry)?;
        Ok((answer, aftermath))
    }

    /// Runs `verb` holding the container's lock (see [`cache::lock`]).
    fn locked<T>(
        &self,
        invocation: &Invocation,
        verb: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let dir = &self.config.cni_dir;
        let held = timed("lock", || cache::lock(dir, &invocation.container_id))?;
        let result = verb();
        cache::unlock(dir, &invocation.container_id, held);
        result
    }

    /// ADD under the container's lock; on success, `last_save` gets the entry with every
    /// result, for the [`Aftermath`] to save.
    fn add_locked(
        &self,
        invocation: &Invocation,
        wait: Duration,
        last_save: &mut Option<CacheEntry>,
    ) -> Result<Value, Error> {
        self.wait_for_readiness(wait)?;
        let planner = self.planner();
        let pod = timed("pod", || planner.pod(invocation))?;
        let plan = timed("networks", || planner.plan(invocation, pod.as_ref()))?;
        let mut entry = entry_of(invocation, &plan);
        // Saved before the first delegate runs: whatever happens next, DEL knows what to undo.
        timed("cache", || cache::save(&self.config.cni_dir, &entry, Durability::Synced))?;

        let kernel = self.node.session(invocation.netns.as_deref());
        let delegator =
            Delegator::new(self.binaries(), self.registry.clone(), &kernel).with_cluster(self.cluster);
        for (i, att) in plan.iter().enumerate() {
            let config = effective_config(&att.found.config, &att.injected);
            let netns = invocation.netns.as_deref();
            let call = Self::delegate_invocation(
                invocation,
                Command::Add,
                &att.ifname,
                netns,
                att.selection.as_ref(),
            );
            let added = timed(format!("delegate {}", att.name), || {
                delegator.add(&config, &call, &att.runtime_config)
            });
            match added {
                Ok(result) => {
                    entry.attachments[i].result = Some(result);
                    // The last one waits for the answer (see Aftermath); the ones before are
                    // saved now, for a DEL after a crash midway.
                    if i + 1 < plan.len() {
                        cache::save(&self.config.cni_dir, &entry, Durability::Unsynced)?;
                    }
                }
                Err(err) => {
                    self.roll_back(&delegator, invocation, &entry, i);
                    return Err(err.context(format!("network {} ({})", att.name, att.ifname)));
                }
            }
        }
        if let Err(err) = timed("default-route", || self.apply_default_route(&kernel, &plan)) {
            self.roll_back(&delegator, invocation, &entry, plan.len() - 1);
            return Err(err);
        }

        // The runtime's answer, in the version of the meta-plugin's config (a 0.2.0 one has
        // no form without an address: undone like any failed step).
        let cluster_result = entry.attachments[0].result.clone().unwrap_or(Value::Null);
        let answer = CniResult::from_value(&cluster_result)
            .and_then(|result| result.to_value(self.config.cni_version))
            .map_err(|e| Error::from(e).context(format!("the result of network {}", plan[0].name)));
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                self.roll_back(&delegator, invocation, &entry, plan.len() - 1);
                return Err(err);
            }
        };

        let report = status::report_of(&plan, &entry, self.devices)?;
        if let (Some(cluster), Some(pod)) = (self.cluster, &pod) {
            status::report(cluster, pod, &report)?;
        }
        *last_save = Some(entry);
        Ok(answer)
    }

    /// Deletes attachments `0..=last` in reverse after a failed ADD, and the cache with them
    /// once every one is undone; what fails is logged, and its cache entry stays, so that the
    /// runtime's DEL finishes the job.
    fn roll_back(&self, delegator: &Delegator<'_>, invocation: &Invocation, entry: &CacheEntry, last: usize) {
        let mut errors = ErrorList::new();
        for att in entry.attachments[..=last].iter().rev() {
            match cached_config(att) {
                Ok(config) => {
                    let call = Self::delegate_invocation(
                        invocation,
                        Command::Del,
                        &att.ifname,
                        invocation.netns.as_deref(),
                        None,
                    );
                    errors.append(
                        delegator
                            .del(&config, &call, &att.runtime_config, att.result.as_ref())
                            .context(format!("network {}", att.name)),
                    );
                }
                Err(err) => errors.push(Error::from(err).context(format!("network {}", att.name))),
            }
        }
        if errors.is_empty() {
            errors.keep(cache::remove(&self.config.cni_dir, &entry.container_id));
        } else if let Err(err) = cache::save(&self.config.cni_dir, entry, Durability::Unsynced) {
            // Every result known, for the DEL that finishes the job (the last one is not saved
            // yet when a step after the delegates fails).
            tracing::warn!("rolling back: keeping the results for DEL: {err}");
        }
        for err in errors.iter() {
            tracing::warn!("rolling back (kept for DEL): {err}");
        }
    }

    fn apply_default_route(
        &self,
        kernel: &dyn plexus_hw::kernel::Kernel,
        plan: &[Attachment],
    ) -> Result<(), Error> {
        let interfaces: Vec<&IfName> = plan.iter().map(|a| &a.ifname).collect();
        for chosen in plan {
            for gateway in chosen.default_route().unwrap_or_default() {
                crate::routes::set_default_route(kernel, &interfaces, &chosen.ifname, *gateway)?;
            }
        }
        Ok(())
    }

    /// DEL: every cached attachment in reverse; every error is collected. With no cache, the
    /// attachments are rebuilt from the API when the pod is still there; else nothing was ever
    /// attached (the cache is written before any delegate runs) and DEL succeeds.
    pub fn del(&self, invocation: &Invocation) -> Result<(), Error> {
        self.locked(invocation, || self.del_locked(invocation))
    }

    fn del_locked(&self, invocation: &Invocation) -> Result<(), Error> {
        cache::sweep(&self.config.cni_dir);
        let entry = match cache::load(&self.config.cni_dir, &invocation.container_id) {
            Ok(Some(entry)) => entry,
            // The runtime's DELs at the sandbox's garbage collection: nothing cached (the first
            // DEL finished and removed it; an ADD caches before its first delegate) and no
            // namespace: nothing is left to undo, and the spec asks for success.
            Ok(None) if invocation.netns.is_none() => {
                tracing::info!(
                    "DEL of {}: nothing cached and no network namespace: already done",
                    invocation.container_id
                );
                return Ok(());
            }
            Ok(None) => match self.rebuild(invocation) {
                Some(entry) => entry,
                None => return Ok(()),
            },
            Err(err) => {
                // A corrupt cache must not make DEL skip the delegates (IPs would leak): use what
                // the API and the config still tell.
                tracing::warn!("{err}");
                self.rebuild(invocation).unwrap_or_else(|| self.static_entry(invocation))
            }
        };
        // The runtime's netns, else the one ADD had; gone, delegates are told so by an empty
        // CNI_NETNS, as the runtime would.
        let netns = invocation
            .netns
            .clone()
            .or_else(|| (!entry.netns.is_empty()).then(|| entry.netns.clone().into()));
        let netns = netns.filter(|path: &std::path::PathBuf| path.exists());
        let kernel = self.node.session(netns.as_deref());
        let delegator =
            Delegator::new(self.binaries(), self.registry.clone(), &kernel).with_cluster(self.cluster);
        let mut errors = ErrorList::new();
        for att in entry.attachments.iter().rev() {
            let call =
                Self::delegate_invocation(invocation, Command::Del, &att.ifname, netns.as_deref(), None);
            match cached_config(att) {
                Ok(config) => errors.append(timed(format!("delegate {}", att.name), || {
                    delegator
                        .del(&config, &call, &att.runtime_config, att.result.as_ref())
                        .context(format!("network {}", att.name))
                })),
                Err(err) => errors.push(err),
            }
        }
        if let Some(devices) = self.devices {
            let ifnames = entry.attachments.iter().map(|a| a.ifname.as_str());
            forget_device_info(devices.devinfo_dir(), &entry.container_id, ifnames);
        }
        if errors.is_empty() || !self.config.retry_delete_on_error {
            errors.keep(cache::remove(&self.config.cni_dir, &entry.container_id));
        }
        let failed = errors.len();
        errors.into_result().map_err(|e| match failed {
            1 => e,
            n => e.context(format!("{n} networks failed to delete")),
        })
    }

    /// What a DEL without a cache entry can still undo: the plan of the pod's networks, when
    /// the pod is still there.
    fn rebuild(&self, invocation: &Invocation) -> Option<CacheEntry> {
        let planner = self.planner();
        let Some(pod) = planner.existing_pod(invocation).ok().flatten() else {
            if let Some(pod) = invocation.pod() {
                tracing::info!(
                    "DEL of {}: nothing cached and pod {}/{} is gone: nothing to undo",
                    invocation.container_id,
                    pod.namespace,
                    pod.name
                );
            }
            return None;
        };
        let plan = planner.plan(invocation, Some(&pod)).ok()?;
        Some(entry_of(invocation, &plan))
    }

    fn static_entry(&self, invocation: &Invocation) -> CacheEntry {
        let plan = self.planner().plan(invocation, None).unwrap_or_default();
        entry_of(invocation, &plan)
    }

    /// CHECK: every attachment against its cached result (Multus checks none when it uses
    /// `clusterNetwork`).
    pub fn check(&self, invocation: &Invocation) -> Result<(), Error> {
        self.locked(invocation, || self.check_locked(invocation))
    }

    fn check_locked(&self, invocation: &Invocation) -> Result<(), Error> {
        let entry = cache::load(&self.config.cni_dir, &invocation.container_id)?
            .ok_or_else(|| MetaError::NotAdded(invocation.container_id.clone()))?;
        let kernel = self.node.session(invocation.netns.as_deref());
        let delegator =
            Delegator::new(self.binaries(), self.registry.clone(), &kernel).with_cluster(self.cluster);
        for att in &entry.attachments {
            let result = att.result.as_ref().ok_or_else(|| MetaError::Unfinished(att.name.clone()))?;
            let config = cached_config(att)?;
            let call = Self::delegate_invocation(
                invocation,
                Command::Check,
                &att.ifname,
                invocation.netns.as_deref(),
                None,
            );
            delegator
                .check(&config, &call, &att.runtime_config, result)
                .map_err(|e| e.context(format!("network {}", att.name)))?;
        }
        Ok(())
    }

    /// STATUS: ready when the readiness indicator file (if any) exists and the cluster
    /// network's plugins can be run (and, for CNI 1.1 delegates, say they are ready).
    pub fn status(&self) -> Result<(), Error> {
        if let Some(file) = &self.config.readiness_indicator_file
            && !file.exists()
        {
            let message = format!("readiness indicator file {} does not exist", file.display());
            return Err(MetaError::Unavailable(message).into());
        }
        let network =
            self.planner().cluster_network(None).map_err(|e| MetaError::Unavailable(e.to_string()))?;
        let (name, config) = (network.name, network.found.config);
        let kernel = self.node.session(None);
        let delegator = Delegator::new(self.binaries(), self.registry.clone(), &kernel);
        let speaks_status = config.cni_version().is_some_and(|v| v >= CniVersion::V1_1_0);
        for plugin in config.plugins() {
            let plugin_type = plugin.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
            if !delegator.available(&plugin_type) {
                let message = format!("cluster network {name}: plugin {plugin_type} not found");
                return Err(MetaError::Unavailable(message).into());
            }
            if speaks_status {
                delegator
                    .status(&Value::Object(plugin))
                    .map_err(|e| e.context(format!("cluster network {name}")))?;
            }
        }
        Ok(())
    }

    /// GC: deletes what is cached for attachments the runtime no longer knows
    /// (`cni.dev/valid-attachments` on stdin), passing over a container another call is
    /// working on; removes what killed calls left; keeps going past a failure.
    pub fn gc(&self, stdin: &Value) -> Result<(), Error> {
        let valid: BTreeSet<(String, String)> = stdin
            .get("cni.dev/valid-attachments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((a.get("containerID")?.as_str()?.to_owned(), a.get("ifname")?.as_str()?.to_owned()))
            })
            .collect();
        let mut errors = ErrorList::new();
        let dir = &self.config.cni_dir;
        cache::sweep(dir);
        for container_id in cache::list(dir) {
            let held = match cache::try_lock(dir, &container_id) {
                Ok(Some(held)) => held,
                Ok(None) => continue,
                Err(err) => {
                    errors.push(Error::from(err).context(format!("container {container_id}")));
                    continue;
                }
            };
            let entry = match cache::load(dir, &container_id) {
                Ok(Some(entry))
                    if !valid.contains(&(entry.container_id.clone(), entry.ifname.to_string())) =>
                {
                    entry
                }
                _ => {
                    cache::unlock(dir, &container_id, held);
                    continue;
                }
            };
            let invocation = Invocation {
                command: Command::Del,
                container_id: entry.container_id.clone(),
                netns: (!entry.netns.is_empty()).then(|| entry.netns.clone().into()),
                ifname: entry.ifname.clone(),
                args: entry.cni_args.clone(),
                path: self.path.clone(),
            };
            // What the runtime no longer knows has no pod to ask about.
            let stale = MetaPlugin {
                config: self.config.clone(),
                cluster: None,
                node: self.node,
                registry: self.registry.clone(),
                path: self.path.clone(),
                devices: self.devices,
            };
            if let Err(err) = stale.del_locked(&invocation) {
                errors.push(err.context(format!("container {container_id}")));
            }
            cache::unlock(dir, &container_id, held);
        }
        errors.into_result()
    }
}

/// What a successful ADD leaves until its answer is out, done when dropped: the last
/// delegate's result into the DEL cache, then the container's lock.
///
/// The answer does not depend on either, and the lock keeps every later call of the container
/// (DEL, CHECK) waiting until both are done, so they find the result as before. The one cost of
/// answering first: killed in between, the cache keeps the entry saved before the delegates ran,
/// whose last result is missing; DEL then runs without that `prevResult`, which delegates
/// tolerate (see [`Durability::Unsynced`]), and CHECK reports the network unfinished.
#[must_use = "dropping it finishes the ADD"]
#[derive(Debug)]
pub struct Aftermath {
    cni_dir: std::path::PathBuf,
    container_id: String,
    /// The entry with every result; none when the ADD failed.
    entry: Option<CacheEntry>,
    held: Option<crate::files::Locked>,
}

impl Drop for Aftermath {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take()
            && let Err(err) = cache::save(&self.cni_dir, &entry, Durability::Unsynced)
        {
            // The answer is out: all that is lost is the result DEL would pass on.
            tracing::warn!("ADD of {}: keeping its result for DEL: {err}", self.container_id);
        }
        if let Some(held) = self.held.take() {
            cache::unlock(&self.cni_dir, &self.container_id, held);
        }
    }
}

/// The cache entry of `plan`, with no result yet.
fn entry_of(invocation: &Invocation, plan: &[Attachment]) -> CacheEntry {
    CacheEntry {
        container_id: invocation.container_id.clone(),
        netns: invocation.netns_str(),
        ifname: invocation.ifname.clone(),
        cni_args: invocation.args.clone(),
        attachments: plan.iter().map(Attachment::cached).collect(),
    }
}

/// The VERSION answer.
pub fn version_info() -> Value {
    let supported: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
    json!({ "cniVersion": CniVersion::LATEST.as_str(), "supportedVersions": supported })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn delegates_get_ignore_unknown_and_the_pods_identity_only() {
        let invocation = |args: &str| Invocation {
            command: Command::Add,
            container_id: "c1".into(),
            netns: Some("/run/netns/p".into()),
            ifname: "eth0".parse().unwrap(),
            args: args.into(),
            path: vec!["/opt/cni/bin".into()],
        };
        let with_pod = invocation("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;MAC=x");
        assert_eq!(delegate_args(&with_pod, None), "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web");
        assert_eq!(delegate_args(&invocation(""), None), "IgnoreUnknown=1");
        // The pod's own requests, as Multus adds them on ADD.
        let selection = NetworkSelection {
            name: "static-net".into(),
            mac: Some("c2:b0:57:49:47:f1".into()),
            ips: vec!["10.1.1.101/24".into(), "fd00::5/64".into()],
            ..Default::default()
        };
        assert_eq!(
            delegate_args(&with_pod, Some(&selection)),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;MAC=c2:b0:57:49:47:f1;IP=10.1.1.101/24,fd00::5/64"
        );
    }
}
