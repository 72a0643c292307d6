//! Network configurations: a single conf or a conflist, kept as JSON so a delegate gets what
//! was written (plus what the runtime adds), not what a struct of ours kept of it; and
//! [`ConfigError`], what every reader of a config, an annotation or a result says when it
//! cannot use one.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::error::ErrorCode;
use super::version::{CniVersion, UnsupportedVersion};

/// A config (or annotation, or plugin result) that cannot be used; `what` names it (a file, a
/// NAD, `sriov config`, an annotation).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON.
    #[error("{what}: not valid JSON: {error}")]
    Decode {
        /// What was read.
        what: String,
        /// The parser's complaint.
        error: serde_json::Error,
    },
    /// A `cniVersion` Plexus does not speak.
    #[error("{what}: {error}")]
    Version {
        /// What said it.
        what: String,
        /// The version.
        error: UnsupportedVersion,
    },
    /// A key is missing or has a value that cannot be used.
    #[error("{what}: {message}")]
    Invalid {
        /// The config.
        what: String,
        /// The key and what is wrong with it.
        message: String,
    },
    /// The config file could not be read.
    #[error("reading {path}: {error}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        error: std::io::Error,
    },
}

impl ConfigError {
    /// An [`Invalid`](Self::Invalid) error.
    pub fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { what: what.into(), message: message.into() }
    }
}

impl crate::error::Failure for ConfigError {
    fn code(&self) -> u32 {
        let code: ErrorCode = match self {
            Self::Decode { .. } => ErrorCode::Decode,
            Self::Version { .. } => ErrorCode::IncompatibleVersion,
            Self::Invalid { .. } => ErrorCode::InvalidNetworkConfig,
            Self::Unreadable { .. } => ErrorCode::Io,
        };
        code.into()
    }
}

/// A conf (`{"type": ...}`) or a conflist (`{"plugins": [...]}`).
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkConfig {
    /// A single plugin's config.
    Conf(Map<String, Value>),
    /// A list of plugins run in order, results chained.
    List(Map<String, Value>),
}

/// Why a `type` value names no plugin, when it does not.
fn plugin_type(value: Option<&Value>) -> Result<(), String> {
    match value {
        None => Err("missing".into()),
        Some(Value::String(name)) if !name.is_empty() => Ok(()),
        Some(Value::String(_)) => Err("empty".into()),
        Some(other) => Err(format!("{other} is not a plugin name (a string)")),
    }
}

impl NetworkConfig {
    /// Parses config bytes; `what` names them in errors (a file, a NAD).
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|error| ConfigError::Decode { what: what.to_owned(), error })?;
        Self::from_value(value, what)
    }

    /// Checks a parsed config.
    pub fn from_value(value: Value, what: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::invalid(what, message);
        let Value::Object(map) = value else {
            return Err(invalid("a network config must be a JSON object".into()));
        };
        if let Some(version) = map.get("cniVersion") {
            let text = version.as_str().ok_or_else(|| invalid("cniVersion must be a string".into()))?;
            text.parse::<CniVersion>()
                .map_err(|error| ConfigError::Version { what: what.to_owned(), error })?;
        }
        if let Some(plugins) = map.get("plugins") {
            let list = plugins.as_array().ok_or_else(|| invalid("plugins must be a list".into()))?;
            if list.is_empty() {
                return Err(invalid("plugins is empty".into()));
            }
            for (i, plugin) in list.iter().enumerate() {
                plugin_type(plugin.get("type"))
                    .map_err(|why| invalid(format!("plugins[{i}].type: {why}")))?;
            }
            Ok(Self::List(map))
        } else {
            plugin_type(map.get("type")).map_err(|why| invalid(format!("type: {why}")))?;
            Ok(Self::Conf(map))
        }
    }

    fn map(&self) -> &Map<String, Value> {
        match self {
            Self::Conf(map) | Self::List(map) => map,
        }
    }

    /// `name`.
    pub fn name(&self) -> Option<&str> {
        self.map().get("name").and_then(Value::as_str)
    }

    /// `cniVersion`, parsed (checked at parse time).
    pub fn cni_version(&self) -> Option<CniVersion> {
        self.map().get("cniVersion").and_then(Value::as_str).and_then(|v| v.parse().ok())
    }

    /// The plugin configs in the order they run, each with what the list gives it (`name`,
    /// `cniVersion`).
    pub fn plugins(&self) -> Vec<Map<String, Value>> {
        match self {
            Self::Conf(map) => vec![map.clone()],
            Self::List(map) => map
                .get("plugins")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .map(|plugin| {
                    let mut plugin = plugin.clone();
                    for key in ["name", "cniVersion"] {
                        if let Some(value) = map.get(key) {
                            plugin.insert(key.into(), value.clone());
                        }
                    }
                    plugin
                })
                .collect(),
        }
    }

    /// `disableCheck` of a conflist.
    pub fn check_disabled(&self) -> bool {
        self.map().get("disableCheck").and_then(Value::as_bool).unwrap_or(false)
    }

    /// The config as JSON.
    pub fn to_value(&self) -> Value {
        Value::Object(self.map().clone())
    }

    /// Sets `key` in the conf, or in every plugin of the list (as Multus injects `deviceID`).
    pub fn set_in_plugins(&mut self, key: &str, value: Value) {
        match self {
            Self::Conf(map) => {
                map.insert(key.into(), value);
            }
            Self::List(map) => {
                for plugin in map.get_mut("plugins").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(plugin) = plugin.as_object_mut() {
                        plugin.insert(key.into(), value.clone());
                    }
                }
            }
        }
    }
}

/// The capabilities a plugin config asks for (`"capabilities": {"portMappings": true}`).
pub fn capabilities(plugin: &Map<String, Value>) -> Vec<String> {
    plugin
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|caps| {
            caps.iter().filter(|(_, on)| on.as_bool() == Some(true)).map(|(k, _)| k.clone()).collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conf_and_list() {
        let conf =
            NetworkConfig::parse(br#"{"cniVersion":"1.0.0","name":"a","type":"bridge"}"#, "x").unwrap();
        assert!(matches!(conf, NetworkConfig::Conf(_)));
        assert_eq!(conf.name(), Some("a"));
        let list = NetworkConfig::parse(
            br#"{"cniVersion":"0.4.0","name":"l","disableCheck":true,"plugins":[{"type":"ptp"},{"type":"tuning","capabilities":{"mac":true,"ips":false}}]}"#,
            "x",
        )
        .unwrap();
        let plugins = list.plugins();
        assert_eq!(plugins[1]["name"], "l");
        assert_eq!(plugins[1]["cniVersion"], "0.4.0");
        assert_eq!(capabilities(&plugins[1]), ["mac"]);
        assert!(list.check_disabled());
        let mut list = list;
        list.set_in_plugins("deviceID", json!("0000:3b:02.0"));
        assert!(list.plugins().iter().all(|p| p["deviceID"] == "0000:3b:02.0"));
    }

    #[test]
    fn bad_configs_get_the_spec_codes() {
        let cases: [(&[u8], u32, &str); 7] = [
            (b"{", 6, "not valid JSON"),
            (b"[]", 7, "JSON object"),
            (br#"{"name":"a"}"#, 7, "type: missing"),
            (br#"{"name":"a","type":5}"#, 7, "type: 5 is not a plugin name"),
            (br#"{"cniVersion":"9.9.9","type":"x"}"#, 1, "unsupported CNI version"),
            (br#"{"cniVersion":1,"type":"x"}"#, 7, "cniVersion must be a string"),
            (br#"{"plugins":[{"name":"n"}]}"#, 7, "plugins[0].type: missing"),
        ];
        for (bytes, code, text) in cases {
            let err = NetworkConfig::parse(bytes, "net.conf").unwrap_err();
            assert_eq!(crate::error::Failure::code(&err), code, "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(text) && msg.starts_with("net.conf"), "{err:?}");
        }
    }
}
