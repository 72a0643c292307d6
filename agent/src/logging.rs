//! Logs go to stderr, so stdout carries only a command's output.

use std::str::FromStr;

use anyhow::Context;
use tracing_subscriber::filter::LevelFilter;

/// The environment variable read when `--log-level` is not given.
pub const LOG_ENV: &str = "PLEXUS_LOG";

/// Installs the stderr logger at `level`, else `$PLEXUS_LOG`, else `info`.
pub fn init(level: Option<&str>) -> anyhow::Result<()> {
    let from_env = std::env::var(LOG_ENV).ok();
    let text = level.or(from_env.as_deref()).unwrap_or("info");
    let level = LevelFilter::from_str(text).with_context(|| format!("log level {text:?}"))?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}
