//! The CNI specification's types: versions, the environment, configs, results, and the error
//! codes and JSON error object.

pub mod conf;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use conf::{ConfigError, NetworkConfig};
pub use env::{Call, Command, EnvError, Invocation, PodRef};
pub use error::{ErrorCode, ErrorReply};
pub use result::CniResult;
pub use version::CniVersion;
