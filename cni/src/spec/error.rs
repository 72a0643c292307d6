//! CNI errors: the spec's codes and its JSON error output.

use serde::{Deserialize, Serialize};

/// The spec's well-known error codes (1-99 are reserved for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 2: unsupported field in the network configuration.
    UnsupportedField = 2,
    /// 3: container unknown or does not exist.
    UnknownContainer = 3,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment = 4,
    /// 5: I/O failure.
    Io = 5,
    /// 6: failed to decode content.
    Decode = 6,
    /// 7: invalid network config.
    InvalidNetworkConfig = 7,
    /// 11: try again later.
    TryAgainLater = 11,
    /// 50: the plugin is not available (STATUS).
    PluginNotAvailable = 50,
    /// 51: the plugin is not available, existing containers may have limited connectivity.
    PluginNotAvailableLimited = 51,
    /// 100: a failure of the plugin itself (codes over 99 are the plugin's own).
    Plugin = 100,
}

/// A CNI error, printed on stdout as the spec's JSON when a plugin fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    /// The code.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// Longer details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self { code: code as u32, msg: msg.into(), details: String::new() }
    }

    /// The same error with details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error with `context` before its message (`network ns/x: ...`).
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.msg = format!("{context}: {}", self.msg);
        self
    }

    /// The spec's JSON for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        let mut value = serde_json::json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            value["details"] = serde_json::Value::String(self.details.clone());
        }
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_has_the_spec_fields() {
        let err = CniError::new(ErrorCode::InvalidEnvironment, "CNI_COMMAND is not set").with_details("env");
        let json: serde_json::Value = serde_json::from_str(&err.to_json("1.0.0")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cniVersion": "1.0.0", "code": 4, "msg": "CNI_COMMAND is not set", "details": "env"})
        );
        assert_eq!(err.to_string(), "CNI_COMMAND is not set: env");
        assert_eq!(err.clone().context("network a").msg, "network a: CNI_COMMAND is not set");
    }
}
