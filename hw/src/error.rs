//! Errors of sysfs reading. Every variant names the path it is about.

use std::io;
use std::path::PathBuf;

/// A sysfs read that failed, or a value that did not parse.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// The sysfs root (or a directory every discovery needs under it) does not exist or cannot
    /// be listed.
    #[error("sysfs root {path}: {error}")]
    Root {
        /// The directory that could not be opened.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// A file or link that must be there is missing.
    #[error("{path}: missing")]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// The file exists but reading it failed.
    #[error("{path}: {error}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// The file was read but its content is not what the kernel writes there.
    #[error("{path}: malformed value {value:?} (expected {expected})")]
    Malformed {
        /// The file read.
        path: PathBuf,
        /// Its content, trimmed.
        value: String,
        /// What a well-formed value looks like.
        expected: &'static str,
    },
}

impl SysfsError {
    /// The path the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Root { path, .. }
            | Self::Missing { path }
            | Self::Io { path, .. }
            | Self::Malformed { path, .. } => path,
        }
    }
}
