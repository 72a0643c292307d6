//! The CNI specification's types: versions, errors, results, configs, the environment.

pub mod conf;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use conf::NetworkConfig;
pub use env::{Command, Invocation};
pub use error::{CniError, ErrorCode};
pub use result::CniResult;
pub use version::CniVersion;
