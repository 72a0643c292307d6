//! A stand-in for the Kubernetes API server, over real HTTP, for the demo and the tests: the
//! agent runs against it exactly as against a cluster (its kube-rs client, reflectors, status
//! patches and Events). It serves the objects put into it to list (with
//! `fieldSelector=spec.nodeName=`) and to watch (chunked, one event per line, from the listed
//! resourceVersion on), answers GET of one object, merges PATCHes of `pods/<name>/status` into
//! the pod's annotations, accepts POSTed Events, and records every request. Nothing else of the
//! API (no auth, no validation, no other verbs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// One request received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
}

#[derive(Debug, Default)]
struct Store {
    /// Object path -> object.
    objects: BTreeMap<String, Value>,
    version: u64,
    requests: Vec<Request>,
    /// (collection, object name) of each event written to a watch.
    delivered: Vec<(String, String)>,
}

/// The stand-in; it serves until the runtime it was started on ends.
#[derive(Debug, Clone)]
pub struct ApiStandIn {
    store: Arc<Mutex<Store>>,
    changes: broadcast::Sender<(u64, String, Value)>,
    addr: SocketAddr,
}

/// `/api/v1/namespaces/ns/pods/web` -> `/api/v1/pods`: where an object is listed.
fn collection(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.iter().position(|p| *p == "namespaces") {
        Some(i) if parts.len() == i + 4 => [&parts[..i], &parts[i + 2..i + 3]].concat().join("/"),
        _ => path.to_owned(),
    }
}

/// `%3D` -> `=`; what kube-rs escapes in query values.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()))
            .flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `object` passes the request's `fieldSelector` (only `spec.nodeName=<node>` is
/// understood; any other selector selects nothing, so a client relying on it notices).
fn selected(object: &Value, query: &BTreeMap<String, String>) -> bool {
    match query.get("fieldSelector") {
        None => true,
        Some(selector) => {
            selector.strip_prefix("spec.nodeName=").is_some_and(|node| object["spec"]["nodeName"] == node)
        }
    }
}

fn status(code: u16, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
           "reason": if code == 404 { "NotFound" } else { "BadRequest" }, "message": message})
}

fn version_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl ApiStandIn {
    /// Listens on a free port of 127.0.0.1, serving on the current runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let server =
            Self { store: Arc::default(), changes: broadcast::channel(256).0, addr: listener.local_addr()? };
        let serving = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().connection(stream));
            }
        });
        Ok(server)
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kubeconfig for this server (JSON is YAML).
    pub fn kubeconfig(&self) -> String {
        json!({"apiVersion": "v1", "kind": "Config", "current-context": "standin",
               "clusters": [{"name": "standin", "cluster": {"server": format!("http://{}", self.addr)}}],
               "users": [{"name": "agent", "user": {}}],
               "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "agent"}}]})
        .to_string()
    }

    /// Creates or replaces the object at `path`, telling the watches.
    pub fn put(&self, path: &str, mut object: Value) {
        let mut store = self.store();
        store.version += 1;
        let version = store.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let kind = if store.objects.insert(path.to_owned(), object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let _ = self.changes.send((version, collection(path), json!({"type": kind, "object": object})));
    }

    /// Deletes the object at `path`, telling the watches (`DELETED`, with the object as it
    /// was), as the API server does once a pod's deletion is final.
    pub fn delete(&self, path: &str) {
        let mut store = self.store();
        let Some(mut object) = store.objects.remove(path) else { return };
        store.version += 1;
        let version = store.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let _ = self.changes.send((version, collection(path), json!({"type": "DELETED", "object": object})));
    }

    /// How many watch events about object `name` of `collection` were written.
    pub fn deliveries(&self, collection: &str, name: &str) -> usize {
        self.store().delivered.iter().filter(|(c, n)| c == collection && n == name).count()
    }

    /// A pod on `node` with one container, `app`.
    pub fn pod(&self, namespace: &str, name: &str, node: &str, annotations: Value) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                                      "annotations": annotations, "labels": {"app": name}},
                         "spec": {"nodeName": node, "containers": [{"name": "app", "image": "example"}]},
                         "status": {"phase": "Pending"}});
        self.put(&format!("/api/v1/namespaces/{namespace}/pods/{name}"), pod);
    }

    /// A NetworkAttachmentDefinition with `config` as its `spec.config`.
    pub fn nad(&self, namespace: &str, name: &str, annotations: Value, config: &Value) {
        let nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                         "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
                         "spec": {"config": config.to_string()}});
        self.put(
            &format!("/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions/{name}"),
            nad,
        );
    }

    /// The object at `path`, as it is now.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.store().objects.get(path).cloned()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.store().requests.clone()
    }

    /// Whether the object `name` of `collection` was written to a watch.
    pub fn delivered(&self, collection: &str, name: &str) -> bool {
        self.store().delivered.iter().any(|(c, n)| c == collection && n == name)
    }

    async fn connection(self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let Some(request) = read_request(BufReader::new(read)).await else { return };
        self.store().requests.push(request.clone());
        if request.method == "GET" && request.query.get("watch").is_some_and(|w| w == "true") {
            self.watch(&request, &mut write).await;
            return;
        }
        let (code, reply) = self.answer(&request);
        let body = reply.to_string();
        let head = format!(
            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = write.write_all(format!("{head}{body}").as_bytes()).await;
    }

    fn answer(&self, request: &Request) -> (u16, Value) {
        let store = self.store();
        match request.method.as_str() {
            "GET" => {
                if let Some(object) = store.objects.get(&request.path) {
                    return (200, object.clone());
                }
                if request.path.contains("/namespaces/") {
                    return (404, status(404, &format!("{} not found", request.path)));
                }
                let items: Vec<Value> = store
                    .objects
                    .iter()
                    .filter(|(path, object)| {
                        collection(path) == request.path && selected(object, &request.query)
                    })
                    .map(|(_, object)| object.clone())
                    .collect();
                let kind = if request.path.ends_with("/pods") {
                    "PodList"
                } else {
                    "NetworkAttachmentDefinitionList"
                };
                (
                    200,
                    json!({"kind": kind, "apiVersion": "v1", "items": items,
                             "metadata": {"resourceVersion": store.version.to_string()}}),
                )
            }
            "PATCH" if request.path.ends_with("/status") => {
                let path = request.path.trim_end_matches("/status").to_owned();
                let Some(mut object) = store.objects.get(&path).cloned() else {
                    return (404, status(404, &format!("{path} not found")));
                };
                drop(store);
                for (key, value) in request.body["metadata"]["annotations"].as_object().into_iter().flatten()
                {
                    object["metadata"]["annotations"][key] = value.clone();
                }
                self.put(&path, object);
                (200, self.object(&path).unwrap_or_default())
            }
            "POST" if request.path.ends_with("/events") => (201, request.body.clone()),
            _ => (400, status(400, &format!("{} {} is not served", request.method, request.path))),
        }
    }

    /// Streams the objects of the request's collection changed after its resourceVersion,
    /// then every later change, until the client goes away.
    async fn watch(&self, request: &Request, write: &mut OwnedWriteHalf) {
        let since: u64 = request.query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        // Subscribed under the lock that the backlog is read under: no change falls between.
        let (mut changes, backlog) = {
            let store = self.store();
            let backlog: Vec<(u64, Value)> = store
                .objects
                .iter()
                .filter(|(path, object)| collection(path) == request.path && version_of(object) > since)
                .map(|(_, object)| (version_of(object), json!({"type": "ADDED", "object": object})))
                .collect();
            (self.changes.subscribe(), backlog)
        };
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut sent = since;
        for (version, event) in backlog {
            sent = sent.max(version);
            if !self.send(request, write, &event).await {
                return;
            }
        }
        while let Ok((version, path, event)) = changes.recv().await {
            if version > sent && path == request.path && !self.send(request, write, &event).await {
                return;
            }
        }
    }

    async fn send(&self, request: &Request, write: &mut OwnedWriteHalf, event: &Value) -> bool {
        if !selected(&event["object"], &request.query) {
            return true;
        }
        let line = format!("{event}\n");
        let chunk = format!("{:x}\r\n{line}\r\n", line.len());
        if write.write_all(chunk.as_bytes()).await.is_err() {
            return false;
        }
        let name = event["object"]["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        self.store().delivered.push((request.path.clone(), name));
        true
    }
}

/// One HTTP/1.1 request: the request line, the headers (only Content-Length is used) and the
/// body. `None` when the client sent no whole request.
async fn read_request(mut reader: BufReader<OwnedReadHalf>) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).await.ok().filter(|n| *n > 0)?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_owned();
    let target = words.next()?.to_owned();
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).await.ok()? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    Some(Request {
        method,
        path: path.to_owned(),
        query,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}
