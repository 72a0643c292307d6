//! JSON objects read as Go reads them: keys matched case-insensitively. Every config reader
//! of the crate (the meta-plugin's, the selection annotation's, the delegates' and the IPAM's)
//! and the agent's (Multus's configs) reads through it, and says what is wrong as a
//! [`ConfigError`] naming the config and the key.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::spec::ConfigError;

/// An object's keys by lower-case name; `what` names the object in errors.
#[derive(Debug)]
pub struct Keys<'a> {
    keys: BTreeMap<String, (String, Value)>,
    what: &'a str,
}

impl<'a> Keys<'a> {
    pub fn new(map: &Map<String, Value>, what: &'a str) -> Self {
        Self {
            keys: map.iter().map(|(k, v)| (k.to_ascii_lowercase(), (k.clone(), v.clone()))).collect(),
            what,
        }
    }

    /// The key as written, and its value.
    pub fn get(&self, key: &str) -> Option<&(String, Value)> {
        self.keys.get(&key.to_ascii_lowercase())
    }

    pub fn wrong(&self, key: &str, want: &str) -> ConfigError {
        ConfigError::invalid(self.what, format!("{key} must be {want}"))
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None | Some((_, Value::Null)) => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s.clone())),
            Some((name, _)) => Err(self.wrong(name, "a string")),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None | Some((_, Value::Null)) => Ok(None),
            Some((_, Value::Bool(b))) => Ok(Some(*b)),
            Some((name, _)) => Err(self.wrong(name, "true or false")),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.get(key) {
            None | Some((_, Value::Null)) => Ok(None),
            Some((name, Value::Array(items))) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| self.wrong(name, "a list of strings")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some((name, _)) => Err(self.wrong(name, "a list of strings")),
        }
    }

    pub fn object(&self, key: &str) -> Result<Map<String, Value>, ConfigError> {
        match self.get(key) {
            None | Some((_, Value::Null)) => Ok(Map::new()),
            Some((_, Value::Object(map))) => Ok(map.clone()),
            Some((name, _)) => Err(self.wrong(name, "an object")),
        }
    }

    /// The raw value, when present and not null.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.get(key).map(|(_, v)| v).filter(|v| !v.is_null())
    }

    /// Keys not in `known` (as written).
    pub fn unknown(&self, known: &[&str]) -> Vec<&str> {
        let known: Vec<String> = known.iter().map(|k| k.to_ascii_lowercase()).collect();
        self.keys.iter().filter(|(k, _)| !known.contains(k)).map(|(_, (name, _))| name.as_str()).collect()
    }

    /// Logs each key not in `known` as ignored, as Go's decoding ignores it; returns them.
    pub fn warn_unknown(&self, known: &[&str]) -> Vec<&str> {
        let unknown = self.unknown(known);
        for key in &unknown {
            tracing::warn!("{}: ignoring the unknown key {key:?}", self.what);
        }
        unknown
    }
}
