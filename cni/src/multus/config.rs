//! The meta-plugin's own config: a Multus config whose `type` is `plexus`.
//!
//! Multus is Go, and Go's JSON decoding matches keys case-insensitively, so configs in the wild
//! spell `LogFile` or `logfile`; keys are matched the same way here. Keys Plexus does not know
//! are ignored, as Multus ignores them; a known key with a wrong type is an error naming it.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::keys::Keys;
use crate::paths;
use crate::spec::{CniVersion, ConfigError, NetworkConfig};

/// The parsed meta-plugin config.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaConfig {
    /// `name`.
    pub name: String,
    /// `cniVersion`: the version the caller speaks, and of the result it gets.
    pub cni_version: CniVersion,
    /// `delegates`: the static networks; the first (or the one with `"masterplugin": true`)
    /// is the cluster network unless `clusterNetwork` is set.
    pub delegates: Vec<NetworkConfig>,
    /// Index of the cluster network in `delegates`, for the oldest format.
    pub master_delegate: usize,
    /// `clusterNetwork`.
    pub cluster_network: Option<String>,
    /// `defaultNetworks`.
    pub default_networks: Vec<String>,
    /// `kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `confDir`.
    pub conf_dir: PathBuf,
    /// `cniDir`: the DEL cache.
    pub cni_dir: PathBuf,
    /// `binDir`.
    pub bin_dir: PathBuf,
    /// `namespaceIsolation`.
    pub namespace_isolation: bool,
    /// `globalNamespaces` (a comma-separated string in Multus).
    pub global_namespaces: Vec<String>,
    /// `systemNamespaces`.
    pub system_namespaces: Vec<String>,
    /// `multusNamespace`.
    pub multus_namespace: String,
    /// `readinessindicatorfile`.
    pub readiness_indicator_file: Option<PathBuf>,
    /// `logFile`.
    pub log_file: Option<PathBuf>,
    /// `logLevel`: panic, error, verbose or debug.
    pub log_level: String,
    /// `logToStderr`.
    pub log_to_stderr: bool,
    /// `logOptions`: how `logFile` rotates.
    pub log_rotation: crate::log_file::Rotation,
    /// `retryDeleteOnError`.
    pub retry_delete_on_error: bool,
    /// `capabilities`.
    pub capabilities: Map<String, Value>,
    /// `runtimeConfig`: what the runtime passes for the capabilities.
    pub runtime_config: Map<String, Value>,
    /// `daemonSocketDir`.
    pub daemon_socket_dir: PathBuf,
    /// `auxiliaryCNIChainName`: the subdirectory whose confs every pod gets as a chain.
    pub auxiliary_chain: Option<String>,
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The keys the meta-plugin reads, and those the runtime adds (`args`, `prevResult`); any
/// other is ignored with a warning, as Multus's Go decoding ignores it.
const KNOWN: [&str; 26] = [
    "auxiliaryCNIChainName",
    "logOptions",
    "cniVersion",
    "name",
    "type",
    "capabilities",
    "runtimeConfig",
    "args",
    "prevResult",
    "kubeconfig",
    "clusterNetwork",
    "defaultNetworks",
    "delegates",
    "confDir",
    "cniDir",
    "binDir",
    "namespaceIsolation",
    "globalNamespaces",
    "systemNamespaces",
    "multusNamespace",
    "readinessindicatorfile",
    "logFile",
    "logLevel",
    "logToStderr",
    "retryDeleteOnError",
    "daemonSocketDir",
];

impl MetaConfig {
    /// Parses the meta-plugin's stdin.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        const WHAT: &str = "plexus config";
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|error| ConfigError::Decode { what: WHAT.to_owned(), error })?;
        let Value::Object(map) = value else {
            return Err(ConfigError::invalid(WHAT, "must be a JSON object"));
        };
        let keys = Keys::new(&map, WHAT);
        keys.warn_unknown(&KNOWN);
        let cni_version = match keys.string("cniVersion")? {
            Some(v) => v.parse().map_err(|error| ConfigError::Version { what: WHAT.to_owned(), error })?,
            // As libcni reads a config without one (Multus's own cni-conf.json has none).
            None => CniVersion::V0_1_0,
        };
        let mut delegates = Vec::new();
        let mut master_delegate = 0;
        if let Some((name, value)) = keys.get("delegates") {
            let Value::Array(items) = value else {
                return Err(keys.wrong(name, "a list of network configs"));
            };
            for (i, item) in items.iter().enumerate() {
                if item.get("masterplugin").and_then(Value::as_bool) == Some(true) {
                    master_delegate = i;
                }
                delegates.push(NetworkConfig::from_value(
                    item.clone(),
                    &format!("plexus config: delegates[{i}]"),
                )?);
            }
        }
        let cluster_network = keys.string("clusterNetwork")?.filter(|s| !s.is_empty());
        if cluster_network.is_none() && delegates.is_empty() {
            return Err(ConfigError::invalid(WHAT, "needs clusterNetwork or at least one of delegates"));
        }
        let global_namespaces = match keys.get("globalNamespaces") {
            None | Some((_, Value::Null)) => Vec::new(),
            Some((_, Value::String(s))) => split_list(s),
            Some(_) => keys.strings("globalNamespaces")?.unwrap_or_default(),
        };
        let log_level = keys.string("logLevel")?.unwrap_or_else(|| "panic".to_owned()).to_ascii_lowercase();
        if !["panic", "error", "verbose", "debug"].contains(&log_level.as_str()) {
            return Err(ConfigError::invalid(
                WHAT,
                format!("logLevel {log_level:?} must be panic, error, verbose or debug"),
            ));
        }
        let auxiliary_chain = keys.string("auxiliaryCNIChainName")?.filter(|s| !s.is_empty());
        if let Some(name) = &auxiliary_chain
            && (name.contains('/') || name == "." || name == "..")
        {
            return Err(ConfigError::invalid(
                WHAT,
                format!("auxiliaryCNIChainName {name:?} must name a subdirectory (no /, not . or ..)"),
            ));
        }
        Ok(Self {
            auxiliary_chain,
            name: keys.string("name")?.unwrap_or_else(|| "plexus-cni-network".to_owned()),
            cni_version,
            delegates,
            master_delegate,
            cluster_network,
            default_networks: keys.strings("defaultNetworks")?.unwrap_or_default(),
            kubeconfig: keys.string("kubeconfig")?.filter(|s| !s.is_empty()).map(PathBuf::from),
            conf_dir: PathBuf::from(keys.string("confDir")?.unwrap_or_else(|| paths::CONF_DIR.to_owned())),
            cni_dir: PathBuf::from(keys.string("cniDir")?.unwrap_or_else(|| paths::CNI_DIR.to_owned())),
            bin_dir: PathBuf::from(keys.string("binDir")?.unwrap_or_else(|| paths::BIN_DIR.to_owned())),
            namespace_isolation: keys.bool("namespaceIsolation")?.unwrap_or(false),
            global_namespaces,
            system_namespaces: keys
                .strings("systemNamespaces")?
                .unwrap_or_else(|| vec!["kube-system".to_owned()]),
            multus_namespace: keys
                .string("multusNamespace")?
                .unwrap_or_else(|| paths::MULTUS_NAMESPACE.to_owned()),
            readiness_indicator_file: keys
                .string("readinessindicatorfile")?
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            log_file: keys.string("logFile")?.filter(|s| !s.is_empty()).map(PathBuf::from),
            log_level,
            log_to_stderr: keys.bool("logToStderr")?.unwrap_or(true),
            log_rotation: match keys.value("logOptions") {
                Some(options) => crate::log_file::Rotation::parse(options, WHAT)
                    .map_err(|message| ConfigError::invalid(WHAT, message))?,
                None => crate::log_file::Rotation::default(),
            },
            retry_delete_on_error: keys.bool("retryDeleteOnError")?.unwrap_or(false),
            capabilities: keys.object("capabilities")?,
            runtime_config: keys.object("runtimeConfig")?,
            daemon_socket_dir: PathBuf::from(
                keys.string("daemonSocketDir")?.unwrap_or_else(|| paths::SOCKET_DIR.to_owned()),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multus_config_with_its_type_changed_parses() {
        let config = MetaConfig::parse(
            br#"{"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "plexus",
                 "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
                 "LogFile": "/var/log/multus.log", "LogLevel": "Debug", "logToStderr": false,
                 "confDir": "/tmp/conf", "namespaceIsolation": true, "globalNamespaces": "default, kube-public",
                 "capabilities": {"portMappings": true},
                 "delegates": [{"cniVersion": "0.3.1", "name": "default-cni-network",
                                "plugins": [{"type": "flannel", "delegate": {"isDefaultGateway": true}}, {"type": "portmap", "capabilities": {"portMappings": true}}]}]}"#,
        )
        .unwrap();
        assert_eq!(config.cni_version, CniVersion::V0_3_1);
        assert_eq!(config.log_file, Some(PathBuf::from("/var/log/multus.log")));
        assert_eq!(config.log_level, "debug");
        assert!(!config.log_to_stderr);
        assert_eq!(config.global_namespaces, ["default", "kube-public"]);
        assert_eq!(config.system_namespaces, ["kube-system"]);
        assert_eq!(config.delegates.len(), 1);
        assert_eq!(config.conf_dir, PathBuf::from("/tmp/conf"));
        assert_eq!(config.cni_dir, PathBuf::from(paths::CNI_DIR));
        assert!(config.namespace_isolation);
    }

    #[test]
    fn a_config_without_cni_version_is_0_1_0_as_libcni_reads_it() {
        // The shape of Multus's deployments/cni-conf.json: no top-level cniVersion.
        let config = MetaConfig::parse(
            br#"{"name": "multus-cni-network", "type": "plexus", "capabilities": {"portMappings": true},
                 "delegates": [{"cniVersion": "0.3.1", "name": "default-cni-network",
                                "plugins": [{"type": "flannel", "name": "flannel.1",
                                             "delegate": {"isDefaultGateway": true, "hairpinMode": true}},
                                            {"type": "portmap", "capabilities": {"portMappings": true}}]}],
                 "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
                 "someFutureKey": 1}"#,
        )
        .unwrap();
        assert_eq!(config.cni_version, CniVersion::V0_1_0);
        assert_eq!(config.delegates.len(), 1);
    }

    #[test]
    fn the_oldest_format_names_the_cluster_network_with_masterplugin() {
        let config = MetaConfig::parse(
            br#"{"cniVersion": "0.3.1", "name": "m", "type": "plexus",
                 "delegates": [{"type": "macvlan", "master": "eth1"}, {"type": "flannel", "masterplugin": true}]}"#,
        )
        .unwrap();
        assert_eq!(config.master_delegate, 1);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"cniVersion": "1.0.0", "type": "plexus"}"#, "needs clusterNetwork"),
            (br#"{"cniVersion": "0.0.9", "clusterNetwork": "x"}"#, "unsupported CNI version \"0.0.9\""),
            (
                br#"{"cniVersion": "1.0.0", "clusterNetwork": "x", "NamespaceIsolation": "yes"}"#,
                "NamespaceIsolation must be true or false",
            ),
            (br#"{"cniVersion": "1.0.0", "clusterNetwork": "x", "logLevel": "loud"}"#, "\"loud\""),
            (br#"{"cniVersion": "1.0.0", "delegates": [{"name": "x"}]}"#, "delegates[0]: type: missing"),
        ];
        for (text, want) in cases {
            let err = MetaConfig::parse(text).unwrap_err();
            assert!(err.to_string().contains(want), "{err} should contain {want:?}");
        }
    }
}
