//! Multus's thick `daemon-config.json`, read as Multus reads it (keys in any case, unknown keys
//! ignored, each named in a warning), for `plexus-agent run --config FILE`: a node moving from
//! Multus thick keeps its file. Each key goes where it means the same in Plexus: the agent's
//! flags (`socketDir`, `cniConfigDir`, `multusConfigFile: auto`, `chrootDir`), its own log
//! (`logFile`, `logLevel`, `logToStderr`, `logOptions`), and the meta-plugin keys of the config the agent
//! writes (`namespaceIsolation`, `clusterNetwork`, ...).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Map, Value};

use plexus_cni::keys::Keys;
use plexus_cni::spec::ConfigError;

use crate::logging::LogSettings;

/// What the file says, by where it goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonConfig {
    /// `chrootDir`: delegates run chrooted into the node's root mounted there.
    pub chroot_dir: Option<PathBuf>,
    /// `socketDir`.
    pub socket_dir: Option<PathBuf>,
    /// `multusAutoconfigDir`, else `cniConfigDir`: where the primary config is and ours goes.
    pub cni_conf_dir: Option<PathBuf>,
    /// `multusConfigFile: "auto"`.
    pub auto_config: bool,
    /// `cniVersion`.
    pub cni_version: Option<String>,
    /// `forceCNIVersion`.
    pub force_cni_version: bool,
    /// `readinessindicatorfile`.
    pub readiness_indicator_file: Option<PathBuf>,
    /// The agent's own log.
    pub log: LogSettings,
    /// Keys for the meta-plugin config the agent writes.
    pub plugin_keys: Map<String, Value>,
}

/// Multus keys that go into the meta-plugin config as they are.
pub(crate) const PLUGIN_KEYS: [&str; 11] = [
    "confDir",
    "binDir",
    "cniDir",
    "namespaceIsolation",
    "globalNamespaces",
    "systemNamespaces",
    "multusNamespace",
    "clusterNetwork",
    "defaultNetworks",
    "retryDeleteOnError",
    "auxiliaryCNIChainName",
];

/// Keys with a meaning of their own here.
const OWN_KEYS: [&str; 12] = [
    "chrootDir",
    "socketDir",
    "cniConfigDir",
    "multusAutoconfigDir",
    "multusConfigFile",
    "cniVersion",
    "forceCNIVersion",
    "readinessindicatorfile",
    "logFile",
    "logLevel",
    "logToStderr",
    "logOptions",
];

impl DaemonConfig {
    /// Reads `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Reads `text`; `what` names it in errors and warnings.
    pub fn parse(text: &str, what: &str) -> anyhow::Result<Self> {
        let value: Value = serde_json::from_str(text).with_context(|| format!("{what}: not valid JSON"))?;
        let Value::Object(object) = value else {
            anyhow::bail!("{what}: must be a JSON object");
        };
        let keys = Keys::new(&object, what);
        let known: Vec<&str> = PLUGIN_KEYS.iter().chain(&OWN_KEYS).copied().collect();
        keys.warn_unknown(&known);
        // Multus reads an empty string as no value.
        let string = |key: &str| -> Result<Option<String>, ConfigError> {
            Ok(keys.string(key)?.filter(|s| !s.is_empty()))
        };
        let mut plugin_keys = Map::new();
        for key in PLUGIN_KEYS {
            if let Some(value) = keys.value(key) {
                plugin_keys.insert(key.to_owned(), value.clone());
            }
        }
        let readiness = string("readinessindicatorfile")?.map(PathBuf::from);
        if let Some(file) = &readiness {
            plugin_keys.insert("readinessindicatorfile".into(), Value::String(file.display().to_string()));
        }
        let rotation = match keys.value("logOptions") {
            Some(options) => {
                plexus_cni::log_file::Rotation::parse(options, what).map_err(anyhow::Error::msg)?
            }
            None => plexus_cni::log_file::Rotation::default(),
        };
        let auto_config = match string("multusConfigFile")? {
            None => false,
            Some(file) if file == "auto" => true,
            Some(file) => anyhow::bail!(
                "{what}: multusConfigFile {file:?}: Plexus writes its own config (\"auto\"); to keep a \
                 hand-written one, leave --auto-config off and give it \"type\": \"plexus\""
            ),
        };
        let log_level = string("logLevel")?;
        if let Some(level) = &log_level {
            crate::logging::level(level).with_context(|| format!("{what}: logLevel"))?;
        }
        Ok(Self {
            chroot_dir: string("chrootDir")?.map(PathBuf::from),
            socket_dir: string("socketDir")?.map(PathBuf::from),
            cni_conf_dir: string("multusAutoconfigDir")?.or(string("cniConfigDir")?).map(PathBuf::from),
            auto_config,
            cni_version: string("cniVersion")?,
            force_cni_version: keys.bool("forceCNIVersion")?.unwrap_or(false),
            readiness_indicator_file: readiness,
            log: LogSettings {
                level: log_level,
                file: string("logFile")?.map(PathBuf::from),
                // Multus logs to stderr unless told not to.
                no_stderr: keys.bool("logToStderr")? == Some(false),
                rotation,
            },
            plugin_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_multus_thick_daemon_config() {
        // The shape of Multus's deployments/multus-daemonset-thick.yml daemon-config.json.
        let config = DaemonConfig::parse(
            r#"{"chrootDir": "/hostroot", "cniVersion": "0.3.1", "logLevel": "verbose", "logToStderr": true,
                "cniConfigDir": "/host/etc/cni/net.d", "multusAutoconfigDir": "/host/etc/cni/net.d",
                "multusConfigFile": "auto", "socketDir": "/host/run/multus/",
                "NamespaceIsolation": true, "globalNamespaces": "default", "metricsPort": 9091,
                "logFile": "/var/log/multus.log", "readinessindicatorfile": "/run/flannel/subnet.env",
                "logOptions": {"maxAge": 5, "maxSize": 100, "maxBackups": 5, "compress": true}}"#,
            "daemon-config.json",
        )
        .unwrap();
        assert_eq!(config.chroot_dir, Some(PathBuf::from("/hostroot")));
        assert_eq!(config.socket_dir, Some(PathBuf::from("/host/run/multus/")));
        assert_eq!(config.cni_conf_dir, Some(PathBuf::from("/host/etc/cni/net.d")));
        assert!(config.auto_config);
        assert_eq!(config.cni_version.as_deref(), Some("0.3.1"));
        assert_eq!(config.log.level.as_deref(), Some("verbose"));
        assert_eq!(config.log.file, Some(PathBuf::from("/var/log/multus.log")));
        assert!(!config.log.no_stderr);
        assert_eq!(config.log.rotation.max_size_mb, 100);
        assert_eq!(config.plugin_keys["namespaceIsolation"], json!(true));
        assert_eq!(config.plugin_keys["globalNamespaces"], json!("default"));
        assert_eq!(config.plugin_keys["readinessindicatorfile"], json!("/run/flannel/subnet.env"));
        assert!(!config.plugin_keys.contains_key("metricsPort"));
    }

    #[test]
    fn bad_values_are_named() {
        for (text, want) in [
            (r#"{"logLevel": "loud"}"#, "logLevel"),
            (r#"{"socketDir": 3}"#, "socketDir must be a string"),
            (r#"{"multusConfigFile": "/etc/cni/net.d/00-multus.conf"}"#, "multusConfigFile"),
            ("[]", "must be a JSON object"),
        ] {
            let err = format!("{:#}", DaemonConfig::parse(text, "d.json").unwrap_err());
            assert!(err.contains(want), "{err} should contain {want:?}");
        }
    }
}
