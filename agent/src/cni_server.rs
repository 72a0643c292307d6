//! The agent's CNI socket: the `plexus` binary forwards each call here (see
//! `plexus_cni::forward`) and the agent runs it with the same `entry` the binary would, with the
//! built-in delegates in-process on the agent's view of the node.
//!
//! The socket is `<dir>/plexus.sock`, 0600 in a 0700 directory. Calls run on blocking threads,
//! at most `max_parallel` at a time; the others wait holding only their request, so a burst of
//! ADDs costs queueing, not memory. The socket file is left in place when the agent stops:
//! a `plexus` binary finding it dead fails ADD at once and does DEL itself.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use plexus_cni::delegate::Registry;
use plexus_cni::entry::{self, Context, Outcome};
use plexus_cni::forward::{Frame, MAX_MESSAGE, Request, TraceRequest, decode_frame};
use plexus_cni::multus::cluster::{Cluster, ClusterError};
use plexus_cni::multus::config::MetaConfig;
use plexus_cni::multus::devices::Devices;
use plexus_cni::multus::kube::KubeCluster;
use plexus_cni::paths::SOCKET_NAME;
use plexus_cni::spec::{ErrorCode, ErrorReply};
use plexus_hw::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::metrics::{CallTrace, Metrics, seconds};

/// Kubernetes as the agent sees it, shared by every call.
pub type SharedCluster = Arc<dyn Cluster + Send + Sync>;

/// The calls of each container in the order they arrived: a DEL the runtime sends while its
/// ADD still runs (it killed the `plexus` binary that forwarded the ADD, on a timeout) waits
/// for that ADD, then undoes what it did. Taken before a call waits for a free thread, since
/// threads do not start in the order they are given work; the container's file lock
/// (`cache::lock`) orders the agent's calls with a binary's own.
#[derive(Debug, Default)]
struct Arrivals {
    queues: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A call's turn among its container's calls; the next one's begins when this is dropped.
struct Turn<'a> {
    arrivals: &'a Arrivals,
    container_id: String,
    queue: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Arrivals {
    /// Waits for the calls of `container_id` that arrived before (tokio's mutex is fair: FIFO).
    async fn turn(&self, container_id: &str) -> Turn<'_> {
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            queues.entry(container_id.to_owned()).or_default().clone()
        };
        let guard = queue.clone().lock_owned().await;
        Turn { arrivals: self, container_id: container_id.to_owned(), queue, guard: Some(guard) }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut queues = self.arrivals.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only the map and this turn hold the queue: nobody waits, it goes.
        if Arc::strong_count(&self.queue) == 2 {
            queues.remove(&self.container_id);
        }
    }
}

/// What runs the calls.
pub struct CniService {
    node: Node,
    registry: Registry,
    cluster: Option<SharedCluster>,
    devices: Option<Arc<dyn Devices>>,
    permits: Arc<Semaphore>,
    arrivals: Arrivals,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for CniService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CniService").field("registry", &self.registry).finish()
    }
}

impl CniService {
    /// Calls run on `node` with the delegates of `registry`, `cluster` when the agent has API
    /// access, at most `max_parallel` at once.
    pub fn new(
        node: Node,
        registry: Registry,
        cluster: Option<SharedCluster>,
        devices: Option<Arc<dyn Devices>>,
        max_parallel: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(max_parallel.max(1)));
        Self { node, registry, cluster, devices, permits, arrivals: Arrivals::default(), metrics }
    }

    /// Runs one call on this thread (a blocking one) and records it.
    pub fn call(&self, request: &Request) -> Outcome {
        let env: HashMap<&str, &str> = request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let cluster = self.cluster.clone();
        // The agent's watch cache when it has one; else what the config says (a kubeconfig,
        // or in-cluster), as the binary would do.
        let factory = move |config: &MetaConfig| -> Result<Option<Box<dyn Cluster>>, ClusterError> {
            match cluster.clone() {
                Some(shared) => Ok(Some(Box::new(shared) as Box<dyn Cluster>)),
                None => Ok(KubeCluster::from_config(config)?.map(|c| Box::new(c) as Box<dyn Cluster>)),
            }
        };
        let context = Context {
            registry: self.registry.clone(),
            node: &self.node,
            cluster: &factory,
            devices: self.devices.as_deref(),
        };
        let start = Instant::now();
        let stdin = request.stdin.as_bytes();
        let (result, phases) = plexus_cni::phases::collect(|| {
            entry::execute(|k| env.get(k).map(|v| (*v).to_owned()), stdin, &context)
        });
        let outcome_label = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().to_string(),
        };
        self.metrics.record(CallTrace {
            command: env.get("CNI_COMMAND").copied().unwrap_or("?").to_owned(),
            container_id: env.get("CNI_CONTAINERID").copied().unwrap_or("").to_owned(),
            outcome: outcome_label,
            total: seconds(start.elapsed()),
            phases: phases.into_iter().map(|(name, took)| (name, seconds(took))).collect(),
        });
        entry::outcome(result, stdin)
    }
}

/// Makes the socket directory (0700) and binds `<dir>/plexus.sock` (0600), replacing a socket
/// left by an earlier agent.
pub fn bind(dir: &Path) -> anyhow::Result<UnixListener> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    let path = dir.join(SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the old socket {}", path.display())),
    }
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    listener.set_nonblocking(true).context("making the socket non-blocking")?;
    UnixListener::from_std(listener).context("registering the socket")
}

/// The socket path in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_NAME)
}

/// Serves calls until `stop` completes; then waits for the calls under way.
pub async fn serve(listener: UnixListener, service: Arc<CniService>, stop: impl Future<Output = ()>) {
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tasks.spawn(handle(stream, service.clone()));
                }
                Err(e) => tracing::warn!("accepting a CNI connection: {e}"),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = &mut stop => break,
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// The answer to a call the agent could not run at all.
fn failed(code: ErrorCode, msg: String, details: String) -> Outcome {
    // No config to take a version from: the newest.
    Outcome::error(&ErrorReply { code: code.into(), msg, details }, &[])
}

async fn handle(mut stream: UnixStream, service: Arc<CniService>) {
    let mut body = Vec::new();
    if let Err(e) = (&mut stream).take(MAX_MESSAGE + 1).read_to_end(&mut body).await {
        tracing::warn!("reading a CNI request: {e}");
        return;
    }
    let answer = match decode_frame(&body) {
        // The binary checks before it sends; this is another client, or a broken one.
        Frame::TooLarge => {
            let msg = format!("the request is larger than the agent takes ({MAX_MESSAGE} bytes)");
            serde_json::to_vec(&failed(ErrorCode::InvalidNetworkConfig, msg, String::new()))
        }
        Frame::Trace(trace) => {
            let calls: Vec<CallTrace> = service.metrics.slowest().into_iter().take(trace.trace).collect();
            serde_json::to_vec(&calls)
        }
        Frame::Call(request) => {
            // VERSION, STATUS and GC name no container, and wait for nobody.
            let _turn = match request.env.get("CNI_CONTAINERID").filter(|id| !id.is_empty()) {
                Some(id) => Some(service.arrivals.turn(id).await),
                None => None,
            };
            let Ok(permit) = service.permits.clone().acquire_owned().await else { return };
            let worker = service.clone();
            let outcome = match tokio::task::spawn_blocking(move || {
                let _permit = permit;
                worker.call(&request)
            })
            .await
            {
                Ok(outcome) => outcome,
                Err(e) => failed(ErrorCode::Plugin, format!("the agent's call failed: {e}"), String::new()),
            };
            serde_json::to_vec(&outcome)
        }
        Frame::Unreadable(e) => serde_json::to_vec(&failed(
            ErrorCode::Decode,
            "a forwarded call the agent cannot read".into(),
            e.to_string(),
        )),
    };
    match answer {
        Ok(bytes) => {
            if let Err(e) = stream.write_all(&bytes).await {
                tracing::warn!("answering a CNI call: {e}");
            }
            let _ = stream.shutdown().await;
        }
        Err(e) => tracing::warn!("encoding an answer: {e}"),
    }
}

/// Asks the agent whose socket is in `dir` for its slowest recent calls.
pub fn trace(dir: &Path, count: usize) -> anyhow::Result<Vec<CallTrace>> {
    use std::io::{Read, Write};
    let path = socket_path(dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path)
        .with_context(|| format!("connecting to the agent at {}", path.display()))?;
    stream.write_all(&serde_json::to_vec(&TraceRequest { trace: count })?)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    stream.take(MAX_MESSAGE).read_to_end(&mut answer)?;
    serde_json::from_slice(&answer).context("reading the agent's answer")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    fn request(env: &[(&str, &str)], stdin: &str) -> Request {
        Request {
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            stdin: stdin.into(),
        }
    }

    #[test]
    fn a_call_runs_in_process_and_is_recorded_with_its_typed_outcome() {
        let metrics = Arc::new(Metrics::default());
        let node = Node::real(plexus_hw::SysfsRoot::default());
        let registry = plexus_cni::entry::builtin_registry(&node, Default::default());
        let service = CniService::new(node, registry, None, None, 1, metrics.clone());

        let outcome = service.call(&request(&[("CNI_COMMAND", "VERSION")], "{}"));
        assert_eq!(outcome.code, 0);
        let version: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert_eq!(version["cniVersion"], "1.1.0");

        // An ADD without CNI_NETNS: the spec's code 4, in the caller's version, and the same
        // code as the call's outcome in the trace.
        let env =
            [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/x")];
        let outcome = service.call(&request(&env, r#"{"cniVersion": "0.4.0", "clusterNetwork": "x"}"#));
        assert_eq!(outcome.code, 1);
        let reply: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
        assert_eq!(
            (reply["cniVersion"].as_str(), reply["code"].as_u64(), reply["msg"].as_str()),
            (Some("0.4.0"), Some(4), Some("CNI_NETNS is not set"))
        );
        let calls: BTreeMap<String, String> =
            metrics.slowest().into_iter().map(|c| (c.command, c.outcome)).collect();
        assert_eq!(calls, BTreeMap::from([("ADD".into(), "4".into()), ("VERSION".into(), "ok".into())]));
    }
}
