//! Node auto-configuration: the agent writes `00-plexus.conflist` into the runtime's CNI config
//! directory, wrapping the node's primary CNI config (the first other config file, by name) as
//! the cluster network, so the runtime calls `plexus` for every pod.
//!
//! What Multus users were bitten by, and this does not do: it never deletes its config (Multus
//! deletes it on shutdown, and pods created meanwhile start silently without their secondary
//! networks); it never wraps itself (a config of type `plexus` is never the primary); and when
//! another plugin renames or removes the file (Cilium in its exclusive mode renames every
//! config it does not own), it puts it back and says what happened.
//!
//! A Multus config left on the node (`00-multus.conf`, a thick `multus-shim` one) is never
//! wrapped: it would make Multus the cluster network, and since it sorts before ours the
//! runtime would keep calling Multus. Its Multus keys (`namespaceIsolation`, ...) are taken
//! over, it is renamed aside (`<name>.superseded`, which no runtime loads), and the log says so.

use std::path::{Path, PathBuf};

use plexus_cni::keys::Keys;
use serde_json::{Map, Value, json};

use crate::daemon_config::PLUGIN_KEYS;

/// The file the agent owns. `00-` sorts it before the usual `05-`/`10-` primary configs, so the
/// runtime, which takes the first file by name, picks it.
pub const FILE: &str = "00-plexus.conflist";

/// What a pass found wrong with the directory.
#[derive(Debug, thiserror::Error)]
pub enum AutoConfigError {
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AutoConfigError + '_ {
    move |error| AutoConfigError::Io { path: path.to_owned(), error }
}

/// What a pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to write yet: the reason.
    Waiting(String),
    /// The file on disk is what it should be.
    Unchanged,
    /// Written for the first time, or regenerated because the primary config changed.
    Written { primary: String },
    /// Someone else removed, renamed or edited the file: put back. The text says what happened.
    Restored(String),
}

/// The auto-configuration of one CNI config directory.
#[derive(Debug)]
pub struct AutoConfig {
    conf_dir: PathBuf,
    readiness: Option<PathBuf>,
    /// Keys given to the `plexus` plugin besides `type`, `capabilities` and `delegates`.
    plugin_keys: Map<String, Value>,
    /// What this agent last wrote, to tell its own file from a changed one.
    written: Option<String>,
    /// The `cniVersion` of the file (default: the primary's), and whether the primary is
    /// given it too (Multus's `forceCNIVersion`).
    cni_version: Option<String>,
    force_cni_version: bool,
}

/// Whether `config` (a conf or a conflist) has a plugin of one of `types`.
fn has_type(config: &Value, types: &[&str]) -> bool {
    let is = |v: &Value| v["type"].as_str().is_some_and(|t| types.contains(&t));
    is(config) || config["plugins"].as_array().is_some_and(|plugins| plugins.iter().any(is))
}

/// Whether `config` is Plexus's own: wrapping it would wrap ourselves.
fn is_plexus(config: &Value) -> bool {
    has_type(config, &["plexus"])
}

/// Whether `config` is Multus's (thin, or the thick daemon's shim).
fn is_multus(config: &Value) -> bool {
    has_type(config, &["multus", "multus-shim"])
}

/// The suffix a superseded Multus config is renamed with.
pub const SUPERSEDED: &str = ".superseded";

/// The keys of a Multus config that mean the same in ours: those of the daemon config that go
/// into ours, and the meta-plugin's own log and readiness keys. Not `kubeconfig` (it points
/// into Multus's own directory, and the agent has its own access), nor `clusterNetwork` when it
/// is a path (the thick daemon's paths are in its container's view).
const MULTUS_CONFIG_KEYS: [&str; 5] =
    ["readinessindicatorfile", "logFile", "logLevel", "logToStderr", "logOptions"];

/// The Multus keys of a Multus `config` (of its `multus` plugin, for a conflist), by their
/// canonical names, matched in any case as Multus reads them.
fn multus_keys(config: &Value) -> Map<String, Value> {
    let plugin = config["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| is_multus(p)))
        .unwrap_or(config);
    let mut found = Map::new();
    let Some(object) = plugin.as_object() else { return found };
    let keys = Keys::new(object, "Multus config");
    for name in PLUGIN_KEYS.iter().chain(&MULTUS_CONFIG_KEYS) {
        let Some(value) = keys.value(name) else { continue };
        if *name == "clusterNetwork" && value.as_str().is_some_and(|v| v.contains('/')) {
            continue;
        }
        found.insert((*name).to_owned(), value.clone());
    }
    found
}

/// The capabilities the primary's plugins declare: the runtime passes their arguments only to
/// a config that declares them, so the wrapper declares them all.
fn capabilities(config: &Value) -> Map<String, Value> {
    let mut all = Map::new();
    let plugins = config["plugins"].as_array().map_or_else(|| vec![config], |p| p.iter().collect());
    for plugin in plugins {
        for (name, on) in plugin["capabilities"].as_object().into_iter().flatten() {
            if on.as_bool() == Some(true) {
                all.insert(name.clone(), Value::Bool(true));
            }
        }
    }
    all
}

/// What a pass found: the primary config (its file name and content), and the Multus keys
/// of the Multus configs found.
type Found = (Option<(String, Value)>, Map<String, Value>);

impl AutoConfig {
    /// For `conf_dir`; `plugin_keys` go into the `plexus` plugin (`daemonSocketDir`, ...); with
    /// `readiness`, nothing is written until that file exists, and ADD waits for it too.
    pub fn new(conf_dir: &Path, readiness: Option<&Path>, mut plugin_keys: Map<String, Value>) -> Self {
        if let Some(file) = readiness {
            plugin_keys.insert("readinessindicatorfile".into(), file.display().to_string().into());
        }
        Self {
            conf_dir: conf_dir.to_owned(),
            readiness: readiness.map(Path::to_owned),
            plugin_keys,
            written: None,
            cni_version: None,
            force_cni_version: false,
        }
    }

    /// Writes the file as CNI `version`; with `force`, the primary is given it too.
    #[must_use]
    pub fn with_cni_version(mut self, version: Option<String>, force: bool) -> Self {
        self.cni_version = version;
        self.force_cni_version = force;
        self
    }

    fn ours(&self) -> PathBuf {
        self.conf_dir.join(FILE)
    }

    /// The primary config: the first file by name that the runtime would load (`.conf`,
    /// `.conflist`, `.json`), is valid JSON and is neither Plexus's own nor Multus's. Its
    /// name and content, and the Multus keys of the Multus configs found (those still loaded
    /// are renamed aside first; those renamed earlier still give their keys).
    fn primary(&self) -> Result<Found, AutoConfigError> {
        let entries = match std::fs::read_dir(&self.conf_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, Map::new())),
            Err(e) => return Err(io(&self.conf_dir)(e)),
        };
        let loaded = |name: &str| [".conf", ".conflist", ".json"].iter().any(|ext| name.ends_with(ext));
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| {
                name != FILE && (loaded(name) || name.strip_suffix(SUPERSEDED).is_some_and(&loaded))
            })
            .collect();
        names.sort();
        let mut primary = None;
        let mut inherited = Map::new();
        for name in names {
            let path = self.conf_dir.join(&name);
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let config = match serde_json::from_str::<Value>(&text) {
                Ok(config) if config.is_object() => config,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!("{}: not a CNI config ({e}): skipped", path.display());
                    continue;
                }
            };
            if is_multus(&config) {
                for (key, value) in multus_keys(&config) {
                    inherited.entry(key).or_insert(value);
                }
                if loaded(&name) {
                    let aside = self.conf_dir.join(format!("{name}{SUPERSEDED}"));
                    match std::fs::rename(&path, &aside) {
                        Ok(()) => tracing::warn!(
                            "{} is a Multus config left on the node: {FILE} supersedes it (its Multus keys \
                             taken over); renamed to {}",
                            path.display(),
                            aside.display()
                        ),
                        Err(e) => tracing::warn!(
                            "{} is a Multus config the runtime would pick before {FILE}: renaming it: {e}",
                            path.display()
                        ),
                    }
                }
            } else if primary.is_none() && loaded(&name) && !is_plexus(&config) {
                primary = Some((name, config));
            }
        }
        Ok((primary, inherited))
    }

    /// The wrapper for `primary`, with `inherited` Multus keys where ours give none.
    fn wrapper(&self, primary: &Value, inherited: Map<String, Value>) -> String {
        let mut plugin = Map::new();
        plugin.insert("type".into(), "plexus".into());
        let capabilities = capabilities(primary);
        if !capabilities.is_empty() {
            plugin.insert("capabilities".into(), Value::Object(capabilities));
        }
        plugin.extend(inherited);
        plugin.extend(self.plugin_keys.clone());
        let version = match &self.cni_version {
            Some(version) => version.as_str(),
            None => primary["cniVersion"].as_str().unwrap_or("1.0.0"),
        };
        let mut primary = primary.clone();
        if self.force_cni_version {
            primary["cniVersion"] = json!(version);
        }
        plugin.insert("delegates".into(), json!([primary]));
        let config = json!({"cniVersion": version, "name": "plexus-cni-network", "plugins": [plugin]});
        let mut text = serde_json::to_string_pretty(&config).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Where our file went, when it is gone: a file in the directory now holding what we wrote.
    fn renamed_to(&self, written: &str) -> Option<String> {
        let entries = std::fs::read_dir(&self.conf_dir).ok()?;
        entries.filter_map(Result::ok).find_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            (text == written).then(|| e.file_name().to_string_lossy().into_owned())
        })
    }

    /// One pass: writes the file when it is missing or not what it should be.
    pub fn reconcile(&mut self) -> Result<Outcome, AutoConfigError> {
        if let Some(file) = &self.readiness
            && self.written.is_none()
            && !file.exists()
        {
            return Ok(Outcome::Waiting(format!(
                "the readiness indicator file {} does not exist",
                file.display()
            )));
        }
        let ours = self.ours();
        let on_disk = match std::fs::read_to_string(&ours) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&ours)(e)),
        };
        let (primary, inherited) = self.primary()?;
        let Some((name, primary)) = primary else {
            // Ours stays if it is there: it carries the last primary inline, which still works.
            return Ok(Outcome::Waiting(format!("no primary CNI config in {}", self.conf_dir.display())));
        };
        let wanted = self.wrapper(&primary, inherited);
        if on_disk.as_deref() == Some(wanted.as_str()) {
            self.written = Some(wanted);
            return Ok(Outcome::Unchanged);
        }
        let outcome = match (&self.written, &on_disk) {
            (Some(written), None) => Outcome::Restored(match self.renamed_to(written) {
                Some(to) => format!(
                    "{FILE} was renamed to {to} by another program (Cilium's exclusive mode does this)"
                ),
                None => format!("{FILE} was removed by another program"),
            }),
            (Some(written), Some(text)) if text != written => {
                Outcome::Restored(format!("{FILE} was changed by another program"))
            }
            _ => Outcome::Written { primary: name },
        };
        plexus_cni::files::write_atomic(&ours, wanted.as_bytes(), true).map_err(io(&ours))?;
        self.written = Some(wanted);
        Ok(outcome)
    }

    /// Runs a pass every `interval` until `stop` is set, logging what changed.
    pub fn run(mut self, interval: std::time::Duration, stop: &std::sync::atomic::AtomicBool) {
        let mut last_wait = None;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match self.reconcile() {
                Ok(Outcome::Waiting(why)) => {
                    if last_wait.as_ref() != Some(&why) {
                        tracing::info!("CNI auto-config waits: {why}");
                        last_wait = Some(why);
                    }
                }
                Ok(Outcome::Unchanged) => last_wait = None,
                Ok(Outcome::Written { primary }) => {
                    last_wait = None;
                    tracing::info!("wrote {} wrapping {primary}", self.ours().display());
                }
                Ok(Outcome::Restored(what)) => {
                    last_wait = None;
                    tracing::warn!("{what}: put it back in {}", self.conf_dir.display());
                }
                Err(e) => tracing::warn!("CNI auto-config: {e}"),
            }
            std::thread::sleep(interval);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dir() -> plexus_sim::TempDir {
        plexus_sim::scratch("autoconf").unwrap()
    }

    fn keys() -> Map<String, Value> {
        json!({"daemonSocketDir": "/run/plexus"}).as_object().unwrap().clone()
    }

    fn flannel(version: &str) -> String {
        json!({"cniVersion": version, "name": "cbr0", "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]})
        .to_string()
    }

    fn read(path: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn wraps_the_first_config_by_name_and_regenerates_when_it_changes() {
        let d = dir();
        std::fs::write(
            d.path().join("20-other.conf"),
            r#"{"cniVersion": "0.4.0", "name": "x", "type": "bridge"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("10-flannel.conflist"), flannel("0.3.1")).unwrap();
        std::fs::write(d.path().join("05-notes.txt"), "not a config").unwrap();
        let mut auto = AutoConfig::new(d.path(), None, keys());
        assert_eq!(auto.reconcile().unwrap(), Outcome::Written { primary: "10-flannel.conflist".into() });
        let ours = read(&d.path().join(FILE));
        assert_eq!(ours["cniVersion"], "0.3.1");
        let plugin = &ours["plugins"][0];
        assert_eq!(plugin["type"], "plexus");
        assert_eq!(plugin["daemonSocketDir"], "/run/plexus");
        assert_eq!(plugin["capabilities"], json!({"portMappings": true}));
        assert_eq!(plugin["delegates"][0]["name"], "cbr0");
        // The plugin, as the runtime hands it over (with the list's name and version), is a
        // valid meta-plugin config.
        let mut stdin = plugin.clone();
        stdin["name"] = ours["name"].clone();
        stdin["cniVersion"] = ours["cniVersion"].clone();
        let meta = plexus_cni::multus::config::MetaConfig::parse(stdin.to_string().as_bytes()).unwrap();
        assert_eq!(meta.delegates.len(), 1);
        assert_eq!(auto.reconcile().unwrap(), Outcome::Unchanged);

        std::fs::write(d.path().join("10-flannel.conflist"), flannel("1.0.0")).unwrap();
        assert_eq!(auto.reconcile().unwrap(), Outcome::Written { primary: "10-flannel.conflist".into() });
        assert_eq!(read(&d.path().join(FILE))["cniVersion"], "1.0.0");
    }

    #[test]
    fn never_wraps_itself_nor_an_older_plexus_config() {
        let d = dir();
        let older = json!({"cniVersion": "1.0.0", "name": "old", "type": "plexus", "clusterNetwork": "x"});
        std::fs::write(d.path().join("01-plexus-old.conf"), older.to_string()).unwrap();
        let mut auto = AutoConfig::new(d.path(), None, keys());
        assert!(matches!(auto.reconcile().unwrap(), Outcome::Waiting(why) if why.contains("no primary")));
        assert!(!d.path().join(FILE).exists());
        std::fs::write(d.path().join("10-flannel.conflist"), flannel("1.0.0")).unwrap();
        auto.reconcile().unwrap();
        // A second agent (or a restart) sees its own file and the same primary: nothing changes.
        let mut again = AutoConfig::new(d.path(), None, keys());
        assert_eq!(again.reconcile().unwrap(), Outcome::Unchanged);
        assert_eq!(read(&d.path().join(FILE))["plugins"][0]["delegates"][0]["name"], "cbr0");
    }

    #[test]
    fn a_leftover_multus_config_is_superseded_never_wrapped_and_its_keys_kept() {
        let d = dir();
        // Multus's thin auto-generated config, sorting before ours, with the primary inline.
        let multus = json!({"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus",
            "NamespaceIsolation": true, "globalNamespaces": "default,shared", "logLevel": "verbose",
            "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
            "delegates": [serde_json::from_str::<Value>(&flannel("0.3.1")).unwrap()]});
        std::fs::write(d.path().join("00-multus.conf"), multus.to_string()).unwrap();
        std::fs::write(d.path().join("10-flannel.conflist"), flannel("0.3.1")).unwrap();
        // Our flag wins over Multus's key.
        let mut flags = keys();
        flags.insert("logLevel".into(), json!("debug"));
        let mut auto = AutoConfig::new(d.path(), None, flags.clone());
        assert_eq!(auto.reconcile().unwrap(), Outcome::Written { primary: "10-flannel.conflist".into() });
        assert!(!d.path().join("00-multus.conf").exists());
        assert!(d.path().join("00-multus.conf.superseded").exists());
        let plugin = &read(&d.path().join(FILE))["plugins"][0];
        assert_eq!(plugin["namespaceIsolation"], true);
        assert_eq!(plugin["globalNamespaces"], "default,shared");
        assert_eq!(plugin["logLevel"], "debug");
        assert!(plugin.get("kubeconfig").is_none());
        assert_eq!(plugin["delegates"][0]["name"], "cbr0", "flannel is the cluster network, not Multus");
        // The keys stay on the next pass and after a restart: the superseded file still gives them.
        assert_eq!(auto.reconcile().unwrap(), Outcome::Unchanged);
        let mut again = AutoConfig::new(d.path(), None, flags);
        assert_eq!(again.reconcile().unwrap(), Outcome::Unchanged);
    }

    #[test]
    fn multus_keys_given_by_flag_survive_and_the_version_can_be_forced() {
        let d = dir();
        std::fs::write(d.path().join("10-flannel.conflist"), flannel("0.3.1")).unwrap();
        let mut flags = keys();
        flags.insert("namespaceIsolation".into(), json!(true));
        let mut auto = AutoConfig::new(d.path(), None, flags).with_cni_version(Some("1.0.0".into()), true);
        auto.reconcile().unwrap();
        let ours = read(&d.path().join(FILE));
        assert_eq!(ours["cniVersion"], "1.0.0");
        assert_eq!(ours["plugins"][0]["delegates"][0]["cniVersion"], "1.0.0");
        assert_eq!(ours["plugins"][0]["namespaceIsolation"], true);
        // Another program edits the key away: put back as generated.
        let text = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        std::fs::write(d.path().join(FILE), text.replace("\"namespaceIsolation\": true,", "")).unwrap();
        assert!(matches!(auto.reconcile().unwrap(), Outcome::Restored(_)));
        assert_eq!(read(&d.path().join(FILE))["plugins"][0]["namespaceIsolation"], true);
    }

    #[test]
    fn waits_for_the_readiness_indicator_and_passes_it_on() {
        let d = dir();
        std::fs::write(d.path().join("10-flannel.conflist"), flannel("1.0.0")).unwrap();
        let ready = d.path().join("flannel-ready");
        let mut auto = AutoConfig::new(d.path(), Some(&ready), keys());
        assert!(matches!(auto.reconcile().unwrap(), Outcome::Waiting(why) if why.contains("flannel-ready")));
        assert!(!d.path().join(FILE).exists());
        std::fs::write(&ready, "").unwrap();
        assert!(matches!(auto.reconcile().unwrap(), Outcome::Written { .. }));
        let plugin = &read(&d.path().join(FILE))["plugins"][0];
        assert_eq!(plugin["readinessindicatorfile"], ready.display().to_string());
    }

    #[test]
    fn puts_its_file_back_when_renamed_removed_or_edited() {
        let d = dir();
        std::fs::write(d.path().join("05-cilium.conflist"), flannel("1.0.0")).unwrap();
        let mut auto = AutoConfig::new(d.path(), None, keys());
        auto.reconcile().unwrap();
        let ours = d.path().join(FILE);
        let backup = d.path().join(format!("{FILE}.cilium_bak"));
        std::fs::rename(&ours, &backup).unwrap();
        match auto.reconcile().unwrap() {
            Outcome::Restored(what) => {
                assert!(what.contains("renamed to 00-plexus.conflist.cilium_bak"), "{what}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&backup).unwrap());
        std::fs::remove_file(&ours).unwrap();
        std::fs::remove_file(&backup).unwrap();
        assert!(matches!(auto.reconcile().unwrap(), Outcome::Restored(what) if what.contains("removed")));
        std::fs::write(&ours, "{}").unwrap();
        assert!(matches!(auto.reconcile().unwrap(), Outcome::Restored(what) if what.contains("changed")));
        assert_eq!(read(&ours)["plugins"][0]["type"], "plexus");
    }
}
