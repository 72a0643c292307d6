//! Starting a plugin binary and collecting what it printed: `posix_spawn` with the plugin's
//! stdin, stdout and stderr, in this process's environment with the call's CNI variables over
//! it, then its output read until its pipes close and its exit.
//!
//! std's `Command` does the same, but rebuilds the environment for every process it starts:
//! it reads this process's environment, copies each variable into a map, applies the call's
//! changes and makes every one a C string again. In the agent that was 4% of a CNI call's
//! thread with 36 variables, and a pod gets seven more per Service of its namespace. Here the
//! inherited part is made once (the agent and `plexus-standalone` set no variable after they
//! start), and a call adds its own.

use std::ffi::{CStr, CString, OsStr};
use std::io::{self, PipeReader, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Output};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

/// This process's environment as `NAME=value` C strings, read once.
fn inherited() -> &'static [CString] {
    static INHERITED: OnceLock<Vec<CString>> = OnceLock::new();
    INHERITED.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(name, value)| {
                let mut pair = name.into_vec();
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                // The environment holds no NUL byte: nothing is passed over.
                CString::new(pair).ok()
            })
            .collect()
    })
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        let shown = String::from_utf8_lossy(bytes);
        io::Error::new(io::ErrorKind::InvalidInput, format!("{shown:?} holds a NUL byte"))
    })
}

/// A plugin that was started: wait for it with [`Started::wait`] (it is reaped there).
#[derive(Debug)]
pub struct Started {
    pid: Pid,
    stdout: PipeReader,
    stderr: PipeReader,
}

/// Starts `program` with `args`, reading `stdin`, in this process's environment with `env` over
/// it. The plugin gets no other descriptor of this process (Rust opens all of them
/// close-on-exec), its signal mask empty and SIGPIPE at its default, as std's `Command` gives.
pub fn start(
    program: &Path,
    args: &[&OsStr],
    env: &[(&str, String)],
    stdin: PipeReader,
) -> io::Result<Started> {
    let path = c_string(program.as_os_str().as_bytes())?;
    let mut argv = vec![path.clone()];
    for arg in args {
        argv.push(c_string(arg.as_bytes())?);
    }
    let own = env
        .iter()
        .map(|(name, value)| c_string(format!("{name}={value}").as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let set_here = |pair: &CStr| {
        env.iter().any(|(name, _)| {
            pair.to_bytes().strip_prefix(name.as_bytes()).is_some_and(|rest| rest.first() == Some(&b'='))
        })
    };
    let envp: Vec<&CStr> = inherited()
        .iter()
        .map(CString::as_c_str)
        .filter(|pair| !set_here(pair))
        .chain(own.iter().map(CString::as_c_str))
        .collect();

    let (stdout, printed) = std::io::pipe()?;
    let (stderr, logged) = std::io::pipe()?;
    let mut actions = PosixSpawnFileActions::init()?;
    // std opens /dev/null at its start on whichever of 0, 1 and 2 is closed, so these pipes
    // are above them, and no dup2 here overwrites the source of another.
    actions.add_dup2(stdin.as_raw_fd(), 0)?;
    actions.add_dup2(printed.as_raw_fd(), 1)?;
    actions.add_dup2(logged.as_raw_fd(), 2)?;
    let mut attr = PosixSpawnAttr::init()?;
    // Rust ignores SIGPIPE, and an ignored signal stays ignored across exec: a plugin (a shell
    // script's pipeline) expects the default.
    attr.set_sigmask(&SigSet::empty())?;
    attr.set_sigdefault(&SigSet::from(Signal::SIGPIPE))?;
    attr.set_flags(PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF)?;
    let pid = posix_spawn(path.as_c_str(), &actions, &attr, &argv, &envp)?;
    // `stdin`, `printed` and `logged` close here: the plugin holds the only other ends, so its
    // output ends with it, and a write to its stdin fails once it is gone.
    Ok(Started { pid, stdout, stderr })
}

impl Started {
    /// Reads the plugin's stdout and stderr until both close, then reaps it.
    pub fn wait(self) -> io::Result<Output> {
        let Self { pid, mut stdout, mut stderr } = self;
        let read = read_both(&mut stdout, &mut stderr);
        // A failed read closes the pipes first: a plugin still writing gets EPIPE and ends.
        drop((stdout, stderr));
        let status = loop {
            match waitpid(pid, None) {
                Ok(WaitStatus::Exited(_, code)) => break ExitStatus::from_raw((code & 0xff) << 8),
                Ok(WaitStatus::Signaled(_, signal, core)) => {
                    break ExitStatus::from_raw(signal as i32 | if core { 0x80 } else { 0 });
                }
                // Stopped or continued: not asked for, not an end.
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        };
        let (stdout, stderr) = read?;
        Ok(Output { status, stdout, stderr })
    }
}

fn read_both(stdout: &mut PipeReader, stderr: &mut PipeReader) -> io::Result<(Vec<u8>, Vec<u8>)> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(&*stdout, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    fcntl(&*stderr, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut open = [true, true];
    while open.contains(&true) {
        let mut fds: Vec<PollFd<'_>> = [stdout.as_fd(), stderr.as_fd()]
            .into_iter()
            .zip(open)
            .filter(|(_, open)| *open)
            .map(|(fd, _)| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        drop(fds);
        open = [open[0] && !drain(stdout, &mut out)?, open[1] && !drain(stderr, &mut err)?];
    }
    Ok((out, err))
}

/// Reads what `pipe` holds now into `into`; true at its end (every writer gone).
fn drain(pipe: &mut PipeReader, into: &mut Vec<u8>) -> io::Result<bool> {
    loop {
        // read_to_end keeps what it read before the pipe ran dry.
        match pipe.read_to_end(into) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn sh(script: &str, env: &[(&str, String)], input: &[u8]) -> Output {
        let (stdin, mut feed) = std::io::pipe().unwrap();
        feed.write_all(input).unwrap();
        drop(feed);
        let started =
            start(Path::new("/bin/sh"), &[OsStr::new("-c"), OsStr::new(script)], env, stdin).unwrap();
        started.wait().unwrap()
    }

    #[test]
    fn a_plugin_reads_its_stdin_and_prints_on_both_streams() {
        let output = sh("cat; echo oops >&2; exit 3", &[], b"{\"cniVersion\":\"1.0.0\"}");
        assert_eq!(output.stdout, b"{\"cniVersion\":\"1.0.0\"}");
        assert_eq!(output.stderr, b"oops\n");
        assert_eq!(output.status.code(), Some(3));
    }

    #[test]
    fn the_calls_variables_over_this_processs_environment() {
        // PATH is this process's (the test harness has one); CNI_COMMAND is the call's, once.
        let env = [("CNI_COMMAND", "ADD".to_owned()), ("PATH", "/plugins/path".to_owned())];
        let output = sh("/usr/bin/env", &env, b"");
        let text = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.iter().filter(|l| l.starts_with("CNI_COMMAND=")).count(), 1, "{text}");
        assert!(lines.contains(&"CNI_COMMAND=ADD"), "{text}");
        assert!(lines.contains(&"PATH=/plugins/path"), "{text}");
        assert_eq!(lines.iter().filter(|l| l.starts_with("PATH=")).count(), 1, "{text}");
        if let Some(home) = std::env::var_os("HOME") {
            assert!(lines.contains(&format!("HOME={}", home.to_string_lossy()).as_str()), "{text}");
        }
    }

    #[test]
    fn a_nul_byte_is_refused_before_anything_starts() {
        let (stdin, _feed) = std::io::pipe().unwrap();
        let refused =
            start(Path::new("/bin/true"), &[], &[("CNI_ARGS", "a\0b".to_owned())], stdin).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
        assert!(refused.to_string().contains("NUL"), "{refused}");
    }

    #[test]
    fn sigpipe_is_at_its_default_and_a_signal_is_the_status() {
        // A shell cannot undo a signal ignored when it started: with SIGPIPE ignored, this
        // kill would do nothing and the shell would exit 0.
        let output = sh("kill -s PIPE $$", &[], b"");
        assert_eq!(output.status.signal(), Some(Signal::SIGPIPE as i32), "{:?}", output.status);
        let output = sh("kill -s TERM $$", &[], b"");
        assert_eq!(output.status.signal(), Some(Signal::SIGTERM as i32));
    }

    #[test]
    fn output_larger_than_a_pipe_is_read_while_the_plugin_runs() {
        let output = sh("head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2", &[], b"");
        assert_eq!((output.stdout.len(), output.stderr.len()), (1 << 20, 1 << 20));
        assert!(output.status.success());
    }

    #[test]
    fn a_missing_program_is_an_error_not_a_child() {
        let (stdin, _feed) = std::io::pipe().unwrap();
        let missing = start(Path::new("/nonexistent/plugin"), &[], &[], stdin).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{missing}");
    }
}
