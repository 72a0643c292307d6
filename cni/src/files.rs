//! The two file habits of every CNI store here: replace a file atomically (write a temporary
//! file, optionally fsync it, rename it over the old one, so readers see the old content or
//! the new, never half), and hold an exclusive `flock` on a lock file for the length of an
//! operation (released when the guard is dropped, and by the kernel when a process dies).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// A plugin config's `dataDir` (matched case-insensitively, as Go decodes it), else `default`:
/// where a delegate keeps its records.
pub fn data_dir(config: &serde_json::Value, default: &str) -> std::path::PathBuf {
    let key = config.as_object().and_then(|map| map.iter().find(|(k, _)| k.eq_ignore_ascii_case("dataDir")));
    key.and_then(|(_, v)| v.as_str()).unwrap_or(default).into()
}

/// Writes `bytes` to `path` atomically; with `sync`, the data is on disk before the rename.
pub fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// An exclusive lock held on a file until dropped.
#[derive(Debug)]
pub struct Locked {
    _lock: Flock<File>,
}

/// Takes an exclusive lock on `path` (created if missing), waiting for another holder.
pub fn lock(path: &Path) -> io::Result<Locked> {
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| io::Error::from(errno))?;
    Ok(Locked { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = plexus_sim::scratch("files").unwrap();
        let path = dir.path().join("record.json");
        write_atomic(&path, b"one", true).unwrap();
        write_atomic(&path, b"two", false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["record.json"]);
        assert!(write_atomic(&dir.path().join("missing/x"), b"", false).is_err());
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
