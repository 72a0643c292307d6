//! Thin mode against an API-server test double: kube's `Client` over a tower service that plays
//! the API server (pods, NADs, pods/status, events) and records what it is sent. Then a whole
//! ADD with NADs from the double, in real namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use common::{Node, ok};
use kube::client::Body;
use plexus_cni::multus::cluster::{Cluster, NetworkStatus, Pod};
use plexus_cni::multus::kube::KubeCluster;
use serde_json::{Value, json};

/// What the double serves (path -> object) and what it was sent (method, path, body).
#[derive(Clone, Default)]
struct ApiServer {
    objects: Arc<Mutex<HashMap<String, Value>>>,
    requests: Arc<Mutex<Vec<(String, String, Value)>>>,
}

impl ApiServer {
    fn pod(&self, ns: &str, name: &str, annotations: Value) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "annotations": annotations}});
        self.objects.lock().unwrap().insert(format!("/api/v1/namespaces/{ns}/pods/{name}"), pod);
    }

    fn nad(&self, ns: &str, name: &str, config: &Value) {
        let nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                         "metadata": {"name": name, "namespace": ns}, "spec": {"config": config.to_string()}});
        self.objects.lock().unwrap().insert(
            format!("/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}"),
            nad,
        );
    }

    fn requests(&self, method: &str) -> Vec<(String, Value)> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == method)
            .map(|r| (r.1.clone(), r.2.clone()))
            .collect()
    }

    async fn answer(self, request: http::Request<Body>) -> http::Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        self.requests.lock().unwrap().push((method.clone(), path.clone(), body.clone()));
        let found = self.objects.lock().unwrap().get(path.trim_end_matches("/status")).cloned();
        let (code, reply) = match (method.as_str(), found) {
            ("GET", Some(object)) => (200, object),
            ("PATCH", Some(mut object)) => {
                for (k, v) in body["metadata"]["annotations"].as_object().unwrap() {
                    object["metadata"]["annotations"][k] = v.clone();
                }
                (200, object)
            }
            ("POST", _) if path.ends_with("/events") => (201, body),
            _ => (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                               "message": format!("{path} not found")}),
            ),
        };
        http::Response::builder().status(code).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap()
    }

    /// A cluster over this double.
    fn cluster(&self) -> KubeCluster {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let server = self.clone();
        let client = runtime.block_on(async move {
            let service = tower::service_fn(move |request| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.answer(request).await) }
            });
            kube::Client::new(service, "default")
        });
        KubeCluster::with_client(runtime, client)
    }
}

#[test]
fn reads_pods_and_nads_and_writes_network_status_and_events() {
    let api = ApiServer::default();
    api.pod("tenant", "web", json!({"k8s.v1.cni.cncf.io/networks": "fast"}));
    api.nad("tenant", "fast", &json!({"cniVersion": "1.0.0", "type": "macvlan"}));
    let cluster = api.cluster();

    let pod = cluster.pod("tenant", "web").unwrap().unwrap();
    assert_eq!(
        (pod.uid.as_str(), pod.annotations["k8s.v1.cni.cncf.io/networks"].as_str()),
        ("uid-web", "fast")
    );
    assert_eq!(cluster.pod("tenant", "gone").unwrap(), None);
    let nad = cluster.nad("tenant", "fast").unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Value>(&nad.config).unwrap()["type"], "macvlan");
    assert_eq!(cluster.nad("other", "fast").unwrap(), None);

    let status = vec![NetworkStatus {
        name: "tenant/fast".into(),
        interface: Some("net1".into()),
        ips: vec!["10.1.1.5".into()],
        ..Default::default()
    }];
    cluster.set_network_status(&pod, &status).unwrap();
    let patches = api.requests("PATCH");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].0, "/api/v1/namespaces/tenant/pods/web/status");
    let written: Vec<NetworkStatus> = serde_json::from_str(
        patches[0].1["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(written, status);
    // A pod that is gone is not an error.
    let gone = Pod { namespace: "tenant".into(), name: "gone".into(), ..Default::default() };
    cluster.set_network_status(&gone, &status).unwrap();

    cluster.event(&pod, "AddedInterface", "Add net1 [10.1.1.5] from tenant/fast", false);
    let events = api.requests("POST");
    assert_eq!(events[0].0, "/api/v1/namespaces/tenant/events");
    assert_eq!(events[0].1["reason"], "AddedInterface");
    assert_eq!(events[0].1["type"], "Normal");
    assert_eq!(events[0].1["involvedObject"]["name"], "web");
}

#[test]
fn add_and_del_with_networks_from_the_api() {
    let node = Node::new("cni-kube");
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr8", "10.91.0.0/24"));
    let api = ApiServer::default();
    api.nad(
        "tenant",
        "p2p",
        &json!({"cniVersion": "1.0.0", "name": "p2p", "type": "ptp",
        "ipam": {"type": "host-local", "subnet": "10.92.0.0/24", "dataDir": node.ipam_dir()}}),
    );
    api.nad("other", "p2p", &json!({"cniVersion": "1.0.0", "name": "p2p", "type": "ptp"}));
    api.pod("tenant", "app", json!({"k8s.v1.cni.cncf.io/networks": "p2p@data0"}));
    api.pod("tenant", "sneaky", json!({"k8s.v1.cni.cncf.io/networks": "other/p2p"}));
    let cluster = Arc::new(api.cluster());
    let meta = node.meta(json!({"clusterNetwork": "cluster", "namespaceIsolation": true}));

    let call = |env: &HashMap<String, String>| node.call_with(env, &meta, Some(cluster.clone()));
    ok(&call(&node.env("ADD", "k1", Some(("tenant", "app")))));
    assert_eq!(node.pod_addrs().keys().collect::<Vec<_>>(), ["data0", "eth0"]);
    let patches = api.requests("PATCH");
    let status: Vec<Value> = serde_json::from_str(
        patches[0].1["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(status.len(), 2);
    assert_eq!(status[1]["name"], "tenant/p2p");
    assert_eq!(status[1]["interface"], "data0");
    assert_eq!(api.requests("POST").len(), 2, "an AddedInterface event per attachment");

    // Namespace isolation refuses another namespace's NAD, before anything is made.
    let refused = call(&node.env("ADD", "k2", Some(("tenant", "sneaky"))));
    assert_ne!(refused.code, 0);
    assert!(refused.stdout.contains("namespace isolation"), "{}", refused.stdout);

    // DEL from the cache, with the API still there.
    ok(&call(&node.env("DEL", "k1", Some(("tenant", "app")))));
    assert!(node.pod_addrs().is_empty());
    assert!(node.reserved_ips().is_empty());
    node.finish();
}
