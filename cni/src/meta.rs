//! The meta-plugin's verbs with Multus semantics: ADD attaches the cluster network and every
//! secondary network the pod asks for, DEL removes them all (from the cache alone if need be),
//! CHECK checks each, STATUS and GC as CNI 1.1 has them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_hw::netlink::IpFamily;
use serde_json::{Map, Value, json};

use crate::delegate::Delegator;
use crate::multus::cache::{self, CacheEntry, CachedAttachment, Durability};
use crate::multus::cluster::{Cluster, NetworkStatus, Pod, RESOURCE_NAME_ANNOTATION};
use crate::multus::config::MetaConfig;
use crate::multus::devices::{Devices, device_info_for_cni, forget_device_info};
use crate::multus::resolve::{self, Found};
use crate::multus::selection::{self, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, NetworkSelection};
use crate::routes::PodRoutes;
use crate::spec::{CniError, CniResult, CniVersion, Command, ErrorCode, Invocation, NetworkConfig};

/// How long ADD waits for `readinessindicatorfile` to appear.
pub const READINESS_WAIT: Duration = Duration::from_secs(10);

/// One network to attach.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The name in network-status (`ns/nad`, or the conf's name).
    pub name: String,
    /// The interface in the pod.
    pub ifname: String,
    /// True for the cluster network.
    pub cluster_network: bool,
    /// The config found.
    pub found: Found,
    /// The selection element that asked for it.
    pub selection: Option<NetworkSelection>,
    /// Runtime arguments for the delegate's capabilities.
    pub runtime_config: Map<String, Value>,
    /// Keys set in every plugin of the config.
    pub injected: Map<String, Value>,
    /// The device plugin resource and the pod's device of it this attachment took.
    pub device: Option<(String, String)>,
}

/// The pod's identity from CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID).
pub fn pod_ref(invocation: &Invocation) -> Option<(String, String, String)> {
    let ns = invocation.cni_arg("K8S_POD_NAMESPACE")?;
    let name = invocation.cni_arg("K8S_POD_NAME")?;
    Some((ns, name, invocation.cni_arg("K8S_POD_UID").unwrap_or_default()))
}

/// CNI_ARGS for a delegate, as Multus gives them: `IgnoreUnknown=1` (plugins that know no
/// Kubernetes args refuse them otherwise, and runtimes do not always send it) and the pod's
/// identity; nothing else of the caller's.
fn delegate_args(invocation: &Invocation) -> String {
    let mut args = vec!["IgnoreUnknown=1".to_owned()];
    for key in ["K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"] {
        if let Some(value) = invocation.cni_arg(key) {
            args.push(format!("{key}={value}"));
        }
    }
    args.join(";")
}

/// Gives a delegate device `id` of `resource`: `deviceID` in its runtimeConfig, `deviceID` and
/// `pciBusID` in its plugins. Returns what the attachment records.
fn inject_device(
    runtime_config: &mut Map<String, Value>,
    injected: &mut Map<String, Value>,
    resource: &str,
    id: String,
) -> (String, String) {
    runtime_config.insert("deviceID".into(), json!(id));
    injected.insert("deviceID".into(), json!(id));
    injected.insert("pciBusID".into(), json!(id));
    (resource.to_owned(), id)
}

/// A config with the injected keys set, as the delegate gets it.
fn effective_config(config: &NetworkConfig, injected: &Map<String, Value>) -> NetworkConfig {
    let mut config = config.clone();
    for (key, value) in injected {
        if key == "pciBusID" {
            // Only host-device reads it; the SR-IOV plugins read deviceID.
            let (NetworkConfig::Conf(map) | NetworkConfig::List(map)) = &mut config;
            let is_host_device =
                |m: &Map<String, Value>| m.get("type").and_then(Value::as_str) == Some("host-device");
            if is_host_device(map) {
                map.insert(key.clone(), value.clone());
            }
            for plugin in map.get_mut("plugins").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(plugin) = plugin.as_object_mut().filter(|p| is_host_device(p)) {
                    plugin.insert(key.clone(), value.clone());
                }
            }
        } else {
            config.set_in_plugins(key, value.clone());
        }
    }
    config
}

fn cached_config(att: &CachedAttachment) -> Result<NetworkConfig, CniError> {
    let config = NetworkConfig::parse(att.config.as_bytes(), &format!("cached config of {}", att.name))?;
    Ok(effective_config(&config, &att.injected))
}

/// The meta-plugin for one invocation.
pub struct MetaPlugin<'a> {
    /// Its config (stdin).
    pub config: MetaConfig,
    /// Its environment.
    pub invocation: Invocation,
    /// Kubernetes, when reachable.
    pub cluster: Option<&'a dyn Cluster>,
    /// How delegates run.
    pub delegator: Delegator<'a>,
    /// Route changes in the pod's namespace.
    pub routes: &'a dyn PodRoutes,
    /// The pod's allocated devices, for NADs naming a resource.
    pub devices: Option<&'a dyn Devices>,
}

impl std::fmt::Debug for MetaPlugin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaPlugin")
            .field("config", &self.config)
            .field("invocation", &self.invocation)
            .finish()
    }
}

impl MetaPlugin<'_> {
    fn invalid(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::InvalidNetworkConfig, msg)
    }

    /// A cluster or default network named by `clusterNetwork` / `defaultNetworks` (or the
    /// default-network annotation): a NAD in `namespace` when the API is there, else a conf
    /// by name, a directory or a file.
    fn reference(
        &self,
        reference: &str,
        namespace: &str,
    ) -> Result<(String, Found, Option<String>), CniError> {
        let (ns, name) = match reference.split_once('/') {
            Some((ns, name)) if selection::is_dns1123_label(ns) && selection::is_dns1123_subdomain(name) => {
                (ns, name)
            }
            _ => (namespace, reference),
        };
        if let Some(cluster) = self.cluster
            && selection::is_dns1123_subdomain(name)
            && let Some(nad) = cluster.nad(ns, name)?
        {
            let found = resolve::nad_config(&nad.namespace, &nad.name, &nad.config, &self.config.conf_dir)?;
            let resource = nad.annotations.get(RESOURCE_NAME_ANNOTATION).cloned();
            return Ok((format!("{}/{}", nad.namespace, nad.name), found, resource));
        }
        let found = resolve::static_network(reference, &self.config.conf_dir)?;
        let name = found.config.name().unwrap_or(reference).to_owned();
        Ok((name, found, None))
    }

    /// Every network to attach, in order, with interface names; nothing is created yet.
    pub fn plan(&self, pod: Option<&Pod>) -> Result<Vec<Attachment>, CniError> {
        let annotation = |key: &str| pod.and_then(|p| p.annotations.get(key)).map(String::as_str);
        let mut plan = Vec::new();

        // The cluster network (a NAD of it with a resourceName takes the pod's first device, as
        // in Multus: a pod whose eth0 is a VF).
        let mut taken: BTreeMap<String, (Vec<String>, usize)> = BTreeMap::new();
        let (name, found, selection, resource) = if let Some(text) = annotation(DEFAULT_NETWORK_ANNOTATION) {
            let mut elements = selection::parse(DEFAULT_NETWORK_ANNOTATION, text)?;
            if elements.len() != 1 {
                return Err(Self::invalid(format!(
                    "{DEFAULT_NETWORK_ANNOTATION}: exactly one network expected"
                )));
            }
            let element = elements.remove(0);
            let ns = element.namespace.clone().unwrap_or_else(|| self.config.multus_namespace.clone());
            let (name, found, resource) = self.reference(&format!("{ns}/{}", element.name), &ns)?;
            (name, found, Some(element), resource)
        } else if let Some(reference) = &self.config.cluster_network {
            let (name, found, resource) = self.reference(reference, &self.config.multus_namespace)?;
            (name, found, None, resource)
        } else {
            let config = self
                .config
                .delegates
                .get(self.config.master_delegate)
                .cloned()
                .ok_or_else(|| Self::invalid("no cluster network"))?;
            let name = config.name().unwrap_or("cluster-network").to_owned();
            let text = config.to_value().to_string();
            (name, Found { config, text }, None, None)
        };
        let mut runtime_config = self.config.runtime_config.clone();
        let mut injected = Map::new();
        let mut device = None;
        if let (Some(resource), Some(pod)) = (&resource, pod)
            && let Some(id) = self.next_device(&mut taken, resource, pod, &name)?
        {
            device = Some(inject_device(&mut runtime_config, &mut injected, resource, id));
        }
        plan.push(Attachment {
            name,
            ifname: self.invocation.ifname.clone(),
            cluster_network: true,
            found,
            selection,
            runtime_config,
            injected,
            device,
        });

        let pod_namespace = pod.map(|p| p.namespace.as_str());
        let mut secondaries: Vec<(String, Found, Option<NetworkSelection>, Option<String>)> = Vec::new();
        // The rest of the oldest format's delegates.
        if self.config.cluster_network.is_none() {
            for (i, config) in self.config.delegates.iter().enumerate() {
                if i != self.config.master_delegate {
                    let name = config.name().unwrap_or("delegate").to_owned();
                    secondaries.push((
                        name,
                        Found { config: config.clone(), text: config.to_value().to_string() },
                        None,
                        None,
                    ));
                }
            }
        }
        // defaultNetworks, except for pods in the system namespaces.
        let system = pod_namespace.is_some_and(|ns| self.config.system_namespaces.iter().any(|s| s == ns));
        if !system {
            for reference in &self.config.default_networks {
                let (name, found, resource) = self.reference(reference, &self.config.multus_namespace)?;
                secondaries.push((name, found, None, resource));
            }
        }
        // The pod's selection.
        if let Some(text) = annotation(NETWORKS_ANNOTATION) {
            let pod = pod.ok_or_else(|| Self::invalid("network selection without a pod"))?;
            let cluster =
                self.cluster.ok_or_else(|| Self::invalid("network selection needs the Kubernetes API"))?;
            for element in selection::parse(NETWORKS_ANNOTATION, text)? {
                let ns = element.namespace.clone().unwrap_or_else(|| pod.namespace.clone());
                if self.config.namespace_isolation
                    && ns != pod.namespace
                    && !self.config.global_namespaces.contains(&ns)
                {
                    return Err(Self::invalid(format!(
                        "network {ns}/{}: namespace isolation forbids pod {}/{} to use a network of namespace {ns}",
                        element.name, pod.namespace, pod.name
                    )));
                }
                let Some(nad) = cluster.nad(&ns, &element.name)? else {
                    let message = format!(
                        "cannot find a network-attachment-definition ({}) in namespace ({ns})",
                        element.name
                    );
                    cluster.event(pod, "NoNetworkFound", &message, true);
                    return Err(Self::invalid(message));
                };
                let found =
                    resolve::nad_config(&nad.namespace, &nad.name, &nad.config, &self.config.conf_dir)?;
                let resource = nad.annotations.get(RESOURCE_NAME_ANNOTATION).cloned();
                secondaries.push((format!("{ns}/{}", element.name), found, Some(element), resource));
            }
        }

        // Each attachment of a resource takes the pod's next device of it, in sorted order.
        for (position, (name, found, selection, resource)) in secondaries.into_iter().enumerate() {
            let ifname = selection
                .as_ref()
                .and_then(|s| s.interface.clone())
                .unwrap_or_else(|| format!("net{}", position + 1));
            let mut runtime_config = Map::new();
            let mut injected = Map::new();
            if let Some(s) = &selection {
                let mut put = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        runtime_config.insert(key.into(), value);
                    }
                };
                put("portMappings", s.port_mappings.clone());
                put("bandwidth", s.bandwidth.clone());
                put("ips", (!s.ips.is_empty()).then(|| json!(s.ips)));
                put("mac", s.mac.clone().map(Value::String));
                put("infinibandGUID", s.infiniband_guid.clone().map(Value::String));
                put("deviceID", s.device_id.clone().map(Value::String));
                if let Some(device) = &s.device_id {
                    injected.insert("deviceID".into(), json!(device));
                    injected.insert("pciBusID".into(), json!(device));
                }
                if let Some(args) = &s.cni_args {
                    injected.insert("args".into(), json!({ "cni": args }));
                }
            }
            let chosen = selection.as_ref().and_then(|s| s.device_id.clone());
            let mut device = None;
            if let (None, Some(resource), Some(pod)) = (chosen, &resource, pod)
                && let Some(id) = self.next_device(&mut taken, resource, pod, &name)?
            {
                device = Some(inject_device(&mut runtime_config, &mut injected, resource, id));
            }
            plan.push(Attachment {
                name,
                ifname,
                cluster_network: false,
                found,
                selection,
                runtime_config,
                injected,
                device,
            });
        }

        // Checked before anything is created.
        let mut names = BTreeSet::new();
        for att in &plan {
            if !names.insert(att.ifname.as_str()) {
                return Err(Self::invalid(format!(
                    "interface name {:?} requested twice (network {})",
                    att.ifname, att.name
                )));
            }
        }
        let gateways: Vec<IpAddr> =
            plan.iter().filter_map(|a| a.selection.as_ref()?.default_route.clone()).flatten().collect();
        for family in [IpFamily::V4, IpFamily::V6] {
            if gateways.iter().filter(|g| IpFamily::of(**g) == family).count() > 1 {
                return Err(Self::invalid(format!(
                    "default-route: more than one {} gateway requested over the pod",
                    if family == IpFamily::V4 { "IPv4" } else { "IPv6" }
                )));
            }
        }
        Ok(plan)
    }

    /// The next of `pod`'s devices of `resource` for network `name`: each attachment of a
    /// resource takes the next one, in sorted order. `None` without a device source.
    fn next_device(
        &self,
        taken: &mut BTreeMap<String, (Vec<String>, usize)>,
        resource: &str,
        pod: &Pod,
        name: &str,
    ) -> Result<Option<String>, CniError> {
        let Some(devices) = self.devices else { return Ok(None) };
        if !taken.contains_key(resource) {
            let ids = crate::phases::timed("devices", || devices.allocated(pod, resource))?;
            taken.insert(resource.to_owned(), (ids, 0));
        }
        let (ids, next) = taken.get_mut(resource).ok_or_else(|| Self::invalid("device bookkeeping"))?;
        let id = ids.get(*next).cloned().ok_or_else(|| {
            Self::invalid(format!(
                "network {name} needs a device of resource {resource}, but pod {}/{} was allocated {} of it (one per attachment; request more in the pod's resources)",
                pod.namespace,
                pod.name,
                ids.len()
            ))
        })?;
        *next += 1;
        Ok(Some(id))
    }

    fn wait_for_readiness(&self, timeout: Duration) -> Result<(), CniError> {
        let Some(file) = &self.config.readiness_indicator_file else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        while !file.exists() {
            if Instant::now() >= deadline {
                return Err(CniError::new(
                    ErrorCode::TryAgainLater,
                    format!("readiness indicator file {} did not appear within {timeout:?}", file.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn pod(&self) -> Result<Option<Pod>, CniError> {
        let (Some(cluster), Some((ns, name, _))) = (self.cluster, pod_ref(&self.invocation)) else {
            return Ok(None);
        };
        match cluster.pod(&ns, &name)? {
            Some(pod) => Ok(Some(pod)),
            None => Err(CniError::new(ErrorCode::UnknownContainer, format!("pod {ns}/{name} not found"))),
        }
    }

    fn invocation_for(&self, command: Command, netns: &str) -> Invocation {
        Invocation {
            command,
            netns: netns.to_owned(),
            args: delegate_args(&self.invocation),
            ..self.invocation.clone()
        }
    }

    /// ADD: every attachment, or none. Returns the cluster network's result in the caller's
    /// version.
    pub fn add(&self) -> Result<Value, CniError> {
        self.add_with_readiness_wait(READINESS_WAIT)
    }

    /// ADD, waiting at most `wait` for the readiness indicator file.
    pub fn add_with_readiness_wait(&self, wait: Duration) -> Result<Value, CniError> {
        use crate::phases::timed;
        self.wait_for_readiness(wait)?;
        let pod = timed("pod", || self.pod())?;
        let plan = timed("networks", || self.plan(pod.as_ref()))?;
        let mut entry = self.entry_of(&plan);
        // Saved before the first delegate runs: whatever happens next, DEL knows what to undo.
        timed("cache", || cache::save(&self.config.cni_dir, &entry, Durability::Synced))?;

        let invocation = self.invocation_for(Command::Add, &self.invocation.netns);
        for (i, att) in plan.iter().enumerate() {
            let config = effective_config(&att.found.config, &att.injected);
            let added = timed(format!("delegate {}", att.name), || {
                self.delegator.add(&config, &invocation, &att.ifname, &att.runtime_config)
            });
            match added {
                Ok(result) => {
                    entry.attachments[i].result = Some(result);
                    cache::save(&self.config.cni_dir, &entry, Durability::Unsynced)?;
                }
                Err(err) => {
                    self.roll_back(&entry, i);
                    return Err(err.context(format!("network {} ({})", att.name, att.ifname)));
                }
            }
        }
        if let Err(err) = timed("default-route", || self.apply_default_route(&plan)) {
            self.roll_back(&entry, plan.len() - 1);
            return Err(err);
        }

        let statuses = self.statuses(&plan, &entry)?;
        if let (Some(cluster), Some(pod)) = (self.cluster, &pod) {
            timed("status", || cluster.set_network_status(pod, &statuses))?;
            for status in &statuses {
                let message = format!(
                    "Add {} [{}] from {}",
                    status.interface.as_deref().unwrap_or("?"),
                    status.ips.join(","),
                    status.name
                );
                cluster.event(pod, "AddedInterface", &message, false);
            }
        }
        let cluster_result = entry.attachments[0].result.clone().unwrap_or(Value::Null);
        Ok(CniResult::from_value(&cluster_result)?.to_value(self.config.cni_version))
    }

    /// Deletes attachments `0..=last` in reverse after a failed ADD, and the cache with them.
    fn roll_back(&self, entry: &CacheEntry, last: usize) {
        let invocation = self.invocation_for(Command::Del, &self.invocation.netns);
        for att in entry.attachments[..=last].iter().rev() {
            match cached_config(att) {
                Ok(config) => {
                    for err in self.delegator.del(
                        &config,
                        &invocation,
                        &att.ifname,
                        &att.runtime_config,
                        att.result.as_ref(),
                    ) {
                        tracing::warn!("rolling back network {}: {err}", att.name);
                    }
                }
                Err(err) => tracing::warn!("rolling back network {}: {err}", att.name),
            }
        }
        if let Err(err) = cache::remove(&self.config.cni_dir, &entry.container_id) {
            tracing::warn!("{err}");
        }
    }

    fn apply_default_route(&self, plan: &[Attachment]) -> Result<(), CniError> {
        let interfaces: Vec<&str> = plan.iter().map(|a| a.ifname.as_str()).collect();
        for chosen in plan {
            let Some(gateways) = chosen.selection.as_ref().and_then(|s| s.default_route.as_ref()) else {
                continue;
            };
            for gateway in gateways {
                self.routes.set_default_route(
                    &self.invocation.netns,
                    &interfaces,
                    &chosen.ifname,
                    *gateway,
                )?;
            }
        }
        Ok(())
    }

    fn statuses(&self, plan: &[Attachment], entry: &CacheEntry) -> Result<Vec<NetworkStatus>, CniError> {
        let mut statuses = Vec::new();
        for (att, cached) in plan.iter().zip(&entry.attachments) {
            let result = CniResult::from_value(cached.result.as_ref().unwrap_or(&Value::Null))?;
            let index = result
                .interfaces
                .iter()
                .position(|i| i.name == att.ifname && !i.sandbox.is_empty())
                .or_else(|| result.interfaces.iter().position(|i| !i.sandbox.is_empty()));
            let interface = index.map(|i| &result.interfaces[i]);
            let ips = result
                .ips
                .iter()
                .filter(|ip| ip.interface.is_none() || ip.interface == index)
                .map(|ip| ip.address.addr.to_string())
                .collect();
            let gateway = att
                .selection
                .as_ref()
                .and_then(|s| s.default_route.as_ref())
                .map(|gws| gws.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            statuses.push(NetworkStatus {
                name: att.name.clone(),
                interface: Some(att.ifname.clone()),
                ips,
                mac: interface.map(|i| i.mac.clone()).filter(|m| !m.is_empty()),
                mtu: interface.and_then(|i| i.mtu),
                default: att.cluster_network,
                dns: result.dns.clone(),
                gateway,
                device_info: match (&att.device, self.devices) {
                    (Some((resource, id)), Some(devices)) => device_info_for_cni(
                        devices.devinfo_dir(),
                        resource,
                        id,
                        &self.invocation.container_id,
                        &att.ifname,
                    ),
                    (None, Some(devices)) => crate::multus::devices::written_device_info(
                        devices.devinfo_dir(),
                        &self.invocation.container_id,
                        &att.ifname,
                    ),
                    _ => None,
                },
            });
        }
        Ok(statuses)
    }

    /// DEL: every cached attachment in reverse; every error is collected. With no cache, the
    /// attachments are rebuilt from the API when the pod is still there; else nothing was ever
    /// attached (the cache is written before the first delegate runs) and DEL succeeds.
    pub fn del(&self) -> Result<(), CniError> {
        let entry = match cache::load(&self.config.cni_dir, &self.invocation.container_id) {
            Ok(Some(entry)) => entry,
            Ok(None) => match self.rebuild() {
                Some(entry) => entry,
                None => return Ok(()),
            },
            Err(err) => {
                // A corrupt cache must not make DEL skip the delegates (IPs would leak): use what
                // the API and the config still tell.
                tracing::warn!("{err}");
                self.rebuild().unwrap_or_else(|| self.static_entry())
            }
        };
        let netns = if self.invocation.netns.is_empty() {
            entry.netns.clone()
        } else {
            self.invocation.netns.clone()
        };
        // The netns may be gone: delegates are told so by an empty CNI_NETNS, as the runtime would.
        let netns = if Path::new(&netns).exists() { netns } else { String::new() };
        let invocation = self.invocation_for(Command::Del, &netns);
        let mut errors = Vec::new();
        for att in entry.attachments.iter().rev() {
            match cached_config(att) {
                Ok(config) => errors.extend(crate::phases::timed(format!("delegate {}", att.name), || {
                    self.delegator
                        .del(&config, &invocation, &att.ifname, &att.runtime_config, att.result.as_ref())
                        .into_iter()
                        .map(|e| e.context(format!("network {}", att.name)))
                        .collect::<Vec<_>>()
                })),
                Err(err) => errors.push(err),
            }
        }
        if let Some(devices) = self.devices {
            forget_device_info(devices.devinfo_dir(), &entry.container_id);
        }
        if errors.is_empty() || !self.config.retry_delete_on_error {
            cache::remove(&self.config.cni_dir, &entry.container_id)?;
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            n => {
                let details: Vec<String> = errors.iter().map(ToString::to_string).collect();
                Err(CniError::new(ErrorCode::Plugin, format!("{n} networks failed to delete"))
                    .with_details(details.join("; ")))
            }
        }
    }

    fn rebuild(&self) -> Option<CacheEntry> {
        let pod = self.pod().ok().flatten()?;
        let plan = self.plan(Some(&pod)).ok()?;
        Some(self.entry_of(&plan))
    }

    fn static_entry(&self) -> CacheEntry {
        let plan = self.plan(None).unwrap_or_default();
        self.entry_of(&plan)
    }

    fn entry_of(&self, plan: &[Attachment]) -> CacheEntry {
        CacheEntry {
            container_id: self.invocation.container_id.clone(),
            netns: self.invocation.netns.clone(),
            ifname: self.invocation.ifname.clone(),
            cni_args: self.invocation.args.clone(),
            attachments: plan
                .iter()
                .map(|a| CachedAttachment {
                    name: a.name.clone(),
                    ifname: a.ifname.clone(),
                    cluster_network: a.cluster_network,
                    config: a.found.text.clone(),
                    runtime_config: a.runtime_config.clone(),
                    injected: a.injected.clone(),
                    result: None,
                })
                .collect(),
        }
    }

    /// CHECK: every attachment against its cached result (Multus checks none when it uses
    /// `clusterNetwork`).
    pub fn check(&self) -> Result<(), CniError> {
        let entry = cache::load(&self.config.cni_dir, &self.invocation.container_id)?.ok_or_else(|| {
            CniError::new(
                ErrorCode::UnknownContainer,
                format!("container {} was not added", self.invocation.container_id),
            )
        })?;
        let invocation = self.invocation_for(Command::Check, &self.invocation.netns);
        for att in &entry.attachments {
            let result = att.result.as_ref().ok_or_else(|| {
                CniError::new(
                    ErrorCode::UnknownContainer,
                    format!("network {}: its ADD did not finish", att.name),
                )
            })?;
            let config = cached_config(att)?;
            self.delegator
                .check(&config, &invocation, &att.ifname, &att.runtime_config, result)
                .map_err(|e| e.context(format!("network {}", att.name)))?;
        }
        Ok(())
    }

    /// STATUS: ready when the readiness indicator file (if any) exists and the cluster
    /// network's plugins can be run (and, for CNI 1.1 delegates, say they are ready).
    pub fn status(&self) -> Result<(), CniError> {
        let unavailable = |msg: String| CniError::new(ErrorCode::PluginNotAvailable, msg);
        if let Some(file) = &self.config.readiness_indicator_file
            && !file.exists()
        {
            return Err(unavailable(format!("readiness indicator file {} does not exist", file.display())));
        }
        let plan = self.plan(None).map_err(|e| unavailable(e.to_string()))?;
        let cluster = &plan[0];
        for plugin in cluster.found.config.plugins() {
            let plugin_type = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
            if !self.delegator.available(plugin_type) {
                return Err(unavailable(format!(
                    "cluster network {}: plugin {plugin_type} not found",
                    cluster.name
                )));
            }
            let speaks_status = cluster.found.config.cni_version().is_some_and(|v| v >= CniVersion::V1_1_0);
            if speaks_status {
                self.delegator
                    .call(Command::Status, &self.invocation, "", &Value::Object(plugin))
                    .map_err(|e| e.context(format!("cluster network {}", cluster.name)))?;
            }
        }
        Ok(())
    }

    /// GC: deletes what is cached for attachments the runtime no longer knows
    /// (`cni.dev/valid-attachments` on stdin).
    pub fn gc(&self, stdin: &Value) -> Result<(), CniError> {
        let valid: BTreeSet<(String, String)> = stdin
            .get("cni.dev/valid-attachments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((a.get("containerID")?.as_str()?.to_owned(), a.get("ifname")?.as_str()?.to_owned()))
            })
            .collect();
        let mut errors = Vec::new();
        for container_id in cache::list(&self.config.cni_dir) {
            let Ok(Some(entry)) = cache::load(&self.config.cni_dir, &container_id) else {
                continue;
            };
            if valid.contains(&(entry.container_id.clone(), entry.ifname.clone())) {
                continue;
            }
            let invocation = Invocation {
                command: Command::Del,
                container_id: entry.container_id.clone(),
                netns: if Path::new(&entry.netns).exists() { entry.netns.clone() } else { String::new() },
                ifname: entry.ifname.clone(),
                args: entry.cni_args.clone(),
                path: self.invocation.path.clone(),
            };
            let stale = MetaPlugin {
                config: self.config.clone(),
                invocation,
                cluster: None,
                delegator: self.delegator.clone(),
                routes: self.routes,
                devices: self.devices,
            };
            if let Err(err) = stale.del() {
                errors.push(err.context(format!("container {container_id}")));
            }
        }
        match errors.into_iter().next() {
            Some(err) => Err(err),
            None => Ok(()),
        }
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
        let env = |args: &'static str| {
            move |name: &str| match name {
                "CNI_COMMAND" => Some("ADD".to_owned()),
                "CNI_CONTAINERID" => Some("c1".to_owned()),
                "CNI_NETNS" => Some("/run/netns/p".to_owned()),
                "CNI_IFNAME" => Some("eth0".to_owned()),
                "CNI_ARGS" => Some(args.to_owned()),
                "CNI_PATH" => Some("/opt/cni/bin".to_owned()),
                _ => None,
            }
        };
        let invocation = Invocation::from_env(env("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;MAC=x")).unwrap();
        assert_eq!(delegate_args(&invocation), "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web");
        let invocation = Invocation::from_env(env("")).unwrap();
        assert_eq!(delegate_args(&invocation), "IgnoreUnknown=1");
    }
}
