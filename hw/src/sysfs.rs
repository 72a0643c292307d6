//! Root-relative sysfs reading.
//!
//! Every read goes through a [`SysfsRoot`] (default `/sys`), so discovery runs unchanged
//! against the real tree, a fake tree in a test, or the simulator's tree.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::sys::stat::Mode;

use crate::error::SysfsError;

/// Where sysfs is mounted (or faked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsRoot {
    root: PathBuf,
}

impl Default for SysfsRoot {
    fn default() -> Self {
        Self::new(Self::DEFAULT)
    }
}

impl SysfsRoot {
    /// The real sysfs mount point.
    pub const DEFAULT: &'static str = "/sys";

    /// A root at `root`; nothing is read yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Opens a directory below the root, given relative to it (`bus/pci/devices`); `None`
    /// when it does not exist.
    pub fn dir(&self, rel: impl AsRef<Path>) -> Result<Option<SysfsDir>, SysfsError> {
        SysfsDir::open(self.root.join(rel))
    }

    /// Fails with [`SysfsError::Root`] unless the root is an existing directory.
    pub fn check(&self) -> Result<(), SysfsError> {
        match fs::metadata(&self.root) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(SysfsError::Root {
                path: self.root.clone(),
                error: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            }),
            Err(error) => Err(SysfsError::Root { path: self.root.clone(), error }),
        }
    }
}

/// One open sysfs directory (a PCI device, a netdev, a NUMA node) and typed reads of its
/// files.
///
/// Reads go through the directory's file descriptor (`openat`, `readlinkat`), so the kernel
/// resolves one path component per read instead of walking the whole path again, through the
/// `bus/pci/devices` symlink, for every attribute. Discovery reads a dozen files per VF; this
/// halves its time.
#[derive(Debug)]
pub struct SysfsDir {
    path: PathBuf,
    fd: OwnedFd,
}

/// sysfs attributes are at most one page; this covers every file we read in one `read`.
const ATTR_MAX: usize = 4096;

fn not_found(errno: Errno) -> bool {
    errno == Errno::ENOENT
}

impl SysfsDir {
    /// Opens the directory at `path`; `None` when it does not exist.
    pub fn open(path: impl Into<PathBuf>) -> Result<Option<Self>, SysfsError> {
        let path = path.into();
        match fcntl::open(&path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => Ok(Some(Self { path, fd })),
            Err(errno) if not_found(errno) => Ok(None),
            Err(errno) => Err(SysfsError::Io { path, error: errno.into() }),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens subdirectory `name` (or the directory a link `name` points at); `None` when it
    /// does not exist.
    pub fn child(&self, name: &str) -> Result<Option<SysfsDir>, SysfsError> {
        let path = self.path.join(name);
        match fcntl::openat(
            &self.fd,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Self { path, fd })),
            Err(errno) if not_found(errno) => Ok(None),
            Err(errno) => Err(SysfsError::Io { path, error: errno.into() }),
        }
    }

    /// The trimmed content of `name`, `None` when the file does not exist.
    ///
    /// Never blocks: the file is opened non-blocking, so a FIFO (or a device) put where an
    /// attribute should be answers at once, and is refused as not a regular file.
    pub fn read_opt(&self, name: &str) -> Result<Option<String>, SysfsError> {
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = match fcntl::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(errno) if not_found(errno) => return Ok(None),
            Err(errno) => return Err(SysfsError::Io { path: self.path.join(name), error: errno.into() }),
        };
        let mut file = File::from(fd);
        let mut buf = [0u8; ATTR_MAX];
        // One read: sysfs hands out a whole attribute (at most a page) in the first read, and
        // a short read of a regular file in a fake tree is its end as well. Waiting for the
        // 0-byte read that confirms it would cost a syscall per attribute; so would checking
        // every file's type, which is done only when the read gives nothing.
        let len = loop {
            match file.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                Err(error) => return Err(SysfsError::Io { path: self.path.join(name), error }),
            }
        };
        if len == 0 {
            self.regular(name, &file)?;
        }
        match std::str::from_utf8(&buf[..len]) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(_) => Err(SysfsError::Malformed {
                path: self.path.join(name),
                value: String::from_utf8_lossy(&buf[..len]).trim().to_owned(),
                expected: "UTF-8 text",
            }),
        }
    }

    /// Refuses `file` (opened as `name`) unless it is a regular file.
    fn regular(&self, name: &str, file: &File) -> Result<(), SysfsError> {
        let meta = file.metadata().map_err(|error| SysfsError::Io { path: self.path.join(name), error })?;
        if meta.is_file() {
            return Ok(());
        }
        use std::os::unix::fs::FileTypeExt;
        let kind = meta.file_type();
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        Err(SysfsError::Malformed {
            path: self.path.join(name),
            value: what.into(),
            expected: "a regular file",
        })
    }

    /// The trimmed content of `name`, which must exist.
    pub fn read(&self, name: &str) -> Result<String, SysfsError> {
        self.read_opt(name)?.ok_or_else(|| SysfsError::Missing { path: self.path.join(name) })
    }

    /// `name` parsed with `parse`, `None` when the file does not exist. A value `parse` refuses
    /// is [`SysfsError::Malformed`], described by `expected`.
    pub fn parse_opt<T>(
        &self,
        name: &str,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, SysfsError> {
        match self.read_opt(name)? {
            None => Ok(None),
            Some(value) => match parse(&value) {
                Some(parsed) => Ok(Some(parsed)),
                None => Err(SysfsError::Malformed { path: self.path.join(name), value, expected }),
            },
        }
    }

    /// Like [`parse_opt`](Self::parse_opt), for a file that must exist.
    pub fn parse<T>(
        &self,
        name: &str,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, SysfsError> {
        self.parse_opt(name, expected, parse)?
            .ok_or_else(|| SysfsError::Missing { path: self.path.join(name) })
    }

    /// The file name the symlink `name` points at (`driver` -> `i40e`), `None` when there is no
    /// such link.
    pub fn link_target_name(&self, name: &str) -> Result<Option<String>, SysfsError> {
        let target = match fcntl::readlinkat(&self.fd, name) {
            Ok(target) => PathBuf::from(target),
            Err(errno) if not_found(errno) => return Ok(None),
            Err(errno) => return Err(SysfsError::Io { path: self.path.join(name), error: errno.into() }),
        };
        match target.file_name().and_then(|n| n.to_str()) {
            Some(base) => Ok(Some(base.to_owned())),
            None => Err(SysfsError::Malformed {
                path: self.path.join(name),
                value: target.display().to_string(),
                expected: "a link to a named file",
            }),
        }
    }

    /// The names in subdirectory `name` (`"."` for this one), sorted; empty when it does not
    /// exist.
    pub fn list(&self, name: &str) -> Result<Vec<String>, SysfsError> {
        // By path: std's read_dir costs 4 syscalls, a directory stream on our fd (fdopendir)
        // costs 8 with its checks and rewind; one listing per VF makes that count.
        let path = if name == "." { self.path.clone() } else { self.path.join(name) };
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(SysfsError::Io { path, error }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| SysfsError::Io { path: path.clone(), error })?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(raw) => {
                    return Err(SysfsError::Malformed {
                        path,
                        value: raw.to_string_lossy().into_owned(),
                        expected: "UTF-8 file names",
                    });
                }
            }
        }
        names.sort_unstable();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_trimmed_optional_and_required_files() {
        let scratch = plexus_sim::scratch("sysfs-read").unwrap();
        fs::write(scratch.path().join("numa_node"), "1\n").unwrap();
        let dir = SysfsDir::open(scratch.path()).unwrap().unwrap();
        assert_eq!(dir.read("numa_node").unwrap(), "1");
        assert_eq!(dir.read_opt("absent").unwrap(), None);
        let err = dir.read("absent").unwrap_err();
        assert!(matches!(err, SysfsError::Missing { .. }));
        assert!(err.to_string().ends_with("absent: missing"), "{err}");
    }

    #[test]
    fn malformed_value_names_path_value_and_expectation() {
        let scratch = plexus_sim::scratch("sysfs-parse").unwrap();
        fs::write(scratch.path().join("sriov_numvfs"), "lots\n").unwrap();
        let dir = SysfsDir::open(scratch.path()).unwrap().unwrap();
        let err = dir.parse("sriov_numvfs", "a count", |v| v.parse::<u32>().ok()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sriov_numvfs"), "{text}");
        assert!(text.contains("\"lots\""), "{text}");
        assert!(text.contains("a count"), "{text}");
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_without_blocking() {
        let scratch = plexus_sim::scratch("sysfs-fifo").unwrap();
        nix::unistd::mkfifo(&scratch.path().join("vendor"), Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink("/dev/null", scratch.path().join("device")).unwrap();
        std::fs::create_dir(scratch.path().join("class")).unwrap();
        let dir = SysfsDir::open(scratch.path()).unwrap().unwrap();
        for (name, what) in [("vendor", "a FIFO"), ("device", "a device")] {
            let err = dir.read(name).unwrap_err();
            assert!(matches!(&err, SysfsError::Malformed { value, .. } if value == what), "{name}: {err}");
            assert!(err.to_string().contains(name) && err.to_string().contains("a regular file"), "{err}");
        }
        // A directory fails the read itself (EISDIR), naming it.
        let err = dir.read("class").unwrap_err();
        assert!(err.to_string().contains("class"), "{err}");
        // An empty regular file is read as empty.
        fs::write(scratch.path().join("empty"), "").unwrap();
        assert_eq!(dir.read("empty").unwrap(), "");
    }

    #[test]
    fn root_check_refuses_missing_and_file_roots() {
        let scratch = plexus_sim::scratch("sysfs-root").unwrap();
        assert!(SysfsRoot::new(scratch.path()).check().is_ok());
        let missing = SysfsRoot::new(scratch.path().join("nope"));
        assert!(matches!(missing.check(), Err(SysfsError::Root { .. })));
        fs::write(scratch.path().join("file"), "").unwrap();
        assert!(SysfsRoot::new(scratch.path().join("file")).check().is_err());
    }
}
