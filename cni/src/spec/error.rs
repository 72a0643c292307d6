//! The spec's error codes and its JSON error, written once, at the edge (`entry`), from the
//! typed errors inside (`crate::error`); and read back from a plugin binary's stdout.

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

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> Self {
        code as u32
    }
}

/// The spec's error object, as a plugin prints it on stdout when it fails (defined with the
/// wire format to the agent, in `plexus-shim`, which answers some errors itself).
pub use plexus_shim::ErrorReply;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_has_the_spec_fields() {
        let err = ErrorReply { code: 4, msg: "CNI_COMMAND is not set".into(), details: "env".into() };
        let json: serde_json::Value = serde_json::from_str(&err.to_json("1.0.0")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cniVersion": "1.0.0", "code": 4, "msg": "CNI_COMMAND is not set", "details": "env"})
        );
        assert_eq!(err.to_string(), "CNI_COMMAND is not set: env");
        let read: ErrorReply = serde_json::from_str(r#"{"code": 7, "msg": "m"}"#).unwrap();
        assert_eq!((read.code, read.details.as_str()), (7, ""));
    }
}
