//! A log file that rotates as Multus's `logOptions` ask (lumberjack's `maxSize` in MB,
//! `maxBackups`, `maxAge` in days): before a write would take the file past `maxSize`, it is
//! renamed to `<file>.1` (older ones shifted to `.2`, ...), and backups beyond `maxBackups` or
//! older than `maxAge` are removed. `compress` is named in a warning: backups stay plain.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

/// How a log file rotates; zero is no limit, as in lumberjack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    /// `maxSize`: megabytes before the file rotates.
    pub max_size_mb: u64,
    /// `maxBackups`: rotated files kept.
    pub max_backups: u32,
    /// `maxAge`: days a rotated file is kept.
    pub max_age_days: u32,
}

impl Rotation {
    /// Reads a `logOptions` object; `what` names it in errors.
    pub fn parse(value: &Value, what: &str) -> Result<Self, String> {
        let Some(object) = value.as_object() else {
            return Err(format!("{what}: logOptions must be an object"));
        };
        let number = |key: &str| -> Result<u64, String> {
            match object.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v.as_u64().filter(|n| *n <= 1 << 20).ok_or_else(|| {
                    format!("{what}: logOptions.{key} must be a whole number up to {}", 1 << 20)
                }),
            }
        };
        if object.iter().any(|(k, v)| k.eq_ignore_ascii_case("compress") && v == &Value::Bool(true)) {
            tracing::warn!("{what}: logOptions.compress: rotated logs are kept uncompressed");
        }
        Ok(Self {
            max_size_mb: number("maxSize")?,
            max_backups: u32::try_from(number("maxBackups")?).unwrap_or(u32::MAX),
            max_age_days: u32::try_from(number("maxAge")?).unwrap_or(u32::MAX),
        })
    }
}

/// An append-only log file that rotates by [`Rotation`]; shared by the threads that log.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    /// The open file and its size.
    state: Mutex<(File, u64)>,
}

fn append(path: &Path) -> io::Result<(File, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

impl RotatingFile {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        Ok(Self { path: path.to_owned(), rotation, state: Mutex::new(append(path)?) })
    }

    fn backup(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Renames the file to `.1` (shifting the others) and drops what is beyond the limits.
    fn rotate(&self) -> io::Result<()> {
        let mut count = 0;
        while self.backup(count + 1).exists() && count < 10_000 {
            count += 1;
        }
        for n in (1..=count).rev() {
            std::fs::rename(self.backup(n), self.backup(n + 1))?;
        }
        std::fs::rename(&self.path, self.backup(1))?;
        let max_age = Duration::from_secs(u64::from(self.rotation.max_age_days) * 86_400);
        for n in 1..=count + 1 {
            let path = self.backup(n);
            let too_many = self.rotation.max_backups > 0 && n > self.rotation.max_backups;
            let too_old = self.rotation.max_age_days > 0
                && std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > max_age));
            if too_many || too_old {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }
}

impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let limit = self.rotation.max_size_mb.saturating_mul(1 << 20);
        if limit > 0 && state.1 > 0 && state.1 + buf.len() as u64 > limit {
            // A failed rotation keeps logging to the file as it is.
            if self.rotate().is_ok()
                && let Ok(fresh) = append(&self.path)
            {
                *state = fresh;
            }
        }
        let written = state.0.write(buf)?;
        state.1 += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0.flush()
    }
}

/// A shared [`RotatingFile`] as an owned writer.
#[derive(Debug, Clone)]
pub struct Shared(pub std::sync::Arc<RotatingFile>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rotates_past_max_size_and_keeps_max_backups() {
        let dir = plexus_sim::scratch("logrotate").unwrap();
        let path = dir.path().join("multus.log");
        let rotation =
            Rotation::parse(&json!({"maxSize": 1, "MaxBackups": 2, "compress": true}), "t").unwrap();
        assert_eq!(rotation, Rotation { max_size_mb: 1, max_backups: 2, max_age_days: 0 });
        let file = RotatingFile::open(&path, rotation).unwrap();
        let line = vec![b'x'; 300 * 1024];
        for _ in 0..12 {
            (&file).write_all(&line).unwrap();
        }
        // 3.6 MB in lines of 300 KB: three rotations at most 1 MB each, two backups kept.
        let mut names = plexus_sim::files_in(dir.path()).unwrap();
        names.sort();
        assert_eq!(names, ["multus.log", "multus.log.1", "multus.log.2"]);
        for name in &names {
            assert!(std::fs::metadata(dir.path().join(name)).unwrap().len() <= 1 << 20, "{name}");
        }
        assert!(Rotation::parse(&json!({"maxSize": -1}), "t").unwrap_err().contains("maxSize"));
    }
}
