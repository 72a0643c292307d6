//! A node for CNI tests: a "host" namespace standing in for the node's (where the reference
//! plugins make bridges and veth ends), a pod namespace, directories for confs, the cache and
//! host-local's store, and a fake Kubernetes.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use plexus_cni::delegate::Registry;
use plexus_cni::entry::{self, Context, Outcome};
use plexus_cni::multus::cluster::{Cluster, ClusterError, Nad, NetworkStatus, Pod};
use plexus_cni::multus::config::MetaConfig;
use plexus_hw::netns::Netns;
use plexus_hw::{Node as HwNode, SysfsRoot};
use plexus_sim::TempDir;
use serde_json::{Value, json};

/// Kubernetes shared by the calls of a test.
pub type SharedCluster = std::sync::Arc<dyn Cluster + Send + Sync>;

/// Where Debian's containernetworking-plugins are.
pub const PLUGINS: &str = "/usr/lib/cni";

pub struct Node {
    pub host: Netns,
    pub pod: Netns,
    pub dir: TempDir,
    pub cluster: FakeCluster,
    /// Delegates called in-process (none unless a test registers some).
    pub registry: Registry,
    /// The pod's allocated devices, when a test gives them.
    pub devices: Option<Box<dyn plexus_cni::multus::devices::Devices>>,
    /// The node the in-process delegates work on (a simulated one); the real one by default,
    /// with this test's host namespace as its host.
    pub hw_node: Option<HwNode>,
}

impl Node {
    pub fn new(tag: &str) -> Self {
        let node = Self {
            host: Netns::create_unique(&format!("plexus-{tag}-h")).unwrap(),
            pod: Netns::create_unique(&format!("plexus-{tag}-p")).unwrap(),
            dir: plexus_sim::scratch(tag).unwrap(),
            cluster: FakeCluster::default(),
            registry: Registry::default(),
            devices: None,
            hw_node: None,
        };
        std::fs::create_dir_all(node.conf_dir()).unwrap();
        node.ip_host(&["link", "set", "lo", "up"]);
        node
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    pub fn cni_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// host-local's store, kept inside the test's directory.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    pub fn write_conf(&self, file: &str, conf: Value) {
        std::fs::write(self.conf_dir().join(file), serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    }

    /// A bridge network with host-local IPAM on `subnet`; the bridge is made in the host namespace.
    pub fn bridge_conf(&self, name: &str, bridge: &str, subnet: &str) -> Value {
        json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge, "isGateway": true,
               "ipam": {"type": "host-local", "subnet": subnet, "dataDir": self.ipam_dir(), "routes": [{"dst": "0.0.0.0/0"}]}})
    }

    /// The meta-plugin's config around these directories.
    pub fn meta(&self, extra: Value) -> Vec<u8> {
        let mut config = json!({"cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus",
                                "confDir": self.conf_dir(), "cniDir": self.cni_dir(), "binDir": PLUGINS});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        serde_json::to_vec(&config).unwrap()
    }

    /// The CNI environment of `command` for container `cid`.
    pub fn env(&self, command: &str, cid: &str, pod: Option<(&str, &str)>) -> HashMap<String, String> {
        let mut env = HashMap::from([
            ("CNI_COMMAND".to_owned(), command.to_owned()),
            ("CNI_CONTAINERID".to_owned(), cid.to_owned()),
            ("CNI_NETNS".to_owned(), self.pod.path().display().to_string()),
            ("CNI_IFNAME".to_owned(), "eth0".to_owned()),
            ("CNI_PATH".to_owned(), PLUGINS.to_owned()),
        ]);
        if let Some((ns, name)) = pod {
            env.insert(
                "CNI_ARGS".into(),
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID=uid-{name}"),
            );
        }
        env
    }

    /// Runs one call in-process, on a thread inside the host namespace (so the plugin
    /// binaries it starts are there too, and the call's kernel session has it as its host),
    /// with the fake cluster when `with_cluster`.
    pub fn call(&self, env: &HashMap<String, String>, stdin: &[u8], with_cluster: bool) -> Outcome {
        let cluster = with_cluster.then(|| std::sync::Arc::new(self.cluster.clone()) as SharedCluster);
        self.call_with(env, stdin, cluster)
    }

    /// [`Self::call`] with `cluster` as Kubernetes.
    pub fn call_with(
        &self,
        env: &HashMap<String, String>,
        stdin: &[u8],
        cluster: Option<SharedCluster>,
    ) -> Outcome {
        self.host
            .run(|| {
                let make = |_: &MetaConfig| -> Result<Option<Box<dyn Cluster>>, ClusterError> {
                    Ok(cluster.clone().map(|c| Box::new(c) as Box<dyn Cluster>))
                };
                let node = self.hw_node.clone().unwrap_or_else(|| HwNode::real(SysfsRoot::default()));
                let context = Context {
                    registry: self.registry.clone(),
                    node: &node,
                    cluster: &make,
                    devices: self.devices.as_deref(),
                };
                entry::run(|k| env.get(k).cloned(), stdin, &context)
            })
            .unwrap()
    }

    pub fn ip_json(&self, netns: &Netns, args: &[&str]) -> Value {
        plexus_sim::ip::json(netns.name(), args)
    }

    pub fn ip_host(&self, args: &[&str]) {
        plexus_sim::ip::run(self.host.name(), args).unwrap();
    }

    /// Interface name -> IPv4 addresses with prefix, in the pod.
    pub fn pod_addrs(&self) -> BTreeMap<String, Vec<String>> {
        let links = self.ip_json(&self.pod, &["addr", "show"]);
        links
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["ifname"] != "lo")
            .map(|l| {
                let addrs = l["addr_info"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["family"] == "inet")
                    .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                    .collect();
                (l["ifname"].as_str().unwrap().to_owned(), addrs)
            })
            .collect()
    }

    /// The pod's default routes as (gateway, device).
    pub fn pod_default_routes(&self) -> Vec<(String, String)> {
        let routes = self.ip_json(&self.pod, &["route", "show", "default"]);
        routes
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["gateway"].as_str().unwrap_or("").to_owned(), r["dev"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// Addresses host-local has reserved (files in its store).
    pub fn reserved_ips(&self) -> Vec<String> {
        let mut found = Vec::new();
        for network in std::fs::read_dir(self.ipam_dir()).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(network.path()).into_iter().flatten().flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.parse::<std::net::IpAddr>().is_ok() {
                    found.push(name);
                }
            }
        }
        found.sort();
        found
    }

    /// Ends the test: the namespaces (and every link in them) and the directory go. Dropping
    /// a node does the same, so a failing test leaves nothing behind either.
    pub fn finish(self) {}
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Netns::delete_path(self.pod.path());
        let _ = Netns::delete_path(self.host.path());
    }
}

/// Shared, recorded values.
type Shared<T> = std::sync::Arc<Mutex<Vec<T>>>;

/// Kubernetes in memory: pods and NADs to read, statuses and events written.
#[derive(Debug, Default, Clone)]
pub struct FakeCluster {
    pub pods: Shared<Pod>,
    pub nads: Shared<Nad>,
    pub statuses: Shared<(String, Vec<NetworkStatus>)>,
    pub events: Shared<(String, String, bool)>,
}

impl FakeCluster {
    pub fn add_pod(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) {
        self.pods.lock().unwrap().push(Pod {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            annotations: annotations.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            shared_dir: None,
        });
    }

    pub fn add_nad(&self, namespace: &str, name: &str, config: &Value) {
        let config = if config.is_null() { String::new() } else { config.to_string() };
        self.nads.lock().unwrap().push(Nad {
            namespace: namespace.into(),
            name: name.into(),
            config,
            annotations: BTreeMap::new(),
        });
    }
}

impl Cluster for FakeCluster {
    fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, ClusterError> {
        Ok(self.pods.lock().unwrap().iter().find(|p| p.namespace == namespace && p.name == name).cloned())
    }

    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError> {
        Ok(self.nads.lock().unwrap().iter().find(|n| n.namespace == namespace && n.name == name).cloned())
    }

    fn set_network_status(&self, pod: &Pod, status: &[NetworkStatus]) -> Result<(), ClusterError> {
        self.statuses.lock().unwrap().push((format!("{}/{}", pod.namespace, pod.name), status.to_vec()));
        Ok(())
    }

    fn set_annotations(
        &self,
        pod: &Pod,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ClusterError> {
        let mut pods = self.pods.lock().unwrap();
        if let Some(found) = pods.iter_mut().find(|p| p.namespace == pod.namespace && p.name == pod.name) {
            found.annotations.extend(annotations.clone());
        }
        Ok(())
    }

    fn event(&self, pod: &Pod, reason: &str, message: &str, warning: bool) {
        self.events.lock().unwrap().push((format!("{}/{}", pod.name, reason), message.to_owned(), warning));
    }
}

pub fn ok(outcome: &Outcome) -> Value {
    assert_eq!(outcome.code, 0, "call failed: {}", outcome.stdout);
    if outcome.stdout.is_empty() { Value::Null } else { serde_json::from_str(&outcome.stdout).unwrap() }
}

pub fn failed(outcome: &Outcome) -> Value {
    assert_ne!(outcome.code, 0, "call should fail: {}", outcome.stdout);
    serde_json::from_str(&outcome.stdout).unwrap()
}
