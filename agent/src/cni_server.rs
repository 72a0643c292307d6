//! The agent's CNI socket: the `plexus` binary forwards each call here (see
//! `plexus_cni::forward`) and the agent runs it with the same `entry` the binary would, with the
//! built-in delegates in-process on the agent's view of the node.
//!
//! The socket is `<dir>/plexus.sock`, 0600 in a 0700 directory. Calls run on threads of their
//! own, at most `max_parallel` at a time; the others wait in the socket's backlog, so a burst
//! of ADDs costs queueing, not memory. The socket file is left in place when the agent stops:
//! a `plexus` binary finding it dead fails ADD at once and does DEL itself.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
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

use crate::metrics::{CallTrace, Metrics, seconds};

/// Kubernetes as the agent sees it, shared by every call.
pub type SharedCluster = Arc<dyn Cluster + Send + Sync>;

/// The calls of each container in the order they arrived: a DEL the runtime sends while its
/// ADD still runs (it killed the `plexus` binary that forwarded the ADD, on a timeout) waits
/// for that ADD, then undoes what it did. A ticket is taken as soon as the request is read;
/// the container's file lock (`cache::lock`) orders the agent's calls with a binary's own.
#[derive(Debug, Default)]
struct Arrivals {
    /// Per container: the next ticket to give, and the ticket whose turn it is.
    queues: std::sync::Mutex<HashMap<String, (u64, u64)>>,
    changed: std::sync::Condvar,
}

/// A call's turn among its container's calls; the next one's begins when this is dropped.
struct Turn<'a> {
    arrivals: &'a Arrivals,
    container_id: String,
}

impl Arrivals {
    /// Waits for the calls of `container_id` that arrived before (first come, first served).
    fn turn(&self, container_id: &str) -> Turn<'_> {
        let mut queues = self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let queue = queues.entry(container_id.to_owned()).or_insert((0, 0));
        let ticket = queue.0;
        queue.0 += 1;
        while queues.get(container_id).is_some_and(|(_, serving)| *serving != ticket) {
            queues = self.changed.wait(queues).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Turn { arrivals: self, container_id: container_id.to_owned() }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut queues = self.arrivals.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(queue) = queues.get_mut(&self.container_id) {
            queue.1 += 1;
            // Nobody waits: the queue goes.
            if queue.1 == queue.0 {
                queues.remove(&self.container_id);
            }
        }
        drop(queues);
        self.arrivals.changed.notify_all();
    }
}

/// What runs the calls.
pub struct CniService {
    node: Node,
    registry: Registry,
    cluster: Option<SharedCluster>,
    devices: Option<Arc<dyn Devices>>,
    max_parallel: usize,
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
        let max_parallel = max_parallel.max(1);
        Self { node, registry, cluster, devices, max_parallel, arrivals: Arrivals::default(), metrics }
    }

    /// Runs one call on this thread (never a tokio worker: calls enter namespaces and block),
    /// gives its outcome to `answer` as soon as it is known, finishes what an ADD left for after
    /// the answer (see `Aftermath`), and records the call.
    pub fn call(&self, request: &Request, answer: impl FnOnce(Outcome)) {
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
        let (executed, mut phases) = plexus_cni::phases::collect(|| {
            entry::execute(|k| env.get(k).map(|v| (*v).to_owned()), stdin, &context)
        });
        let outcome_label = match &executed.result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().to_string(),
        };
        let total = start.elapsed();
        answer(entry::outcome(executed.result, stdin));
        if let Some(aftermath) = executed.aftermath {
            let finishing = Instant::now();
            drop(aftermath);
            phases.push(("after the answer".to_owned(), finishing.elapsed()));
        }
        self.metrics.record(CallTrace {
            command: env.get("CNI_COMMAND").copied().unwrap_or("?").to_owned(),
            container_id: env.get("CNI_CONTAINERID").copied().unwrap_or("").to_owned(),
            outcome: outcome_label,
            total: seconds(total),
            phases: phases.into_iter().map(|(name, took)| (name, seconds(took))).collect(),
        });
    }
}

/// The agent's CNI socket, listening, and the epoll instance its serving threads wait in (see
/// `Server`).
#[derive(Debug)]
pub struct Listener {
    socket: UnixListener,
    ready: Epoll,
}

/// Makes the socket directory (0700) and binds `<dir>/plexus.sock` (0600), replacing a socket
/// left by an earlier agent.
pub fn bind(dir: &Path) -> anyhow::Result<Listener> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    let path = dir.join(SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the old socket {}", path.display())),
    }
    let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    let waiting = || -> std::io::Result<Epoll> {
        listener.set_nonblocking(true)?;
        let ready = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        ready.add(&listener, Server::interest())?;
        Ok(ready)
    };
    let ready = waiting().with_context(|| format!("waiting for connections on {}", path.display()))?;
    Ok(Listener { socket: listener, ready })
}

/// The socket path in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_NAME)
}

/// How long a client may take to send its request (the binary sends it at once).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The threads that serve the socket. Each one takes a connection and serves it whole on the
/// same thread (read, wait for the container's turn, run, answer): a call costs no hand-off
/// between threads, which on this project's VM was a tenth of a millisecond per call. There
/// are as many threads as calls that ran at once, at most `max_parallel`: a thread that takes
/// a connection while no other waits for one starts one more. The calls beyond wait in the
/// socket's backlog, not in the agent's memory.
///
/// The threads wait in one epoll instance, not in `accept`: the kernel wakes the waiters of an
/// epoll instance last come, first served (`ep_poll` queues a waiter at the head), and those
/// of a blocking `accept` first come, first served. With `accept`, calls coming one after the
/// other went round every thread in turn, each one cold (its stack and its allocator arena,
/// and often the other CPU); now they go to the thread that served the last one. The listener
/// is one-shot in the instance, so one connection wakes one thread, which re-arms it once it
/// has taken the connection.
struct Server {
    listener: Listener,
    service: Arc<CniService>,
    /// Threads waiting for a connection.
    idle: AtomicUsize,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    stopping: AtomicBool,
}

impl Server {
    fn interest() -> EpollEvent {
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, 0)
    }

    /// Starts one more serving thread.
    fn grow(self: &Arc<Self>) {
        let mut threads = self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if threads.len() >= self.service.max_parallel || self.stopping.load(Ordering::Acquire) {
            return;
        }
        let server = self.clone();
        match std::thread::Builder::new().name("plexus-cni".into()).spawn(move || server.serve()) {
            Ok(thread) => threads.push(thread),
            Err(e) => tracing::warn!("starting a CNI thread: {e}"),
        }
    }

    /// Lets the next connection (or the listener's shutdown) wake a waiting thread.
    fn rearm(&self) {
        if let Err(e) = self.listener.ready.modify(&self.listener.socket, &mut Self::interest()) {
            tracing::warn!("waiting for the next CNI connection: {e}");
        }
    }

    /// The next connection; `None` once the agent stops.
    fn next(&self) -> Option<UnixStream> {
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return None;
            }
            self.idle.fetch_add(1, Ordering::AcqRel);
            let mut events = [EpollEvent::empty()];
            let waited = self.listener.ready.wait(&mut events, EpollTimeout::NONE);
            self.idle.fetch_sub(1, Ordering::AcqRel);
            match waited {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("waiting for a CNI connection: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            // Stopping: the listener's shutdown woke this thread; the one-shot wake-up is
            // passed on, for the next waiting thread to see it too.
            if self.stopping.load(Ordering::Acquire) {
                self.rearm();
                return None;
            }
            // The accepted socket does not inherit the listener's O_NONBLOCK (accept4 takes
            // only its own flags): the call reads it blocking, with a timeout.
            let accepted = self.listener.socket.accept();
            self.rearm();
            match accepted {
                Ok((stream, _)) => return Some(stream),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::warn!("accepting a CNI connection: {e}");
                    // Out of descriptors, say: not a busy loop.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn serve(self: Arc<Self>) {
        while let Some(stream) = self.next() {
            if self.idle.load(Ordering::Acquire) == 0 {
                self.grow();
            }
            handle(stream, &self.service);
        }
    }
}

/// Serves calls until `stop` completes; then waits for the calls under way.
pub async fn serve(listener: Listener, service: Arc<CniService>, stop: impl Future<Output = ()>) {
    let server = Arc::new(Server {
        listener,
        service,
        idle: AtomicUsize::new(0),
        threads: std::sync::Mutex::new(Vec::new()),
        stopping: AtomicBool::new(false),
    });
    server.grow();
    stop.await;
    server.stopping.store(true, Ordering::Release);
    // Wakes a thread waiting for a connection (the listener reports a hang-up from now on),
    // which passes the wake-up on; a thread in a call finishes it, answers, and finds
    // `stopping`.
    let _ = nix::sys::socket::shutdown(server.listener.socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    let threads =
        std::mem::take(&mut *server.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}

/// The answer to a call the agent could not run at all.
fn failed(code: ErrorCode, msg: String, details: String) -> Outcome {
    // No config to take a version from: the newest.
    Outcome::error(&ErrorReply { code: code.into(), msg, details }, &[])
}

fn handle(mut stream: UnixStream, service: &CniService) {
    // A request is a few kB: read in one go, not in growing steps.
    let mut body = Vec::with_capacity(16 << 10);
    let read = stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .and_then(|()| (&mut stream).take(MAX_MESSAGE + 1).read_to_end(&mut body));
    if let Err(e) = read {
        tracing::warn!("reading a CNI request: {e}");
        return;
    }
    match decode_frame(&body) {
        // The binary checks before it sends; this is another client, or a broken one.
        Frame::TooLarge => {
            let msg = format!("the request is larger than the agent takes ({MAX_MESSAGE} bytes)");
            send(&mut stream, &failed(ErrorCode::InvalidNetworkConfig, msg, String::new()));
        }
        Frame::Trace(trace) => {
            let calls: Vec<CallTrace> = service.metrics.slowest().into_iter().take(trace.trace).collect();
            send(&mut stream, &calls);
        }
        Frame::Call(request) => {
            // VERSION, STATUS and GC name no container, and wait for nobody. The turn is held
            // until the call is finished, after its answer.
            let _turn = request
                .env
                .get("CNI_CONTAINERID")
                .filter(|id| !id.is_empty())
                .map(|id| service.arrivals.turn(id));
            // Answered as soon as the outcome is known, and closed once the call is finished:
            // the binary stops reading when the answer is whole, and is gone by then (closing
            // at once took the binary's socket lock while the binary, just woken by the
            // answer, held it: on this project's VM a contended lock costs a halted virtual
            // CPU's wake-up). A call that panics before its answer is answered too, as before
            // on the runtime's blocking threads, and its serving thread lives on.
            let mut answered = false;
            let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                service.call(&request, |outcome| {
                    send(&mut stream, &outcome);
                    answered = true;
                });
            }));
            if let (Err(panic), false) = (called, answered) {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let msg = format!("the agent's call failed: it panicked: {why}");
                send(&mut stream, &failed(ErrorCode::Plugin, msg, String::new()));
            }
        }
        Frame::Unreadable(e) => send(
            &mut stream,
            &failed(ErrorCode::Decode, "a forwarded call the agent cannot read".into(), e.to_string()),
        ),
    }
}

/// Sends `answer`; the connection closes when the stream is dropped.
fn send(stream: &mut UnixStream, answer: &impl serde::Serialize) {
    match serde_json::to_vec(answer) {
        Ok(bytes) => {
            if let Err(e) = stream.write_all(&bytes) {
                tracing::warn!("answering a CNI call: {e}");
            }
        }
        Err(e) => tracing::warn!("encoding an answer: {e}"),
    }
}

/// Asks the agent whose socket is in `dir` for its slowest recent calls.
pub fn trace(dir: &Path, count: usize) -> anyhow::Result<Vec<CallTrace>> {
    let path = socket_path(dir);
    let mut stream = UnixStream::connect(&path)
        .with_context(|| format!("connecting to the agent at {}", path.display()))?;
    stream.write_all(&serde_json::to_vec(&TraceRequest { trace: count })?)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    stream.take(MAX_MESSAGE).read_to_end(&mut answer)?;
    serde_json::from_slice(&answer).context("reading the agent's answer")
}
