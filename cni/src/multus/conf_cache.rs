//! Conf files and confDir listings kept while they stay as they were. The agent resolves the
//! cluster network from confDir for every ADD that has no NAD for it: listing the directory,
//! reading the conf and parsing it was a tenth of the agent's own part of a forwarded ADD.
//! Now a `statx` of the directory and one of the file tell whether what was read last time
//! still holds.
//!
//! A file is known by its device, inode, size and change time; a directory by the same (its
//! change time moves when an entry is added, removed or renamed). Kept only once the change
//! time is a second old, as Git's index does with racily clean files: the kernel stamps
//! changes from a clock that moves in ticks, so a file written again within the tick of the
//! last read could keep its stamp, but not one written a second later. A listing with a
//! symbolic link in it is not kept: where the link leads can change without the directory.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many files and directories are kept; when full, all are let go (confDir holds a few).
const KEPT: usize = 64;

/// How old a change must be for what was read after it to be kept.
const SETTLED: Duration = Duration::from_secs(1);

/// What identifies a file's content, for as long as its change time is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Stamp {
    /// `path`'s stamp, following links; `None` when it cannot be read (the caller's own read
    /// then says why).
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }

    /// Whether the last change is old enough that a later one gets another stamp.
    fn settled(&self) -> bool {
        let (secs, nanos) = self.ctime;
        let Ok(secs) = u64::try_from(secs) else { return false };
        let changed = UNIX_EPOCH + Duration::new(secs, u32::try_from(nanos).unwrap_or(0));
        SystemTime::now().duration_since(changed).is_ok_and(|age| age >= SETTLED)
    }
}

/// Values read from files or directories, by path, each kept with the stamp its path had
/// before it was read.
pub(crate) struct Kept<T> {
    by_path: LazyLock<Mutex<HashMap<PathBuf, (Stamp, T)>>>,
}

impl<T: Clone> Kept<T> {
    pub(crate) const fn new() -> Self {
        Self { by_path: LazyLock::new(Mutex::default) }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<PathBuf, (Stamp, T)>> {
        // Nothing panics while holding it, and the map is whole between its calls.
        self.by_path.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `read` makes of `path`, or what it made last time when the path is as it was
    /// then. `read` says whether its value may be kept (a listing with a link may not);
    /// errors never are.
    pub(crate) fn get<E>(
        &self,
        path: &Path,
        read: impl FnOnce(&Path) -> Result<(T, bool), E>,
    ) -> Result<T, E> {
        let Some(stamp) = Stamp::of(path) else { return read(path).map(|(value, _)| value) };
        if let Some((kept_stamp, value)) = self.map().get(path)
            && *kept_stamp == stamp
        {
            return Ok(value.clone());
        }
        // Stamped before the read: a change during it leaves a stamp that differs next time.
        let (value, keepable) = read(path)?;
        if keepable && stamp.settled() {
            let mut map = self.map();
            if map.len() >= KEPT && !map.contains_key(path) {
                map.clear();
            }
            map.insert(path.to_owned(), (stamp, value.clone()));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::cell::Cell;

    /// Waits until `path`'s change time is settled (only the kernel sets it: it cannot be put
    /// back).
    fn settle(path: &Path) {
        let changed = Stamp::of(path).unwrap().ctime;
        let at = UNIX_EPOCH + Duration::new(changed.0 as u64, changed.1 as u32) + SETTLED;
        if let Ok(wait) = at.duration_since(SystemTime::now()) {
            std::thread::sleep(wait + Duration::from_millis(20));
        }
    }

    #[test]
    fn a_file_is_read_again_only_when_it_changed() {
        let kept = Kept::new();
        let dir = plexus_sim::scratch("conf-cache-file").unwrap();
        let path = dir.path().join("10-a.conf");
        let reads = Cell::new(0);
        let read = |path: &Path| {
            kept.get(path, |p| {
                reads.set(reads.get() + 1);
                std::fs::read_to_string(p).map(|text| {
                    let keepable = !text.contains("error");
                    (text, keepable)
                })
            })
        };
        std::fs::write(&path, "net-a").unwrap();

        // Fresh: read every time (a write within the kernel's tick could keep the stamp).
        assert_eq!(read(&path).unwrap(), "net-a");
        assert_eq!(read(&path).unwrap(), "net-a");
        assert_eq!(reads.get(), 2);
        settle(&path);
        assert_eq!(read(&path).unwrap(), "net-a");
        assert_eq!(read(&path).unwrap(), "net-a");
        assert_eq!(reads.get(), 3, "kept once settled");

        // Rewritten in place, same size: the change time tells.
        std::fs::write(&path, "net-b").unwrap();
        assert_eq!(read(&path).unwrap(), "net-b");
        // Replaced by a rename: another inode, whose change time is older than the read.
        settle(&path);
        assert_eq!(read(&path).unwrap(), "net-b");
        let next = dir.path().join("next");
        std::fs::write(&next, "net-c").unwrap();
        settle(&next);
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(read(&path).unwrap(), "net-c");

        // What may not be kept is read every time; a file gone is the read's error.
        std::fs::write(&path, "error").unwrap();
        settle(&path);
        let before = reads.get();
        assert_eq!(read(&path).unwrap(), "error");
        assert_eq!(read(&path).unwrap(), "error");
        assert_eq!(reads.get(), before + 2);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read(&path).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_listing_is_made_again_when_an_entry_comes_goes_or_moves() {
        let kept = Kept::new();
        let dir = plexus_sim::scratch("conf-cache-dir").unwrap();
        let lists = Cell::new(0);
        let list = |dir: &Path| {
            kept.get(dir, |dir| {
                lists.set(lists.get() + 1);
                let mut files: Vec<_> = std::fs::read_dir(dir)?.map(|e| e.unwrap().path()).collect();
                files.sort();
                Ok::<_, std::io::Error>((files, true))
            })
            .unwrap()
        };
        std::fs::write(dir.path().join("10-a.conf"), "{}").unwrap();
        settle(dir.path());
        assert_eq!(list(dir.path()).len(), 1);
        assert_eq!(list(dir.path()).len(), 1);
        assert_eq!(lists.get(), 1);
        std::fs::write(dir.path().join("20-b.conf"), "{}").unwrap();
        assert_eq!(list(dir.path()).len(), 2);
        settle(dir.path());
        std::fs::rename(dir.path().join("20-b.conf"), dir.path().join("05-b.conf")).unwrap();
        let names = list(dir.path());
        assert!(names[0].ends_with("05-b.conf"), "{names:?}");
        std::fs::remove_file(dir.path().join("05-b.conf")).unwrap();
        assert_eq!(list(dir.path()).len(), 1);
    }

    #[test]
    fn no_more_than_kept_paths_are_held() {
        let kept = Kept::new();
        let dir = plexus_sim::scratch("conf-cache-bound").unwrap();
        for i in 0..=KEPT {
            std::fs::write(dir.path().join(i.to_string()), "x").unwrap();
        }
        settle(&dir.path().join(KEPT.to_string()));
        for i in 0..=KEPT {
            kept.get(&dir.path().join(i.to_string()), |p| std::fs::read(p).map(|v| (v, true))).unwrap();
        }
        assert_eq!(kept.map().len(), 1, "let go of when full");
    }
}
