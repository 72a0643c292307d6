//! Multus's auxiliary CNI chain (`auxiliaryCNIChainName`): the confs in a subdirectory of that
//! name, next to the cluster network's config, run for every pod as one more chained
//! attachment on the cluster network's interface. A vendor adds plugins (tuning, a mesh's CNI)
//! to every pod there without touching the primary's file, which an operator may own. As in
//! Multus, the chain starts with `passthru`, which gives the plugins after it an empty
//! `prevResult`: the chain is isolated from the cluster network's result, and its own result
//! is not the pod's.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::config::MetaConfig;
use super::resolve::{Found, conf_files, read};
use crate::delegate::PASSTHRU;
use crate::spec::{CniVersion, ConfigError, NetworkConfig};

/// Where the chain's confs are: `<name>/` in the directory of the cluster network's file when
/// `clusterNetwork` is a path (as Multus derives it), else in `confDir`.
fn directory(config: &MetaConfig, name: &str) -> PathBuf {
    let base = match config.cluster_network.as_deref().map(Path::new) {
        Some(path) if path.is_absolute() && path.is_dir() => path.to_path_buf(),
        Some(path) if path.is_absolute() => path.parent().unwrap_or(path).to_path_buf(),
        _ => config.conf_dir.clone(),
    };
    base.join(name)
}

/// The chain as one conflist (`passthru`, then every plugin of every conf in the directory, in
/// file order), `None` without a chain name or without confs.
pub fn chain(config: &MetaConfig) -> Result<Option<Found>, ConfigError> {
    let Some(name) = &config.auxiliary_chain else { return Ok(None) };
    let dir = directory(config, name);
    let mut plugins = vec![json!({ "type": PASSTHRU })];
    let mut version = None;
    for path in conf_files(&dir) {
        let found = read(&path)?;
        version = version.or_else(|| found.config.cni_version());
        plugins.extend(found.config.plugins().into_iter().map(Value::Object));
    }
    if plugins.len() == 1 {
        tracing::debug!("auxiliary CNI chain {name}: no conf in {}", dir.display());
        return Ok(None);
    }
    // A chain needs prevResult: CNI 0.3.0 or later.
    let version = version.filter(|v| !v.legacy_result()).unwrap_or(CniVersion::V1_0_0);
    let mut list = Map::new();
    list.insert("cniVersion".into(), json!(version.as_str()));
    list.insert("name".into(), json!(name));
    list.insert("plugins".into(), Value::Array(plugins));
    let text = Value::Object(list.clone()).to_string();
    let config = NetworkConfig::from_value(Value::Object(list), &format!("auxiliary CNI chain {name}"))?;
    Ok(Some(Found { config, text }))
}
