//! The `plexus` binary's way to the agent: one CNI call (its CNI_* environment and stdin) sent
//! over the agent's unix socket, one answer (the [`Outcome`]: stdout and exit code) back, both
//! JSON, one connection per call. The agent runs the call with the same `entry` the binary
//! would, so the answer is already in the caller's cniVersion.
//!
//! Whether there is an agent is decided by its socket: no socket file in the socket directory
//! (`daemonSocketDir`) means a node without the agent, and the binary does the work itself; a
//! socket that refuses connections means the agent is down (the agent leaves its socket in
//! place when it stops, so this is told apart from "no agent"): ADD then fails at once, and DEL
//! falls back to the binary's own path and the on-disk cache, so a pod is never stuck
//! terminating.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::entry::Outcome;
use crate::paths;

/// The largest request or answer read (a config is a few kB; this bounds a broken peer).
pub const MAX_MESSAGE: u64 = 4 << 20;

/// A forwarded call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The CNI_* variables.
    pub env: BTreeMap<String, String>,
    /// stdin (a JSON config, so UTF-8).
    pub stdin: String,
}

/// A request for the agent's slowest recent calls (`plexus-agent trace`), instead of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// At most this many calls.
    pub trace: usize,
}

/// What a client sent on the agent's socket.
#[derive(Debug)]
pub enum Frame {
    /// A CNI call.
    Call(Request),
    /// A trace request.
    Trace(TraceRequest),
    /// More than [`MAX_MESSAGE`] bytes (the reader stops one byte past it).
    TooLarge,
    /// Neither.
    Unreadable(serde_json::Error),
}

/// Decodes what a client sent (at most [`MAX_MESSAGE`]` + 1` bytes of it).
pub fn decode_frame(body: &[u8]) -> Frame {
    if body.len() as u64 > MAX_MESSAGE {
        return Frame::TooLarge;
    }
    if let Ok(trace) = serde_json::from_slice::<TraceRequest>(body) {
        return Frame::Trace(trace);
    }
    match serde_json::from_slice::<Request>(body) {
        Ok(request) => Frame::Call(request),
        Err(error) => Frame::Unreadable(error),
    }
}

/// What came of forwarding.
#[derive(Debug)]
pub enum Forwarded {
    /// The agent answered.
    Answered(Outcome),
    /// No agent on this node: no socket.
    NoAgent,
    /// The request is larger than the agent takes ([`MAX_MESSAGE`]); not sent.
    TooLarge {
        /// Its size in bytes.
        size: usize,
    },
    /// There is a socket, but the agent did not answer.
    AgentDown {
        /// The socket.
        socket: PathBuf,
        /// Why.
        error: io::Error,
    },
}

/// The socket directory a config names (`daemonSocketDir`, any case), else the default.
pub fn socket_dir(stdin: &[u8]) -> PathBuf {
    let config: Option<Value> = serde_json::from_slice(stdin).ok();
    let named = config.as_ref().and_then(Value::as_object).and_then(|map| {
        map.iter().find(|(k, _)| k.eq_ignore_ascii_case("daemonSocketDir")).and_then(|(_, v)| v.as_str())
    });
    PathBuf::from(named.unwrap_or(paths::SOCKET_DIR))
}

/// The CNI_* variables of an environment.
pub fn cni_env(vars: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.filter(|(k, _)| k.starts_with("CNI_")).collect()
}

/// Sends `request` to the agent whose socket is in `dir`.
pub fn forward(dir: &Path, request: &Request) -> Forwarded {
    let socket = dir.join(paths::SOCKET_NAME);
    if !socket.exists() {
        return Forwarded::NoAgent;
    }
    let down = |error| Forwarded::AgentDown { socket: socket.clone(), error };
    let mut stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(error) => return down(error),
    };
    let body = match serde_json::to_vec(request) {
        Ok(body) if body.len() as u64 > MAX_MESSAGE => return Forwarded::TooLarge { size: body.len() },
        Ok(body) => body,
        Err(error) => return down(io::Error::other(error)),
    };
    // The agent answers with the outcome the binary prints and exits with.
    let mut exchange = || -> io::Result<Outcome> {
        stream.write_all(&body)?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut answer = Vec::new();
        (&mut stream).take(MAX_MESSAGE).read_to_end(&mut answer)?;
        serde_json::from_slice(&answer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    };
    match exchange() {
        Ok(outcome) => Forwarded::Answered(outcome),
        Err(error) => down(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_directory_comes_from_the_config() {
        assert_eq!(socket_dir(br#"{"DaemonSocketDir": "/tmp/x"}"#), PathBuf::from("/tmp/x"));
        assert_eq!(socket_dir(b"{}"), PathBuf::from(paths::SOCKET_DIR));
        assert_eq!(socket_dir(b"not json"), PathBuf::from(paths::SOCKET_DIR));
    }

    #[test]
    fn no_socket_is_no_agent_and_a_dead_socket_is_an_agent_down() {
        let dir = plexus_sim::scratch("forward").unwrap();
        let request = Request { env: BTreeMap::new(), stdin: "{}".into() };
        assert!(matches!(forward(dir.path(), &request), Forwarded::NoAgent));
        // Too large for the agent: said so, not sent.
        let _listener = std::os::unix::net::UnixListener::bind(dir.path().join(paths::SOCKET_NAME)).unwrap();
        let huge = Request { env: BTreeMap::new(), stdin: "x".repeat(MAX_MESSAGE as usize) };
        assert!(
            matches!(forward(dir.path(), &huge), Forwarded::TooLarge { size } if size > MAX_MESSAGE as usize)
        );
        drop(_listener);
        std::fs::remove_file(dir.path().join(paths::SOCKET_NAME)).unwrap();
        // A socket nobody listens on any more: bound, then its listener dropped.
        drop(std::os::unix::net::UnixListener::bind(dir.path().join(paths::SOCKET_NAME)).unwrap());
        match forward(dir.path(), &request) {
            Forwarded::AgentDown { error, .. } => assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("{other:?}"),
        }
    }
}
