//! The `plexus` binary's way to the agent, and what it needs to answer by itself: one CNI call
//! (its CNI_* environment and stdin) sent over the agent's unix socket, one answer (the
//! [`Outcome`]: stdout and exit code) back, both JSON, one connection per call. The client
//! ends its request by shutting down its writing side; the agent's answer ends where its JSON
//! does (the agent closes the connection only after finishing the call, which the answer does
//! not wait for). The agent runs the call with the same `entry` `plexus-standalone` would, so
//! the answer is already in the caller's cniVersion.
//!
//! This crate is small on purpose: the runtime starts `plexus` for every call. The library is
//! `no_std` (it needs only `alloc` and serde_json), so that the `plexus` binary can be a
//! program without libc and without std's runtime (see `main.rs`: on this project's VM a
//! process start with glibc's and std's initialisation costs half a millisecond more than one
//! without). `plexus-cni` re-exports it, with the `std` feature for `plexus-standalone`'s edges
//! ([`started`], [`Outcome::finish`]); the agent decodes with it.
//!
//! Whether there is an agent is decided by its socket: no socket file in the socket directory
//! (`daemonSocketDir`) means a node without the agent, and `plexus-standalone` does the work; a
//! socket that refuses connections means the agent is down (the agent leaves its socket in
//! place when it stops, so this is told apart from "no agent"): ADD then fails at once, and DEL
//! falls back to `plexus-standalone` and the on-disk cache, so a pod is never stuck
//! terminating.

#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The agent's socket directory (`daemonSocketDir`) unless the config names another.
pub const SOCKET_DIR: &str = "/run/plexus";
/// The agent's socket, in its socket directory.
pub const SOCKET_NAME: &str = "plexus.sock";
/// The program that does a call in its own process (no agent), next to `plexus`.
pub const STANDALONE: &str = "plexus-standalone";
/// The built-in delegates: `plexus` (and `plexus-standalone`) installed or linked under one of
/// these names is that delegate alone, for plain Multus.
pub const BUILTIN_DELEGATES: [&str; 3] = ["sriov", "userspace", "bond"];
/// The newest CNI version, for an error answered to a config that names none.
pub const NEWEST_CNI_VERSION: &str = "1.1.0";

/// The largest request or answer read (a config is a few kB; this bounds a broken peer).
pub const MAX_MESSAGE: u64 = 4 << 20;

/// The spec's error codes the shim answers with by itself.
pub mod codes {
    /// 7: invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// 11: try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// 100: a failure of the plugin itself.
    pub const PLUGIN: u32 = 100;
}

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
    // A call first: it is nearly every frame, and a trace request lacks a call's keys.
    match serde_json::from_slice::<Request>(body) {
        Ok(request) => Frame::Call(request),
        Err(error) => match serde_json::from_slice::<TraceRequest>(body) {
            Ok(trace) => Frame::Trace(trace),
            Err(_) => Frame::Unreadable(error),
        },
    }
}

/// What a call prints on stdout, and its exit code: what the binary ends with, and what the
/// agent sends back over its socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// stdout.
    pub stdout: String,
    /// The exit code: 0, or 1 with the error JSON on stdout.
    pub code: i32,
}

impl Outcome {
    /// A failure as the spec prints it (exit code 1), in the cniVersion of the caller's config
    /// `stdin` (the newest when it says none).
    pub fn error(reply: &ErrorReply, stdin: &[u8]) -> Self {
        Self { stdout: reply.to_json(&error_version(stdin)), code: 1 }
    }

    /// The answer to `what` (a config, a call) being larger than [`MAX_MESSAGE`].
    pub fn too_large(what: &str, stdin: &[u8]) -> Self {
        let reply = ErrorReply {
            code: codes::INVALID_NETWORK_CONFIG,
            msg: format!("{what} is larger than the {MAX_MESSAGE} bytes Plexus takes"),
            details: String::new(),
        };
        Self::error(&reply, stdin)
    }

    /// Prints stdout and gives the exit code: how a CNI program ends.
    #[cfg(feature = "std")]
    pub fn finish(&self) -> std::process::ExitCode {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(self.stdout.as_bytes());
        let _ = stdout.flush();
        std::process::ExitCode::from(self.exit_status())
    }

    /// The exit status to end with: the code, or 1 for one that does not fit.
    pub fn exit_status(&self) -> u8 {
        u8::try_from(self.code).unwrap_or(1)
    }
}

/// What a CNI program was started with: its stdin, read to at most [`MAX_MESSAGE`]` + 1`
/// bytes (a config is a few kB: more is refused, and not read to its end; a failed read leaves
/// it empty, which the call reports as an unparsable config), and the name it was called by
/// (argv[0]'s file name, which makes it a built-in delegate alone).
#[cfg(feature = "std")]
pub fn started() -> (alloc::vec::Vec<u8>, String) {
    use std::io::Read;
    let mut stdin = alloc::vec::Vec::new();
    let _ = std::io::stdin().take(MAX_MESSAGE + 1).read_to_end(&mut stdin);
    let arg0 = std::env::args_os().next().unwrap_or_default();
    (stdin, called_as(std::os::unix::ffi::OsStrExt::as_bytes(arg0.as_os_str())))
}

/// The name a program was called by: the file name of its argv[0] (empty when it has none).
pub fn called_as(arg0: &[u8]) -> String {
    let name = arg0.rsplit(|b| *b == b'/').next().unwrap_or_default();
    String::from_utf8_lossy(name).into_owned()
}

/// The spec's error object, as a plugin prints it on stdout when it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The code.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// Longer details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl core::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl ErrorReply {
    /// The JSON for a caller of `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut value = serde_json::json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            value["details"] = Value::String(self.details.clone());
        }
        value.to_string()
    }
}

/// The cniVersion to answer an error with: the config's if it says one, else the newest.
pub fn error_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| NEWEST_CNI_VERSION.to_owned())
}

/// The socket directory a config names (`daemonSocketDir`, any case), else the default.
pub fn socket_dir(stdin: &[u8]) -> String {
    let config: Option<Value> = serde_json::from_slice(stdin).ok();
    let named = config.as_ref().and_then(Value::as_object).and_then(|map| {
        map.iter().find(|(k, _)| k.eq_ignore_ascii_case("daemonSocketDir")).and_then(|(_, v)| v.as_str())
    });
    named.unwrap_or(SOCKET_DIR).to_owned()
}

/// Whether an environment variable is one the call forwards (CNI_*).
pub fn is_cni_var(name: &[u8]) -> bool {
    name.starts_with(b"CNI_")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_socket_directory_comes_from_the_config() {
        assert_eq!(socket_dir(br#"{"DaemonSocketDir": "/tmp/x"}"#), "/tmp/x");
        assert_eq!(socket_dir(b"{}"), SOCKET_DIR);
        assert_eq!(socket_dir(b"not json"), SOCKET_DIR);
    }

    #[test]
    fn the_name_called_by_is_argv0s_file_name() {
        assert_eq!(called_as(b"/opt/cni/bin/sriov"), "sriov");
        assert_eq!(called_as(b"plexus"), "plexus");
        assert_eq!(called_as(b""), "");
        assert!(is_cni_var(b"CNI_COMMAND") && !is_cni_var(b"PATH"));
    }

    #[test]
    fn an_error_answers_in_the_callers_version() {
        let reply = ErrorReply { code: 4, msg: "CNI_COMMAND is not set".into(), details: "env".into() };
        let json: Value =
            serde_json::from_str(&Outcome::error(&reply, br#"{"cniVersion": "0.4.0"}"#).stdout).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cniVersion": "0.4.0", "code": 4, "msg": "CNI_COMMAND is not set", "details": "env"})
        );
        let json: Value = serde_json::from_str(&Outcome::error(&reply, b"").stdout).unwrap();
        assert_eq!(json["cniVersion"], NEWEST_CNI_VERSION);
    }
}
