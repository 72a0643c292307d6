//! A delegate's own log, as the Go plugins write it with cni-log: the `logFile` and `logLevel`
//! of its config (SR-IOV CNI's NADs set them). One line per event, appended:
//! `<time> [<level>] <message> cniName="sriov-cni" containerID="..." netns="..." ifname="..."`.
//!
//! The file comes from a NetworkAttachmentDefinition, which a namespace's user may write: a
//! log line appended as root to any file they name would be a way to corrupt the node. So the
//! file must be under `/var/log` (where the plugins' documentation puts it), is opened without
//! following a link, and must be a regular file; any other is named in a warning and not
//! written.

use std::fmt::Display;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::keys::Keys;
use crate::spec::Invocation;

/// Where a plugin's log file may be.
pub const LOG_DIR: &str = "/var/log";

/// cni-log's levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `panic`.
    Panic,
    /// `error`.
    Error,
    /// `warning`.
    Warning,
    /// `info` (the default).
    Info,
    /// `debug`.
    Debug,
    /// `verbose`.
    Verbose,
}

impl Level {
    /// As cni-log reads it; anything else is the default, info, as SR-IOV CNI has it.
    fn parse(text: &str) -> Self {
        match text.to_ascii_lowercase().as_str() {
            "panic" => Self::Panic,
            "error" => Self::Error,
            "warning" | "warn" => Self::Warning,
            "debug" => Self::Debug,
            "verbose" => Self::Verbose,
            _ => Self::Info,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Panic => "panic",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Verbose => "verbose",
        }
    }
}

/// One call's plugin log; writes nothing without a usable `logFile`.
#[derive(Debug, Clone)]
pub struct PluginLog {
    file: Option<PathBuf>,
    level: Level,
    labels: String,
}

/// Whether `path` is a file under [`LOG_DIR`] with no `..` in it.
fn allowed(path: &Path) -> bool {
    path.strip_prefix(LOG_DIR).is_ok_and(|rest| !rest.as_os_str().is_empty())
        && path.components().all(|c| !matches!(c, Component::ParentDir))
}

impl PluginLog {
    /// The log `config` asks for, of plugin `cni_name` in `invocation`.
    pub fn new(config: &Value, cni_name: &str, invocation: &Invocation) -> Self {
        let empty = serde_json::Map::new();
        let keys = Keys::new(config.as_object().unwrap_or(&empty), "plugin log");
        let file = keys.string("logFile").ok().flatten().filter(|f| !f.is_empty()).map(PathBuf::from);
        let file = file.filter(|f| {
            let ok = allowed(f);
            if !ok {
                tracing::warn!(
                    "{cni_name}: logFile {}: not written (a plugin log must be under {LOG_DIR})",
                    f.display()
                );
            }
            ok
        });
        let level = keys.string("logLevel").ok().flatten().map_or(Level::Info, |l| Level::parse(&l));
        let labels = format!(
            "cniName={cni_name:?} containerID={:?} netns={:?} ifname={:?}",
            invocation.container_id,
            invocation.netns_str(),
            invocation.ifname.as_str()
        );
        Self { file, level, labels }
    }

    /// Appends `message` at `level`, when the config's level lets it through.
    pub fn log(&self, level: Level, message: impl Display) {
        let Some(file) = &self.file else { return };
        if level > self.level {
            return;
        }
        let line = format!("{} [{}] {message} {}\n", rfc3339(SystemTime::now()), level.as_str(), self.labels);
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                    .open(file)
            })
            .and_then(|mut f| {
                if f.metadata()?.is_file() {
                    f.write_all(line.as_bytes())
                } else {
                    Err(std::io::Error::other("not a regular file"))
                }
            });
        if let Err(e) = written {
            tracing::warn!("plugin log {}: {e}", file.display());
        }
    }

    /// At info.
    pub fn info(&self, message: impl Display) {
        self.log(Level::Info, message);
    }

    /// At debug.
    pub fn debug(&self, message: impl Display) {
        self.log(Level::Debug, message);
    }

    /// At error.
    pub fn error(&self, message: impl Display) {
        self.log(Level::Error, message);
    }
}

/// `t` as RFC 3339 in UTC with microseconds, from the days since the epoch (the civil calendar
/// algorithm of Howard Hinnant's `civil_from_days`).
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_764_648_000_123_456);
        assert_eq!(rfc3339(t), "2025-12-02T04:00:00.123456Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn only_files_under_var_log() {
        assert!(allowed(Path::new("/var/log/sriov-cni.log")));
        for bad in ["/etc/shadow", "/var/log/../../etc/shadow", "/var/log", "relative.log", "/var/logs/x"] {
            assert!(!allowed(Path::new(bad)), "{bad}");
        }
    }
}
