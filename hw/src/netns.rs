//! Network namespaces: create, open, delete, and run code inside one.
//!
//! Code runs inside a namespace only on a short-lived thread made for it ([`Netns::run`]); the
//! calling thread, which may be a tokio worker, never changes namespace. A socket opened there
//! stays bound to that namespace for its whole life, which is how [`crate::netlink`] talks to
//! a pod's namespace from the agent.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A failed namespace operation, naming the namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("network namespace {path}: {error}")]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// Creating a named namespace failed (it may already exist).
    #[error("creating network namespace {path}: {error}")]
    Create {
        /// The namespace file being created.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// Removing a named namespace failed.
    #[error("deleting network namespace {path}: {error}")]
    Delete {
        /// The namespace file.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// Entering the namespace on the helper thread failed.
    #[error("entering network namespace {path}: {error}")]
    Enter {
        /// The namespace file.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// The helper thread could not be started or panicked.
    #[error("network namespace {path}: helper thread failed")]
    Thread {
        /// The namespace file.
        path: PathBuf,
    },
}

/// An open network namespace (the open file keeps it alive while we hold it).
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Opens the namespace at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`, a CNI_NETNS path).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, NetnsError> {
        let path = path.into();
        match File::open(&path) {
            Ok(file) => Ok(Self { path, file }),
            Err(source) => Err(NetnsError::Open { path, error: source }),
        }
    }

    /// The namespace of this process's main thread (the host namespace of the agent).
    pub fn host() -> Result<Self, NetnsError> {
        Self::open("/proc/self/ns/net")
    }

    /// The namespace of the calling thread (the CNI binary's, or a blocking thread's of the
    /// agent): where "the host" is for an attachment made from here.
    pub fn current() -> Result<Self, NetnsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// Whether `path` is a live network namespace: a path that exists but is no longer a
    /// namespace (a bind mount undone, a process gone) is not one.
    pub fn is_alive(path: &Path) -> bool {
        // NSFS_MAGIC, from linux/magic.h.
        let nsfs = nix::sys::statfs::FsType(0x6e73_6673);
        nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == nsfs)
    }

    /// Creates a new named namespace at `/run/netns/<name>`, as `ip netns add` does, so that
    /// `ip netns exec` and other tools see it.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        let dir = Path::new(NETNS_RUN_DIR);
        let path = dir.join(name);
        let create_err = |source| NetnsError::Create { path: path.clone(), error: source };
        fs::create_dir_all(dir).map_err(create_err)?;
        // The bind mount needs a file to sit on; O_EXCL refuses a name in use.
        OpenOptions::new().write(true).create_new(true).open(&path).map_err(create_err)?;
        let mounted = std::thread::scope(|scope| {
            scope
                .spawn(|| -> io::Result<()> {
                    // unshare() moves only this helper thread into the new namespace; the
                    // bind mount then pins it after the thread exits.
                    nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
                    nix::mount::mount(
                        Some("/proc/thread-self/ns/net"),
                        &path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )?;
                    Ok(())
                })
                .join()
        });
        match mounted {
            Ok(Ok(())) => Self::open(&path),
            Ok(Err(source)) => {
                let _ = fs::remove_file(&path);
                Err(NetnsError::Create { path, error: source })
            }
            Err(_) => {
                let _ = fs::remove_file(&path);
                Err(NetnsError::Thread { path })
            }
        }
    }

    /// Creates a named namespace with a name no other caller in this process gets:
    /// `<prefix>-<pid>-<n>`. For tests and the simulator. The namespaces of this prefix whose
    /// process is gone go first: a run that was killed (a bench stopped with ^C, a test
    /// timed out) never removed its own, and nothing else would (see [`Self::remove_orphans`]).
    pub fn create_unique(prefix: &str) -> Result<Self, NetnsError> {
        Self::remove_orphans(prefix);
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        Self::create(&format!("{prefix}-{}-{n}", std::process::id()))
    }

    /// Removes the namespaces named `<prefix>-<pid>-<n>` (as [`Self::create_unique`] names
    /// them) whose process `<pid>` no longer runs, and says how many went. A pid that runs
    /// again for another program keeps its namespaces: only the dead are judged. (A process
    /// of another PID namespace is not seen here: the simulator and tests run in one.)
    pub fn remove_orphans(prefix: &str) -> usize {
        let Ok(entries) = fs::read_dir(NETNS_RUN_DIR) else { return 0 };
        let orphans: Vec<_> = entries
            .flatten()
            .filter(|entry| {
                let name = entry.file_name();
                let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)?.strip_prefix('-')) else {
                    return false;
                };
                let Some((pid, n)) = rest.split_once('-') else { return false };
                let numbers = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                numbers(pid) && numbers(n) && !Path::new("/proc").join(pid).exists()
            })
            .map(|entry| entry.path())
            .collect();
        orphans.iter().filter(|path| Self::delete_path(path).is_ok()).count()
    }

    /// The open namespace file, for requests that name a namespace by fd (moving a link).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.file.as_fd()
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name under `/run/netns`, for a named namespace.
    pub fn name(&self) -> Option<&str> {
        if self.path.parent() == Some(Path::new(NETNS_RUN_DIR)) {
            self.path.file_name().and_then(|n| n.to_str())
        } else {
            None
        }
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result. The
    /// thread exits afterwards, so no thread is ever left in the wrong namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                        NetnsError::Enter { path: self.path.clone(), error: errno.into() }
                    })?;
                    Ok(f())
                })
                .join()
                .map_err(|_| NetnsError::Thread { path: self.path.clone() })?
        })
    }

    /// Unmounts and removes a named namespace. Links still in it are destroyed by the kernel
    /// once nothing holds the namespace (a physical netdev goes back to the host namespace).
    pub fn delete(self) -> Result<(), NetnsError> {
        let Self { path, file } = self;
        drop(file);
        Self::delete_path(&path)
    }

    /// Unmounts and removes the named namespace file at `path`; a path that is already gone
    /// is not an error.
    pub fn delete_path(path: &Path) -> Result<(), NetnsError> {
        let err = |source| NetnsError::Delete { path: path.to_owned(), error: source };
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(errno) => return Err(err(errno.into())),
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(path: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn create_run_inside_and_delete() {
        let host = inode("/proc/thread-self/ns/net");
        let ns = Netns::create_unique("plexus-hw-test").unwrap();
        let path = ns.path().to_owned();
        assert!(ns.name().unwrap().starts_with("plexus-hw-test-"));
        let inside = ns.run(|| inode("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(inside, host, "helper thread must be in the new namespace");
        assert_eq!(inode("/proc/thread-self/ns/net"), host, "caller must stay where it was");
        // The same namespace, opened again by path, is the same inode.
        let again = Netns::open(&path).unwrap();
        assert_eq!(again.run(|| inode("/proc/thread-self/ns/net")).unwrap(), inside);
        drop(again);
        ns.delete().unwrap();
        assert!(!path.exists());
        Netns::delete_path(&path).unwrap();
    }

    #[test]
    fn a_deleted_namespace_is_not_alive() {
        let ns = Netns::create_unique("plexus-hw-alive").unwrap();
        let path = ns.path().to_owned();
        assert!(Netns::is_alive(&path));
        assert!(Netns::is_alive(Path::new("/proc/self/ns/net")));
        ns.delete().unwrap();
        assert!(!Netns::is_alive(&path));
        assert!(!Netns::is_alive(Path::new("/tmp")), "a directory is not a namespace");
    }

    #[test]
    fn create_refuses_a_name_in_use() {
        let ns = Netns::create_unique("plexus-hw-dup").unwrap();
        let name = ns.name().unwrap().to_owned();
        let err = Netns::create(&name).unwrap_err();
        assert!(err.to_string().contains(&name), "{err}");
        ns.delete().unwrap();
    }

    #[test]
    fn only_namespaces_of_a_dead_process_are_orphans() {
        // Above the kernel's highest pid (2^22): no process has it.
        let dead = Netns::create("plexus-hw-orphan-4194400-0").unwrap();
        let own = Netns::create(&format!("plexus-hw-orphan-{}-900", std::process::id())).unwrap();
        let other = Netns::create("plexus-hw-orphan-x-4194400-1").unwrap();
        let longer = Netns::create("plexus-hw-orphans-4194400-2").unwrap();
        assert_eq!(Netns::remove_orphans("plexus-hw-orphan"), 1);
        assert!(!Netns::is_alive(dead.path()));
        for kept in [&own, &other, &longer] {
            assert!(Netns::is_alive(kept.path()), "{}", kept.path().display());
        }
        for ns in [own, other, longer] {
            ns.delete().unwrap();
        }
    }

    #[test]
    fn open_names_a_missing_path() {
        let err = Netns::open("/run/netns/plexus-does-not-exist").unwrap_err();
        assert!(err.to_string().contains("plexus-does-not-exist"), "{err}");
    }
}
