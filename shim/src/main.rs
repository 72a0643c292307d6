//! `plexus`: the CNI binary the container runtime calls (config `"type": "plexus"`). On a node
//! with the agent, it forwards the call to the agent's socket and prints the answer; without
//! one, it becomes `plexus-standalone` (installed next to it), which does the work in its own
//! process: the same program, so the runtime's timeout still kills the call. Installed (or
//! linked) under the name of a built-in delegate (`sriov`, `userspace`, `bond`), it is that
//! delegate alone, for plain Multus: `plexus-standalone` under that name.
//!
//! A program without libc and without std (`rt` is its start and end): the runtime starts it
//! for every call, and the start of a glibc and std program is most of what forwarding costs
//! on a VM. Its system calls are rustix's, its memory dlmalloc's. Built by
//! `cargo rustc -p plexus-shim --bin plexus --features bin --release -- -C panic=abort`
//! (build.rs links it static, not position-independent, without the C start files).
#![no_std]
#![no_main]

extern crate alloc;

mod rt;

use alloc::collections::BTreeMap;
use alloc::ffi::CString;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use plexus_shim::{ErrorReply, Outcome, Request, codes};
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;

#[global_allocator]
static ALLOCATOR: rustix_dlmalloc::GlobalDlmalloc = rustix_dlmalloc::GlobalDlmalloc;

/// A bug or no memory: said as a CNI error, without allocating.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    let _ = write_all(rt::stdout(), br#"{"cniVersion":"1.1.0","code":100,"msg":"the plexus binary failed"}"#);
    rt::exit(1)
}

/// An errno as std words it (`Connection refused (os error 111)`) for the ones a forward
/// meets; the number alone for the others.
fn describe(errno: Errno) -> String {
    let what = match errno {
        Errno::NOENT => "No such file or directory",
        Errno::CONNREFUSED => "Connection refused",
        Errno::ACCESS => "Permission denied",
        Errno::CONNRESET => "Connection reset by peer",
        Errno::PIPE => "Broken pipe",
        Errno::NAMETOOLONG => "File name too long",
        Errno::NOTSOCK => "Socket operation on non-socket",
        Errno::NOEXEC => "Exec format error",
        _ => return format!("os error {}", errno.raw_os_error()),
    };
    format!("{what} (os error {})", errno.raw_os_error())
}

fn write_all(fd: impl AsFd, bytes: &[u8]) -> Result<(), Errno> {
    put_all(bytes, |rest| rustix::io::write(fd.as_fd(), rest))
}

/// Gives all of `bytes` to `put` (a write or a send), which takes what it can each time.
fn put_all(mut bytes: &[u8], mut put: impl FnMut(&[u8]) -> Result<usize, Errno>) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match put(bytes) {
            Ok(0) => return Err(Errno::PIPE),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads `fd` to its end, or to `limit` bytes.
fn read_to_end(fd: impl AsFd, limit: usize) -> Result<Vec<u8>, Errno> {
    read_until(fd, limit, |_| None::<()>).map(|(bytes, _)| bytes)
}

/// Reads `fd` until `whole` makes something of the bytes read so far (returned with them),
/// to its end, or to `limit` bytes.
fn read_until<T>(
    fd: impl AsFd,
    limit: usize,
    whole: impl Fn(&[u8]) -> Option<T>,
) -> Result<(Vec<u8>, Option<T>), Errno> {
    // A config or an answer is a few kB: one read, mostly.
    let mut bytes = Vec::with_capacity(16 << 10);
    while bytes.len() < limit {
        if bytes.len() == bytes.capacity() {
            bytes.reserve(bytes.len());
        }
        // Into the spare capacity, which the read's length then extends the vector by.
        match rustix::io::read(fd.as_fd(), rustix::buffer::spare_capacity(&mut bytes)) {
            Ok(0) => break,
            Ok(_) => {
                if let Some(made) = whole(&bytes) {
                    return Ok((bytes, Some(made)));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(limit);
    Ok((bytes, None))
}

/// The largest message, as a length (it is far below usize::MAX everywhere).
fn max_message() -> usize {
    usize::try_from(plexus_shim::MAX_MESSAGE).unwrap_or(usize::MAX)
}

/// What came of forwarding.
enum Forwarded {
    /// The agent answered.
    Answered(Outcome),
    /// No agent on this node: no socket.
    NoAgent,
    /// The request is larger than the agent takes; not sent.
    TooLarge(usize),
    /// There is a socket, but the agent did not answer: the socket and why.
    AgentDown(String, String),
}

/// Sends `body` (an encoded [`Request`]) to the agent whose socket is in `dir`.
fn forward(dir: &str, body: &[u8]) -> Forwarded {
    let socket = format!("{}/{}", dir.trim_end_matches('/'), plexus_shim::SOCKET_NAME);
    let down = |why: String| Forwarded::AgentDown(socket.clone(), why);
    // Connecting tells the three cases apart in one call: no file is no agent; a file nobody
    // listens on is an agent down.
    let stream = match connect(&socket) {
        Ok(stream) => stream,
        Err(Errno::NOENT) => return Forwarded::NoAgent,
        Err(e) => return down(describe(e)),
    };
    if body.len() > max_message() {
        return Forwarded::TooLarge(body.len());
    }
    // The agent answers with the outcome the binary prints and exits with.
    let exchange = || -> Result<(Vec<u8>, Option<Outcome>), Errno> {
        // send, not write: an agent gone meanwhile is an error here, not a SIGPIPE.
        put_all(body, |rest| rustix::net::send(&stream, rest, rustix::net::SendFlags::NOSIGNAL))?;
        rustix::net::shutdown(&stream, rustix::net::Shutdown::Write)?;
        // Done when the answer is whole, not at the agent's end of file: the agent closes
        // only once it has finished the call (see the agent's `Aftermath`), and waiting for
        // that would cost a wake-up for nothing.
        // (Parsed only when it could be whole: a long answer comes in many reads.)
        read_until(&stream, max_message(), |bytes| {
            bytes.trim_ascii_end().ends_with(b"}").then(|| serde_json::from_slice(bytes).ok()).flatten()
        })
    };
    match exchange() {
        Ok((_, Some(outcome))) => Forwarded::Answered(outcome),
        // Ended without a whole answer: parsed once more for the parser's word on why.
        Ok((answer, None)) => match serde_json::from_slice(&answer) {
            Ok(outcome) => Forwarded::Answered(outcome),
            Err(e) => down(e.to_string()),
        },
        Err(e) => down(describe(e)),
    }
}

fn connect(path: &str) -> Result<OwnedFd, Errno> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let address = SocketAddrUnix::new(path)?;
    let stream =
        rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    loop {
        match rustix::net::connect(&stream, &address) {
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
            Ok(()) => return Ok(stream),
        }
    }
}

/// Replaces this process with `plexus-standalone` (next to this binary), named `called_as`,
/// with `stdin` as its stdin; returns only when that fails, with the answer to give.
fn become_standalone(start: &rt::Start, called_as: &str, stdin: &[u8]) -> Outcome {
    let failed = |msg: String, details: String| {
        Outcome::error(&ErrorReply { code: codes::PLUGIN, msg, details }, stdin)
    };
    let program = match rustix::fs::readlinkat(rustix::fs::CWD, "/proc/self/exe", Vec::new()) {
        Ok(me) => [dir_of(me.as_bytes()), b"/", plexus_shim::STANDALONE.as_bytes()].concat(),
        Err(e) => return failed("finding the plexus binary's own path".into(), describe(e)),
    };
    let shown = String::from_utf8_lossy(&program).into_owned();
    // stdin was read to find the agent; the other program gets it back from a memory file
    // (a pipe could hold only 64 kB without a writer, and nothing is left to write after exec).
    let input = || -> Result<(), Errno> {
        let file = rustix::fs::memfd_create("plexus-stdin", rustix::fs::MemfdFlags::CLOEXEC)?;
        write_all(&file, stdin)?;
        rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0))?;
        // fd 0 becomes the memory file (dup2 leaves it open across exec).
        rustix::stdio::dup2_stdin(&file)
    };
    if let Err(e) = input() {
        return failed("passing the config on".into(), describe(e));
    }
    let (Ok(program), Ok(arg0)) = (CString::new(program), CString::new(called_as)) else {
        return failed(format!("running {shown}"), "a name with a NUL byte".into());
    };
    let error = start.exec(&program, &arg0);
    failed(format!("running {shown} (installed next to plexus)"), describe(error))
}

/// A path's directory part (`.` when it has no `/`).
fn dir_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(at) => &path[..at],
        None => b".",
    }
}

/// Forwards the call to the agent, or hands it on.
fn forwarded(start: &rt::Start, stdin: &[u8], called_as: &str) -> Outcome {
    let mut env = BTreeMap::new();
    for entry in start.env() {
        let (name, value) = match entry.iter().position(|b| *b == b'=') {
            Some(at) => (&entry[..at], &entry[at + 1..]),
            None => (entry, &b""[..]),
        };
        if plexus_shim::is_cni_var(name) {
            env.insert(
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            );
        }
    }
    let command = env.get("CNI_COMMAND").cloned().unwrap_or_default();
    let request = Request { env, stdin: String::from_utf8_lossy(stdin).into_owned() };
    // Encoded before connecting: the agent, woken by the connection, finds the whole request.
    // (Strings in a map always encode.)
    let body = serde_json::to_vec(&request).unwrap_or_default();
    match forward(&plexus_shim::socket_dir(stdin), &body) {
        Forwarded::Answered(outcome) => outcome,
        Forwarded::NoAgent => become_standalone(start, called_as, stdin),
        // Without the agent an ADD would miss what only the agent knows (the pod's devices,
        // its watch cache): fail now rather than after a timeout. Everything else can be done
        // here; DEL must be, or the pod never terminates.
        Forwarded::AgentDown(socket, details) if command == "ADD" => {
            let reply = ErrorReply {
                code: codes::TRY_AGAIN_LATER,
                msg: format!("the plexus agent is not running (its socket {socket} does not answer)"),
                details,
            };
            Outcome::error(&reply, stdin)
        }
        Forwarded::AgentDown(..) => become_standalone(start, called_as, stdin),
        Forwarded::TooLarge(size) => Outcome::too_large(&format!("the call ({size} bytes)"), stdin),
    }
}

/// The program, started by `rt`; returns the exit status.
fn main(start: rt::Start) -> u8 {
    let mut called_as = plexus_shim::called_as(start.arg0());
    if called_as.is_empty() {
        called_as = "plexus".into();
    }
    // A failed read leaves it empty, which the call reports as an unparsable config.
    let stdin = read_to_end(rt::stdin(), max_message() + 1).unwrap_or_default();
    let outcome = if stdin.len() > max_message() {
        Outcome::too_large("the network configuration on stdin", &[])
    } else if plexus_shim::BUILTIN_DELEGATES.contains(&called_as.as_str()) {
        // A built-in delegate by itself, called by another meta-plugin: never the agent's call.
        become_standalone(&start, &called_as, &stdin)
    } else {
        // argv[0] is passed on: `plexus-standalone` runs as the meta-plugin under any other name.
        forwarded(&start, &stdin, &called_as)
    };
    let _ = write_all(rt::stdout(), outcome.stdout.as_bytes());
    outcome.exit_status()
}
