//! The file habits of every CNI store here:
//! - write a file atomically ([`write_atomic`], [`replace_atomic`]): readers see the old
//!   content (or none) or the new, never half;
//! - create a file whole or not at all ([`create_whole`]), for a reservation;
//! - leave nothing when killed: the data is written to an unnamed file (`O_TMPFILE`) that gets
//!   its name whole (a new file) or a temporary name for the instant before its rename (a
//!   replacement), and a temporary name carries the writer's pid, so [`sweep`] (DEL, GC and the
//!   agent's start) removes what a dead writer left;
//! - hold an exclusive `flock` for the length of an operation ([`lock`]; released when the guard
//!   is dropped, and by the kernel when a process dies), and one per container ([`lock_entry`])
//!   whose file can be removed with the last operation.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg, OFlag};

/// A plugin config's `dataDir` (matched case-insensitively, as Go decodes it), else `default`:
/// where a delegate keeps its records.
pub fn data_dir(config: &serde_json::Value, default: &str) -> std::path::PathBuf {
    let key = config.as_object().and_then(|map| map.iter().find(|(k, _)| k.eq_ignore_ascii_case("dataDir")));
    key.and_then(|(_, v)| v.as_str()).unwrap_or(default).into()
}

/// How a temporary name ends.
const TEMP_SUFFIX: &str = ".tmp";

/// A temporary name for `path`, unique to this process and call: `.<name>.<pid>.<n>.tmp`, in
/// the same directory (a rename does not cross file systems).
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // getpid is a system call each time (glibc caches it no more), for a value that never
    // changes in this process.
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}{TEMP_SUFFIX}", PID.get_or_init(std::process::id)))
}

/// The pid in a temporary name [`temp_path`] made; `None` for any other name.
fn temp_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    let mut parts = rest.rsplitn(3, '.');
    let (n, pid, target) = (parts.next()?, parts.next()?, parts.next()?);
    (!target.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty()).then_some(())?;
    pid.parse().ok()
}

/// Whether process `pid` is alive (in this pid namespace: the agent runs in the node's).
fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// A file holding `bytes` that has no name yet, or (on a file system without `O_TMPFILE`) only
/// a temporary one.
enum Written {
    /// Unnamed: a kill leaves nothing.
    Unnamed(File),
    /// At this temporary name.
    Named(PathBuf),
}

/// Writes `bytes` (with `sync`, to disk) to an unnamed file beside `path` where the file
/// system can (`O_TMPFILE`), else to a temporary name.
fn written(path: &Path, bytes: &[u8], sync: bool) -> io::Result<Written> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let fill = |file: &mut File| -> io::Result<()> {
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        Ok(())
    };
    let unnamed = OpenOptions::new().write(true).mode(0o666).custom_flags(OFlag::O_TMPFILE.bits()).open(dir);
    match unnamed {
        Ok(mut file) => fill(&mut file).map(|()| Written::Unnamed(file)),
        Err(e) if e.raw_os_error().is_some_and(|n| NO_TMPFILE.iter().any(|errno| *errno as i32 == n)) => {
            let tmp = temp_path(path);
            let mut file = OpenOptions::new().write(true).create_new(true).mode(0o666).open(&tmp)?;
            match fill(&mut file) {
                Ok(()) => Ok(Written::Named(tmp)),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        }
        Err(e) => Err(e),
    }
}

/// What `open(O_TMPFILE)` fails with where a file system (or an old kernel) has none.
const NO_TMPFILE: [nix::errno::Errno; 3] =
    [nix::errno::Errno::EOPNOTSUPP, nix::errno::Errno::EISDIR, nix::errno::Errno::EINVAL];

/// Links the unnamed `file` at `to`; fails when `to` exists.
fn give_name(file: &File, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // linkat of /proc/self/fd/N with AT_SYMLINK_FOLLOW needs no capability (AT_EMPTY_PATH
    // would need CAP_DAC_READ_SEARCH).
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        proc_path.as_str(),
        nix::fcntl::AT_FDCWD,
        to,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// Writes `bytes` to `path` atomically; with `sync`, the data is on disk before its name is.
/// Most files written so are new (a record, a cache entry at ADD): an unnamed file is linked
/// at `path` at once, and only a file that exists is replaced through a temporary name. Use
/// [`replace_atomic`] for a file that is known to exist.
pub fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    put_atomic(path, bytes, sync, true)
}

/// [`write_atomic`] for a file that is known to exist (an update): no attempt to link first,
/// which would only fail.
pub fn replace_atomic(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    put_atomic(path, bytes, sync, false)
}

fn put_atomic(path: &Path, bytes: &[u8], sync: bool, link_first: bool) -> io::Result<()> {
    // A link is atomic, and exclusive: it names a new file in one step (a rename would need a
    // temporary name first, and costs more than the link on this project's VM). A rename
    // replaces: an existing file gets its successor through a temporary name, for the instant
    // before the rename.
    let tmp = match written(path, bytes, sync)? {
        Written::Unnamed(file) => {
            match link_first.then(|| give_name(&file, path)) {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            let tmp = temp_path(path);
            give_name(&file, &tmp)?;
            tmp
        }
        Written::Named(tmp) => tmp,
    };
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Creates `path` with `bytes`, whole, unless it exists (`Ok(false)`): a reader never sees it
/// empty or half-written, and a kill never leaves it so.
pub fn create_whole(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    // A link is exclusive: the unnamed file is linked at its name directly.
    let linked = match written(path, bytes, false)? {
        Written::Unnamed(file) => give_name(&file, path),
        Written::Named(tmp) => {
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            linked
        }
    };
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// How old a temporary name without a pid (written by an earlier Plexus) must be before
/// [`sweep`] takes it for a leftover.
const LEGACY_TEMP_AGE: Duration = Duration::from_secs(60);

/// Removes the temporary files in `dir` that a dead process left; returns their names. A
/// missing directory has none.
pub fn sweep(dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(name) = entry.file_name().into_string() else { continue };
        if !name.starts_with('.') || !name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let left = match temp_writer(&name) {
            Some(pid) => !alive(pid),
            // `.<name>.tmp`, as earlier versions wrote: a leftover once it is old.
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > LEGACY_TEMP_AGE)),
        };
        if left && entry.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(entry.path()).is_ok()
        {
            tracing::info!("removed {}, left by a process that died writing it", entry.path().display());
            removed.push(name);
        }
    }
    removed
}

/// An exclusive lock held on a file until dropped.
#[derive(Debug)]
pub struct Locked {
    _lock: Flock<File>,
    path: PathBuf,
}

impl Locked {
    /// Removes the lock file while still holding it: whoever waits on it finds it gone and
    /// takes a new one (see [`lock_entry`]).
    pub fn remove(self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Takes an exclusive lock on `path` (created if missing), waiting for another holder.
pub fn lock(path: &Path) -> io::Result<Locked> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io::Error::from(errno))?;
    Ok(Locked { _lock: lock, path: path.to_owned() })
}

/// Takes the lock of one entry (a container), at `path`, whose holder may remove the file
/// ([`Locked::remove`]); `wait: false` returns `Ok(None)` at once when another holds it.
/// A lock taken on a file that was removed meanwhile guards nothing, so it is taken again.
pub fn lock_entry(path: &Path, wait: bool) -> io::Result<Option<Locked>> {
    let arg = if wait { FlockArg::LockExclusive } else { FlockArg::LockExclusiveNonblock };
    let open = || OpenOptions::new().create(true).truncate(false).write(true).open(path);
    loop {
        // The directory is made the first time only.
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.parent().is_some() => {
                std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
                open()?
            }
            opened => opened?,
        };
        let lock = match Flock::lock(file, arg) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => return Ok(None),
            Err((_, errno)) => return Err(io::Error::from(errno)),
        };
        let held = lock.metadata()?;
        match std::fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                return Ok(Some(Locked { _lock: lock, path: path.to_owned() }));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = plexus_sim::scratch("files").unwrap();
        let path = dir.path().join("record.json");
        // New (linked at its name), then replaced (through a temporary name).
        write_atomic(&path, b"one", true).unwrap();
        write_atomic(&path, b"two", false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        replace_atomic(&path, b"three", false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        // An update whose file went meanwhile makes it again.
        let other = dir.path().join("other.json");
        replace_atomic(&other, b"four", true).unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"four");
        std::fs::remove_file(&other).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["record.json"]);
        assert!(write_atomic(&dir.path().join("missing/x"), b"", false).is_err());
        assert!(replace_atomic(&dir.path().join("missing/x"), b"", false).is_err());
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_whole_file_is_created_once() {
        let dir = plexus_sim::scratch("files-whole").unwrap();
        let path = dir.path().join("10.0.0.2");
        assert!(create_whole(&path, b"cid\neth0").unwrap());
        assert!(!create_whole(&path, b"other\neth0").unwrap(), "taken");
        assert_eq!(std::fs::read(&path).unwrap(), b"cid\neth0");
        assert_eq!(names(dir.path()), ["10.0.0.2"]);
    }

    #[test]
    fn sweep_removes_only_what_a_dead_writer_left() {
        let dir = plexus_sim::scratch("files-sweep").unwrap();
        // A pid no process has: beyond the kernel's pid_max limit (2^22).
        let dead = 1 << 23;
        let ours = std::process::id();
        for name in [
            format!(".cid-1.{dead}.0.tmp"),
            format!(".0000:20:02.1.json.{dead}.7.tmp"),
            format!(".cid-2.{ours}.0.tmp"),
            "cid-3".to_owned(),
            ".locks.tmp".to_owned(),
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let mut removed = sweep(dir.path());
        removed.sort();
        assert_eq!(removed, [format!(".0000:20:02.1.json.{dead}.7.tmp"), format!(".cid-1.{dead}.0.tmp")]);
        assert_eq!(
            names(dir.path()),
            [format!(".cid-2.{ours}.0.tmp"), ".locks.tmp".to_owned(), "cid-3".to_owned()]
        );
        assert!(sweep(&dir.path().join("missing")).is_empty());
        assert_eq!(
            temp_writer(&temp_path(Path::new("/x/.hidden.json")).file_name().unwrap().to_string_lossy()),
            Some(ours)
        );
    }

    #[test]
    fn an_entry_lock_removed_by_its_holder_is_taken_anew_by_a_waiter() {
        let dir = plexus_sim::scratch("files-entry").unwrap();
        let path = dir.path().join(".locks/cid");
        let held = lock_entry(&path, true).unwrap().unwrap();
        assert!(lock_entry(&path, false).unwrap().is_none(), "held");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let second = lock_entry(&path, true).unwrap().unwrap();
                tx.send(()).unwrap();
                // The waiter holds the file now at the path, not the removed one.
                assert!(lock_entry(&path, false).unwrap().is_none());
                second.remove().unwrap();
            })
        };
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err(), "must wait");
        held.remove().unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_lock_waits_for_its_holder() {
        let dir = plexus_sim::scratch("files-lock").unwrap();
        let path = dir.path().join("lock");
        let held = lock(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let _second = lock(&path).unwrap();
                tx.send(()).unwrap();
            })
        };
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err(), "must wait");
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
    }
}
