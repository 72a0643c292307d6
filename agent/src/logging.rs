//! Logs go to stderr, so stdout carries only a command's output; and to a file when one is
//! given (`--log-dir`, the daemon config's `logFile`).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

/// The environment variable read when `--log-level` is not given.
pub const LOG_ENV: &str = "PLEXUS_LOG";

/// Where and how much to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// The level (see [`level`]); else `$PLEXUS_LOG`, else `info`.
    pub level: Option<String>,
    /// A file to append to.
    pub file: Option<PathBuf>,
    /// False: the file only (Multus's `logToStderr: false`); stderr when there is no file.
    pub no_stderr: bool,
    /// How the file rotates (Multus's `logOptions`).
    pub rotation: plexus_cni::log_file::Rotation,
}

/// A level as the projects Plexus replaces write them: `error`, `warn`, `info`, `debug`,
/// `trace` or `off`; Multus's `panic` (nearly nothing: errors), `verbose` (info) and `debug`;
/// the SR-IOV device plugin's glog verbosity numbers (`--log-level=10`): 0 is info, 1 to 4
/// debug, 5 and more trace.
pub fn level(text: &str) -> anyhow::Result<LevelFilter> {
    let lower = text.trim().to_ascii_lowercase();
    if let Ok(n) = lower.parse::<u32>() {
        return Ok(match n {
            0 => LevelFilter::INFO,
            1..=4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        });
    }
    match lower.as_str() {
        "panic" | "fatal" => Ok(LevelFilter::ERROR),
        "verbose" => Ok(LevelFilter::INFO),
        other => LevelFilter::from_str(other).map_err(|_| {
            anyhow::anyhow!(
                "log level {text:?}: expected error, warn, info, debug, trace, off, Multus's panic or verbose, \
                 or a glog verbosity number"
            )
        }),
    }
}

/// Installs the logger.
pub fn init(settings: &LogSettings) -> anyhow::Result<()> {
    let from_env = std::env::var(LOG_ENV).ok();
    let text = settings.level.as_deref().or(from_env.as_deref()).unwrap_or("info");
    let level = level(text)?;
    let writer = match &settings.file {
        None => BoxMakeWriter::new(std::io::stderr),
        Some(path) => {
            let file = plexus_cni::log_file::RotatingFile::open(path, settings.rotation)
                .with_context(|| format!("log file {}", path.display()))?;
            let file = Arc::new(file);
            if settings.no_stderr {
                BoxMakeWriter::new(file)
            } else {
                BoxMakeWriter::new(std::io::stderr.and(file))
            }
        }
    };
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(level)
        .with_target(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_every_project_are_read() {
        for (text, want) in [
            ("info", LevelFilter::INFO),
            ("Debug", LevelFilter::DEBUG),
            ("verbose", LevelFilter::INFO),
            ("panic", LevelFilter::ERROR),
            ("0", LevelFilter::INFO),
            ("2", LevelFilter::DEBUG),
            ("10", LevelFilter::TRACE),
        ] {
            assert_eq!(level(text).unwrap(), want, "{text}");
        }
        assert!(level("loud").unwrap_err().to_string().contains("\"loud\""));
    }
}
