//! `plexus`: the CNI binary the container runtime calls (config `"type": "plexus"`). On a node
//! with the agent, it forwards the call to the agent's socket and prints the answer; without
//! one, it becomes `plexus-standalone` (installed next to it), which does the work in its own
//! process: the same program, so the runtime's timeout still kills the call. Installed (or
//! linked) under the name of a built-in delegate (`sriov`, `userspace`, `bond`), it is that
//! delegate alone, for plain Multus: `plexus-standalone` under that name.

use std::io::{Seek, Write};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use plexus_shim::{ErrorReply, Forwarded, Outcome, Request, codes};

/// Replaces this process with `plexus-standalone` (next to this binary), named `called_as`,
/// with `stdin` as its stdin; returns only when that fails, with the answer to give.
fn become_standalone(called_as: &str, stdin: &[u8]) -> Outcome {
    let failed = |what: String, error: std::io::Error| {
        let reply = ErrorReply { code: codes::PLUGIN, msg: what, details: error.to_string() };
        Outcome::error(&reply, stdin)
    };
    let program = match std::env::current_exe() {
        Ok(me) => me.with_file_name(plexus_shim::STANDALONE),
        Err(e) => return failed("finding the plexus binary's own path".into(), e),
    };
    // stdin was read to find the agent; the other program gets it back from a memory file
    // (a pipe could hold only 64 kB without a writer, and a writer thread dies with exec).
    let input = || -> std::io::Result<std::fs::File> {
        let fd = nix::sys::memfd::memfd_create(c"plexus-stdin", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(stdin)?;
        file.rewind()?;
        Ok(file)
    };
    let input = match input() {
        Ok(file) => file,
        Err(e) => return failed("passing the config on".into(), e),
    };
    let error = std::process::Command::new(&program).arg0(called_as).stdin(input).exec();
    failed(format!("running {} (installed next to plexus)", program.display()), error)
}

/// Forwards the call to the agent, or hands it on.
fn forwarded(stdin: &[u8], called_as: &str) -> Outcome {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let request = Request {
        env: plexus_shim::cni_env(std::env::vars()),
        stdin: String::from_utf8_lossy(stdin).into_owned(),
    };
    match plexus_shim::forward(&plexus_shim::socket_dir(stdin), &request) {
        Forwarded::Answered(outcome) => outcome,
        Forwarded::NoAgent => become_standalone(called_as, stdin),
        // Without the agent an ADD would miss what only the agent knows (the pod's devices,
        // its watch cache): fail now rather than after a timeout. Everything else can be done
        // here; DEL must be, or the pod never terminates.
        Forwarded::AgentDown { socket, error } if command == "ADD" => {
            let reply = ErrorReply {
                code: codes::TRY_AGAIN_LATER,
                msg: format!(
                    "the plexus agent is not running (its socket {} does not answer)",
                    socket.display()
                ),
                details: error.to_string(),
            };
            Outcome::error(&reply, stdin)
        }
        Forwarded::AgentDown { .. } => become_standalone(called_as, stdin),
        Forwarded::TooLarge { size } => Outcome::too_large(&format!("the call ({size} bytes)"), stdin),
    }
}

fn main() -> ExitCode {
    let (stdin, mut called_as) = plexus_shim::started();
    if called_as.is_empty() {
        called_as = "plexus".into();
    }
    let outcome = if stdin.len() as u64 > plexus_shim::MAX_MESSAGE {
        Outcome::too_large("the network configuration on stdin", &[])
    } else if plexus_shim::BUILTIN_DELEGATES.contains(&called_as.as_str()) {
        // A built-in delegate by itself, called by another meta-plugin: never the agent's call.
        become_standalone(&called_as, &stdin)
    } else {
        // argv[0] is passed on: `plexus-standalone` runs as the meta-plugin under any other name.
        forwarded(&stdin, &called_as)
    };
    outcome.finish()
}
