//! Finding a network's config: in a NAD, in confDir by name, in a directory, or in a file.

use std::path::Path;

use super::conf_cache::Kept;
use crate::spec::{ConfigError, NetworkConfig};

/// A network config and where it came from (for errors and status).
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The config.
    pub config: NetworkConfig,
    /// Its exact text, kept byte for byte for the DEL cache.
    pub text: String,
}

/// The conf at `path`, read and parsed (or as it was last time, when the file has not changed
/// since: see `conf_cache`).
pub(crate) fn read(path: &Path) -> Result<Found, ConfigError> {
    static CONFS: Kept<Found> = Kept::new();
    CONFS.get(path, |path| {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Unreadable { path: path.to_owned(), error })?;
        let config = NetworkConfig::parse(text.as_bytes(), &path.display().to_string())?;
        Ok((Found { config, text }, true))
    })
}

/// The conf files of a directory, as libcni orders them: by name, `.conf`, `.conflist` and
/// `.json` only (or as they were last time, when the directory has not changed since).
pub(crate) fn conf_files(dir: &Path) -> Vec<std::path::PathBuf> {
    static LISTINGS: Kept<Vec<std::path::PathBuf>> = Kept::new();
    // A listing cannot fail (an unreadable directory lists nothing).
    let Ok(listed) = LISTINGS.get(dir, |dir| {
        let mut links = false;
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let path = e.path();
                // Regular files by the directory's own word (no stat each); a link when it
                // leads to one. Never a FIFO, whose read would block.
                matches!(path.extension().and_then(|e| e.to_str()), Some("conf" | "conflist" | "json"))
                    && e.file_type().is_ok_and(|t| {
                        links |= t.is_symlink();
                        t.is_file() || (t.is_symlink() && path.is_file())
                    })
            })
            .map(|e| e.path())
            .collect();
        files.sort();
        // Where a link leads can change without the directory: not kept.
        Ok::<_, std::convert::Infallible>((files, !links))
    });
    listed
}

/// The conf in `dir` whose `name` is `name`, `Ok(None)` when there is none. A file that does
/// not parse is passed over (with a warning), unless it says it is `name`: then its error,
/// which names the file and the key, is the answer, not "no conf named so".
pub fn by_name_in_dir(dir: &Path, name: &str) -> Result<Option<Found>, ConfigError> {
    for path in conf_files(dir) {
        match read(&path) {
            Ok(found) if found.config.name() == Some(name) => return Ok(Some(found)),
            Ok(_) => {}
            Err(err) if names_itself(&path, name) => return Err(err),
            Err(err) => tracing::warn!("passing over {}: {err}", path.display()),
        }
    }
    Ok(None)
}

/// Whether the file at `path` is JSON whose `name` is `name`, however broken otherwise.
fn names_itself(path: &Path, name: &str) -> bool {
    let Ok(text) = std::fs::read(path) else { return false };
    let value: Option<serde_json::Value> = serde_json::from_slice(&text).ok();
    value.as_ref().and_then(|v| v.get("name")).and_then(serde_json::Value::as_str) == Some(name)
}

/// A cluster or default network given as `clusterNetwork` / `defaultNetworks` when it is not a
/// NAD: a conf in `conf_dir` with that name, else a directory (its first conf file), else a
/// conf file.
pub fn static_network(reference: &str, conf_dir: &Path) -> Result<Found, ConfigError> {
    if let Some(found) = by_name_in_dir(conf_dir, reference)? {
        return Ok(found);
    }
    let path = Path::new(reference);
    if path.is_dir() {
        let first = conf_files(path).into_iter().next().ok_or_else(|| {
            ConfigError::invalid(format!("network {reference:?}"), "no conf file in the directory")
        })?;
        return read(&first);
    }
    if path.is_file() {
        return read(path);
    }
    Err(ConfigError::invalid(
        format!("network {reference:?}"),
        format!("no NAD, no conf named so in {}, and no such file or directory", conf_dir.display()),
    ))
}

/// A NAD's config: `spec.config`, or the conf in `conf_dir` named as the NAD when it is empty.
pub fn nad_config(
    namespace: &str,
    name: &str,
    spec_config: &str,
    conf_dir: &Path,
) -> Result<Found, ConfigError> {
    let what = format!("NetworkAttachmentDefinition {namespace}/{name}");
    if spec_config.trim().is_empty() {
        return by_name_in_dir(conf_dir, name)?.ok_or_else(|| {
            ConfigError::invalid(
                what,
                format!("spec.config is empty and {} has no conf named {name:?}", conf_dir.display()),
            )
        });
    }
    // A config without a name takes the NAD's, as Multus does: NADs are commonly written so.
    let text = match serde_json::from_str::<serde_json::Value>(spec_config) {
        Ok(mut value) if value.is_object() && value["name"].as_str().is_none_or(str::is_empty) => {
            value["name"] = serde_json::Value::String(name.to_owned());
            value.to_string()
        }
        _ => spec_config.to_owned(),
    };
    let config = NetworkConfig::parse(text.as_bytes(), &what)?;
    Ok(Found { config, text })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn conf_files_are_regular_files_or_links_to_them_by_name() {
        let dir = plexus_sim::scratch("resolve-files").unwrap();
        let at = |name: &str| dir.path().join(name);
        std::fs::write(at("20-b.conflist"), "{}").unwrap();
        std::fs::write(at("10-a.conf"), "{}").unwrap();
        std::fs::write(at("30-c.txt"), "{}").unwrap();
        std::os::unix::fs::symlink(at("10-a.conf"), at("15-link.json")).unwrap();
        std::os::unix::fs::symlink(at("missing.conf"), at("16-dangling.conf")).unwrap();
        std::fs::create_dir(at("40-dir.conf")).unwrap();
        std::os::unix::fs::symlink(at("40-dir.conf"), at("41-dirlink.conf")).unwrap();
        // A FIFO would block the read.
        nix::unistd::mkfifo(&at("50-fifo.conf"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let names: Vec<_> = conf_files(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["10-a.conf", "15-link.json", "20-b.conflist"]);
    }

    #[test]
    fn a_broken_conf_of_the_name_asked_for_is_named_with_its_key() {
        let dir = plexus_sim::scratch("resolve-broken").unwrap();
        std::fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion": "1.0.0", "name": "net-a", "type": 5}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("20-b.conf"), r#"{"cniVersion": "7", "name": "net-b", "type": "x"}"#)
            .unwrap();
        std::fs::write(
            dir.path().join("30-c.conf"),
            r#"{"cniVersion": "1.0.0", "name": "net-c", "type": "x"}"#,
        )
        .unwrap();
        let err = static_network("net-a", dir.path()).unwrap_err().to_string();
        assert!(err.contains("10-a.conf") && err.contains("type: 5 is not a plugin name"), "{err}");
        let err = static_network("net-b", dir.path()).unwrap_err().to_string();
        assert!(err.contains("20-b.conf") && err.contains("CNI version"), "{err}");
        // The broken files do not hide a good one.
        assert_eq!(static_network("net-c", dir.path()).unwrap().config.name(), Some("net-c"));
    }

    #[test]
    fn a_nad_config_without_a_name_takes_the_nads() {
        let dir = Path::new("/nonexistent");
        let found = nad_config("tenant", "fast", r#"{"cniVersion": "1.0.0", "type": "sriov"}"#, dir).unwrap();
        assert_eq!(found.config.name(), Some("fast"));
        assert!(found.text.contains(r#""name":"fast""#), "{}", found.text);
        let named =
            nad_config("tenant", "fast", r#"{"cniVersion": "1.0.0", "name": "own", "type": "sriov"}"#, dir);
        assert_eq!(named.unwrap().config.name(), Some("own"));
        let err = nad_config("tenant", "fast", "[1]", dir).unwrap_err();
        assert!(err.to_string().contains("NetworkAttachmentDefinition tenant/fast"), "{err}");
    }
}
