//! What an ADD attaches, decided before anything is made: the cluster network (or the pod's
//! `v1.multus-cni.io/default-network`), `defaultNetworks` unless the pod is in a system
//! namespace, and the pod's selection with namespace isolation; each with its interface name,
//! its runtime arguments and, for a NAD naming a device plugin resource, the pod's next device
//! of it. A duplicate interface name, a missing NAD or two gateways of one family fail here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use plexus_hw::IfName;
use plexus_hw::netlink::IpFamily;
use serde_json::{Map, Value, json};

use super::cache::CachedAttachment;
use super::cluster::{Cluster, Pod, RESOURCE_NAME_ANNOTATION};
use super::config::MetaConfig;
use super::devices::Devices;
use super::resolve::{self, Found};
use super::selection::{self, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, NetworkSelection};
use crate::error::Error;
use crate::spec::{ConfigError, ErrorCode, Invocation, NetworkConfig};

/// What the pod asks for cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The default-network annotation names more or fewer than one network.
    #[error("{DEFAULT_NETWORK_ANNOTATION}: exactly one network expected")]
    DefaultNetworkCount,
    /// The config names no cluster network.
    #[error("no cluster network")]
    NoClusterNetwork,
    /// A selection annotation, but no pod to read it from.
    #[error("network selection without a pod")]
    SelectionWithoutPod,
    /// A selection annotation, but no Kubernetes API to find its NADs.
    #[error("network selection needs the Kubernetes API")]
    SelectionWithoutApi,
    /// Namespace isolation forbids the network.
    #[error(
        "network {namespace}/{name}: namespace isolation forbids pod {pod} to use a network of namespace {namespace}"
    )]
    Isolation {
        /// The NAD's namespace.
        namespace: String,
        /// The NAD.
        name: String,
        /// The pod, `namespace/name`.
        pod: String,
    },
    /// The NAD does not exist (Multus's words).
    #[error("cannot find a network-attachment-definition ({name}) in namespace ({namespace})")]
    NadNotFound {
        /// The namespace looked in.
        namespace: String,
        /// The NAD.
        name: String,
    },
    /// Two attachments want one interface name.
    #[error("interface name {ifname:?} requested twice (network {network})")]
    DuplicateInterface {
        /// The name.
        ifname: String,
        /// The second network asking for it.
        network: String,
    },
    /// Two default-route gateways of one family.
    #[error("default-route: more than one {family} gateway requested over the pod")]
    Gateways {
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// The pod CNI_ARGS names is not there.
    #[error("pod {namespace}/{name} not found")]
    PodNotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl crate::error::Failure for PlanError {
    fn code(&self) -> u32 {
        let code: ErrorCode = match self {
            Self::PodNotFound { .. } => ErrorCode::UnknownContainer,
            _ => ErrorCode::InvalidNetworkConfig,
        };
        code.into()
    }
}

/// One network to attach.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The name in network-status (`ns/nad`, or the conf's name).
    pub name: String,
    /// The interface in the pod.
    pub ifname: IfName,
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
    /// The auxiliary CNI chain on the cluster network's interface: not in network-status.
    pub auxiliary: bool,
}

impl Attachment {
    /// What the DEL cache keeps of it.
    pub fn cached(&self) -> CachedAttachment {
        CachedAttachment {
            name: self.name.clone(),
            ifname: self.ifname.clone(),
            cluster_network: self.cluster_network,
            config: self.found.text.clone(),
            runtime_config: self.runtime_config.clone(),
            injected: self.injected.clone(),
            result: None,
        }
    }

    /// Its gateways for the pod's default route, when its selection asks for it.
    pub fn default_route(&self) -> Option<&[IpAddr]> {
        self.selection.as_ref()?.default_route.as_deref()
    }
}

/// A config with the injected keys set, as the delegate gets it.
pub fn effective_config(config: &NetworkConfig, injected: &Map<String, Value>) -> NetworkConfig {
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

/// The config a cached attachment's delegate gets.
pub fn cached_config(att: &CachedAttachment) -> Result<NetworkConfig, ConfigError> {
    let config = NetworkConfig::parse(att.config.as_bytes(), &format!("cached config of {}", att.name))?;
    Ok(effective_config(&config, &att.injected))
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

/// The pod's devices of each resource, handed out one per attachment, in sorted order.
#[derive(Default)]
struct Taken(BTreeMap<String, (Vec<String>, usize)>);

/// What a plan is made from.
pub struct Planner<'a> {
    /// The meta-plugin's config.
    pub config: &'a MetaConfig,
    /// Kubernetes, when reachable.
    pub cluster: Option<&'a dyn Cluster>,
    /// The pod's allocated devices, for NADs naming a resource.
    pub devices: Option<&'a dyn Devices>,
}

impl std::fmt::Debug for Planner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A network found for the plan, before its interface and device are chosen.
#[derive(Debug)]
pub struct Network {
    /// The name in network-status.
    pub name: String,
    /// Its config.
    pub found: Found,
    /// The selection element that asked for it.
    pub selection: Option<NetworkSelection>,
    /// The device plugin resource its NAD names.
    pub resource: Option<String>,
}

impl Planner<'_> {
    /// A cluster or default network named by `clusterNetwork` / `defaultNetworks` (or the
    /// default-network annotation): a NAD in `namespace` when the API is there, else a conf
    /// by name, a directory or a file. What a pod names (`from_pod`) is a NAD, else a conf in
    /// confDir by name: never a path, which a pod's author could point anywhere on the node.
    fn reference(&self, reference: &str, namespace: &str, from_pod: bool) -> Result<Network, Error> {
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
            return Ok(Network {
                name: format!("{}/{}", nad.namespace, nad.name),
                found,
                selection: None,
                resource,
            });
        }
        let found = if from_pod {
            resolve::by_name_in_dir(&self.config.conf_dir, name)?.ok_or_else(|| {
                ConfigError::invalid(
                    format!("network {reference:?}"),
                    format!("no NAD, and no conf named {name:?} in {}", self.config.conf_dir.display()),
                )
            })?
        } else {
            resolve::static_network(reference, &self.config.conf_dir)?
        };
        let name = found.config.name().unwrap_or(reference).to_owned();
        Ok(Network { name, found, selection: None, resource: None })
    }

    /// The pod `invocation`'s CNI_ARGS name, `None` without one or without Kubernetes; an
    /// error when it should be there and is not.
    pub fn pod(&self, invocation: &Invocation) -> Result<Option<Pod>, Error> {
        let (Some(cluster), Some(pod)) = (self.cluster, invocation.pod()) else {
            return Ok(None);
        };
        match cluster.pod(&pod.namespace, &pod.name)? {
            Some(found) => Ok(Some(found)),
            None => Err(PlanError::PodNotFound { namespace: pod.namespace, name: pod.name }.into()),
        }
    }

    /// The pod `invocation`'s CNI_ARGS name as it is now, for a DEL: `None` when it is gone
    /// (or without one, or without Kubernetes); never waits for it to appear.
    pub fn existing_pod(&self, invocation: &Invocation) -> Result<Option<Pod>, Error> {
        let (Some(cluster), Some(pod)) = (self.cluster, invocation.pod()) else {
            return Ok(None);
        };
        Ok(cluster.existing_pod(&pod.namespace, &pod.name)?)
    }

    /// Every network to attach for `invocation`, in order, with interface names; nothing is
    /// created yet.
    pub fn plan(&self, invocation: &Invocation, pod: Option<&Pod>) -> Result<Vec<Attachment>, Error> {
        let mut taken = Taken::default();
        let mut plan = vec![self.cluster_attachment(&invocation.ifname, pod, &mut taken)?];
        for (position, network) in self.secondaries(pod)?.into_iter().enumerate() {
            plan.push(self.secondary(position, network, pod, &mut taken)?);
        }
        if let Some(found) = super::auxiliary::chain(self.config)? {
            plan.push(Attachment {
                name: found.config.name().unwrap_or("auxiliary").to_owned(),
                ifname: invocation.ifname.clone(),
                cluster_network: false,
                found,
                selection: None,
                runtime_config: Map::new(),
                injected: Map::new(),
                device: None,
                auxiliary: true,
            });
        }
        check(&plan)?;
        Ok(plan)
    }

    /// The cluster network: the pod's default-network annotation, else `clusterNetwork`, else
    /// the oldest format's master delegate.
    pub fn cluster_network(&self, pod: Option<&Pod>) -> Result<Network, Error> {
        let annotation = pod.and_then(|p| p.annotations.get(DEFAULT_NETWORK_ANNOTATION));
        let network = if let Some(text) = annotation {
            let mut elements = selection::parse(DEFAULT_NETWORK_ANNOTATION, text)?;
            if elements.len() != 1 {
                return Err(PlanError::DefaultNetworkCount.into());
            }
            let element = elements.remove(0);
            let ns = element.namespace.clone().unwrap_or_else(|| self.config.multus_namespace.clone());
            let network = self.reference(&format!("{ns}/{}", element.name), &ns, true)?;
            Network { selection: Some(element), ..network }
        } else if let Some(reference) = &self.config.cluster_network {
            self.reference(reference, &self.config.multus_namespace, false)?
        } else {
            let config = self
                .config
                .delegates
                .get(self.config.master_delegate)
                .cloned()
                .ok_or(PlanError::NoClusterNetwork)?;
            let name = config.name().unwrap_or("cluster-network").to_owned();
            let text = config.to_value().to_string();
            Network { name, found: Found { config, text }, selection: None, resource: None }
        };
        Ok(network)
    }

    /// The cluster network's attachment, as interface `ifname` (a NAD of it with a resourceName
    /// takes the pod's first device, as in Multus: a pod whose eth0 is a VF).
    fn cluster_attachment(
        &self,
        ifname: &IfName,
        pod: Option<&Pod>,
        taken: &mut Taken,
    ) -> Result<Attachment, Error> {
        let network = self.cluster_network(pod)?;
        let mut runtime_config = self.config.runtime_config.clone();
        let mut injected = Map::new();
        let mut device = None;
        if let (Some(resource), Some(pod)) = (&network.resource, pod)
            && let Some(id) = self.next_device(taken, resource, pod, &network.name)?
        {
            device = Some(inject_device(&mut runtime_config, &mut injected, resource, id));
        }
        Ok(Attachment {
            name: network.name,
            ifname: ifname.clone(),
            cluster_network: true,
            found: network.found,
            selection: network.selection,
            runtime_config,
            injected,
            device,
            auxiliary: false,
        })
    }

    /// The secondary networks, in order: the rest of the oldest format's delegates,
    /// `defaultNetworks` (except for pods in the system namespaces), the pod's selection.
    fn secondaries(&self, pod: Option<&Pod>) -> Result<Vec<Network>, Error> {
        let mut networks = Vec::new();
        if self.config.cluster_network.is_none() {
            for (i, config) in self.config.delegates.iter().enumerate() {
                if i != self.config.master_delegate {
                    let name = config.name().unwrap_or("delegate").to_owned();
                    let found = Found { config: config.clone(), text: config.to_value().to_string() };
                    networks.push(Network { name, found, selection: None, resource: None });
                }
            }
        }
        let system = pod.is_some_and(|p| self.config.system_namespaces.contains(&p.namespace));
        if !system {
            for reference in &self.config.default_networks {
                networks.push(self.reference(reference, &self.config.multus_namespace, false)?);
            }
        }
        if let Some(text) = pod.and_then(|p| p.annotations.get(NETWORKS_ANNOTATION)) {
            networks.extend(self.selected(pod, text)?);
        }
        Ok(networks)
    }

    /// The networks of the pod's selection annotation `text`.
    fn selected(&self, pod: Option<&Pod>, text: &str) -> Result<Vec<Network>, Error> {
        let pod = pod.ok_or(PlanError::SelectionWithoutPod)?;
        let cluster = self.cluster.ok_or(PlanError::SelectionWithoutApi)?;
        let mut networks = Vec::new();
        for element in selection::parse(NETWORKS_ANNOTATION, text)? {
            let ns = element.namespace.clone().unwrap_or_else(|| pod.namespace.clone());
            if self.config.namespace_isolation
                && ns != pod.namespace
                && !self.config.global_namespaces.contains(&ns)
            {
                return Err(PlanError::Isolation {
                    namespace: ns,
                    name: element.name,
                    pod: format!("{}/{}", pod.namespace, pod.name),
                }
                .into());
            }
            let Some(nad) = cluster.nad(&ns, &element.name)? else {
                // The Event as Multus writes it: its words, then the API server's for the 404.
                let message = format!(
                    "cannot find a network-attachment-definition ({name}) in namespace ({ns}): \
                     network-attachment-definitions.k8s.cni.cncf.io {name:?} not found",
                    name = element.name
                );
                cluster.event(pod, "NoNetworkFound", &message, true);
                let error = PlanError::NadNotFound { namespace: ns, name: element.name };
                return Err(error.into());
            };
            let found = resolve::nad_config(&nad.namespace, &nad.name, &nad.config, &self.config.conf_dir)?;
            let resource = nad.annotations.get(RESOURCE_NAME_ANNOTATION).cloned();
            networks.push(Network {
                name: format!("{ns}/{}", element.name),
                found,
                selection: Some(element),
                resource,
            });
        }
        Ok(networks)
    }

    /// A secondary network at `position` (its default interface is `net<position + 1>`), with
    /// what its selection element asks for; an attachment of a resource takes the pod's next
    /// device of it.
    fn secondary(
        &self,
        position: usize,
        network: Network,
        pod: Option<&Pod>,
        taken: &mut Taken,
    ) -> Result<Attachment, Error> {
        let ifname = match network.selection.as_ref().and_then(|s| s.interface.as_deref()) {
            Some(name) => name.to_owned(),
            None => format!("net{}", position + 1),
        };
        let ifname = ifname.parse::<IfName>().map_err(|e| {
            ConfigError::invalid(format!("network {}", network.name), format!("interface: {e}"))
        })?;
        let mut runtime_config = Map::new();
        let mut injected = Map::new();
        if let Some(s) = &network.selection {
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
        let chosen = network.selection.as_ref().and_then(|s| s.device_id.clone());
        let mut device = None;
        if let (None, Some(resource), Some(pod)) = (chosen, &network.resource, pod)
            && let Some(id) = self.next_device(taken, resource, pod, &network.name)?
        {
            device = Some(inject_device(&mut runtime_config, &mut injected, resource, id));
        }
        Ok(Attachment {
            name: network.name,
            ifname,
            cluster_network: false,
            found: network.found,
            selection: network.selection,
            runtime_config,
            injected,
            device,
            auxiliary: false,
        })
    }

    /// The next of `pod`'s devices of `resource` for network `name`: each attachment of a
    /// resource takes the next one, in sorted order. `None` without a device source.
    fn next_device(
        &self,
        taken: &mut Taken,
        resource: &str,
        pod: &Pod,
        name: &str,
    ) -> Result<Option<String>, Error> {
        let Some(devices) = self.devices else { return Ok(None) };
        if !taken.0.contains_key(resource) {
            let ids = crate::phases::timed("devices", || devices.allocated(pod, resource))?;
            taken.0.insert(resource.to_owned(), (ids, 0));
        }
        let Some((ids, next)) = taken.0.get_mut(resource) else { return Ok(None) };
        // As Multus: without a device of its own (none allocated, or fewer than attachments)
        // the delegate runs without a deviceID, and says what it needs if it needs one.
        let Some(id) = ids.get(*next).cloned() else {
            tracing::warn!(
                "network {name}: pod {}/{} has no device of resource {resource} left ({} allocated, one per \
                 attachment): its delegate gets no deviceID",
                pod.namespace,
                pod.name,
                ids.len()
            );
            return Ok(None);
        };
        *next += 1;
        Ok(Some(id))
    }
}

/// What is checked before anything is created: interface names are unique, and at most one
/// gateway of each family asks for the default route.
fn check(plan: &[Attachment]) -> Result<(), PlanError> {
    let mut names = BTreeSet::new();
    // The auxiliary chain works on the cluster network's interface.
    for att in plan.iter().filter(|att| !att.auxiliary) {
        if !names.insert(att.ifname.as_str()) {
            return Err(PlanError::DuplicateInterface {
                ifname: att.ifname.to_string(),
                network: att.name.clone(),
            });
        }
    }
    let gateways: Vec<IpAddr> =
        plan.iter().filter_map(Attachment::default_route).flatten().copied().collect();
    for (family, label) in [(IpFamily::V4, "IPv4"), (IpFamily::V6, "IPv6")] {
        if gateways.iter().filter(|g| IpFamily::of(**g) == family).count() > 1 {
            return Err(PlanError::Gateways { family: label });
        }
    }
    Ok(())
}
