//! Network configurations: a single conf or a conflist, kept as JSON so a delegate gets what
//! was written (plus what the runtime adds), not what a struct of ours kept of it.

use serde_json::{Map, Value};

use super::error::{CniError, ErrorCode};
use super::version::CniVersion;

/// A conf (`{"type": ...}`) or a conflist (`{"plugins": [...]}`).
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkConfig {
    /// A single plugin's config.
    Conf(Map<String, Value>),
    /// A list of plugins run in order, results chained.
    List(Map<String, Value>),
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg)
}

impl NetworkConfig {
    /// Parses config bytes; `what` names them in errors (a file, a NAD).
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(ErrorCode::Decode, format!("{what}: not valid JSON")).with_details(e.to_string())
        })?;
        Self::from_value(value, what)
    }

    /// Checks a parsed config.
    pub fn from_value(value: Value, what: &str) -> Result<Self, CniError> {
        let Value::Object(map) = value else {
            return Err(invalid(format!("{what}: a network config must be a JSON object")));
        };
        if let Some(version) = map.get("cniVersion") {
            let text =
                version.as_str().ok_or_else(|| invalid(format!("{what}: cniVersion must be a string")))?;
            text.parse::<CniVersion>()
                .map_err(|e| CniError::new(ErrorCode::IncompatibleVersion, format!("{what}: {e}")))?;
        }
        if let Some(plugins) = map.get("plugins") {
            let list =
                plugins.as_array().ok_or_else(|| invalid(format!("{what}: plugins must be a list")))?;
            if list.is_empty() {
                return Err(invalid(format!("{what}: plugins is empty")));
            }
            for (i, plugin) in list.iter().enumerate() {
                if plugin.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
                    return Err(invalid(format!("{what}: plugins[{i}] has no type")));
                }
            }
            Ok(Self::List(map))
        } else {
            if map.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(invalid(format!("{what}: no type")));
            }
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
        let cases: [(&[u8], u32, &str); 5] = [
            (b"{", 6, "not valid JSON"),
            (b"[]", 7, "JSON object"),
            (br#"{"name":"a"}"#, 7, "no type"),
            (br#"{"cniVersion":"9.9.9","type":"x"}"#, 1, "unsupported CNI version"),
            (br#"{"plugins":[{"name":"n"}]}"#, 7, "plugins[0] has no type"),
        ];
        for (bytes, code, text) in cases {
            let err = NetworkConfig::parse(bytes, "net.conf").unwrap_err();
            assert_eq!(err.code, code, "{err:?}");
            assert!(err.msg.contains(text) && err.msg.starts_with("net.conf"), "{err:?}");
        }
    }
}
