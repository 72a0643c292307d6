//! The CNI environment: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH,
//! read and checked once, at the edge, into a typed [`Call`].

use std::path::{Path, PathBuf};

use plexus_hw::IfName;

/// A CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// ADD
    Add,
    /// DEL
    Del,
    /// CHECK
    Check,
    /// STATUS (1.1.0)
    Status,
    /// GC (1.1.0)
    Gc,
    /// VERSION
    Version,
}

impl Command {
    /// The spelling in CNI_COMMAND.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

/// The environment does not make a CNI call (the spec's code 4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A variable the verb needs is not set, or empty.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// CNI_COMMAND names no verb.
    #[error("unknown CNI_COMMAND {0:?}")]
    UnknownCommand(String),
    /// A variable's value cannot be used.
    #[error("{name}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

impl crate::error::Failure for EnvError {
    fn code(&self) -> u32 {
        super::error::ErrorCode::InvalidEnvironment.into()
    }
}

/// The pod a call is for, from CNI_ARGS (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID, empty when not given.
    pub uid: String,
}

/// One attachment's call (ADD, DEL or CHECK): the container, its namespace, the interface.
/// The meta-plugin makes one per delegate, with the delegate's interface name and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// CNI_COMMAND.
    pub command: Command,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS; `None` when empty (a DEL after the sandbox is gone).
    pub netns: Option<PathBuf>,
    /// CNI_IFNAME.
    pub ifname: IfName,
    /// CNI_ARGS, as given (`K=V;K=V`).
    pub args: String,
    /// CNI_PATH, split.
    pub path: Vec<PathBuf>,
}

/// A whole call, by verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// ADD, DEL or CHECK.
    Attachment(Invocation),
    /// STATUS, with CNI_PATH (which may be empty).
    Status {
        /// CNI_PATH, split.
        path: Vec<PathBuf>,
    },
    /// GC, with CNI_PATH.
    Gc {
        /// CNI_PATH, split.
        path: Vec<PathBuf>,
    },
    /// VERSION.
    Version,
}

impl Call {
    /// Reads the environment through `get`; a variable the verb needs and lacks, or one whose
    /// value cannot be used, is an error naming it.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some("VERSION") => Command::Version,
            Some(other) => return Err(EnvError::UnknownCommand(other.to_owned())),
            None => return Err(EnvError::Missing("CNI_COMMAND")),
        };
        let value = |name: &'static str| get(name).filter(|v| !v.is_empty());
        let need = |name: &'static str| value(name).ok_or(EnvError::Missing(name));
        let split = |path: Option<String>| -> Vec<PathBuf> {
            path.map(|p| std::env::split_paths(&p).filter(|p| !p.as_os_str().is_empty()).collect())
                .unwrap_or_default()
        };
        match command {
            Command::Version => Ok(Self::Version),
            Command::Status => Ok(Self::Status { path: split(value("CNI_PATH")) }),
            Command::Gc => Ok(Self::Gc { path: split(Some(need("CNI_PATH")?)) }),
            Command::Add | Command::Del | Command::Check => {
                let container_id = need("CNI_CONTAINERID")?;
                check_container_id(&container_id)
                    .map_err(|reason| EnvError::Invalid { name: "CNI_CONTAINERID", reason })?;
                let netns = match command {
                    Command::Del => value("CNI_NETNS"),
                    _ => Some(need("CNI_NETNS")?),
                };
                let ifname = need("CNI_IFNAME")?
                    .parse::<IfName>()
                    .map_err(|e| EnvError::Invalid { name: "CNI_IFNAME", reason: e.to_string() })?;
                let path = split(Some(need("CNI_PATH")?));
                Ok(Self::Attachment(Invocation {
                    command,
                    container_id,
                    netns: netns.map(PathBuf::from),
                    ifname,
                    args: get("CNI_ARGS").unwrap_or_default(),
                    path,
                }))
            }
        }
    }

    /// The verb.
    pub fn command(&self) -> Command {
        match self {
            Self::Attachment(invocation) => invocation.command,
            Self::Status { .. } => Command::Status,
            Self::Gc { .. } => Command::Gc,
            Self::Version => Command::Version,
        }
    }
}

impl Invocation {
    /// The invocation of an attachment's verb (ADD, DEL, CHECK) from the environment through
    /// `get`; another verb is an error.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        match Call::from_env(get)? {
            Call::Attachment(invocation) => Ok(invocation),
            other => Err(EnvError::Invalid {
                name: "CNI_COMMAND",
                reason: format!("{} is not a verb of an attachment", other.command().as_str()),
            }),
        }
    }

    /// CNI_ARGS as key/value pairs.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        parse_cni_args(&self.args)
    }

    /// The value of one CNI_ARGS key.
    pub fn cni_arg(&self, key: &str) -> Option<String> {
        self.cni_args().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The pod, when CNI_ARGS names it (`K8S_POD_NAMESPACE` and `K8S_POD_NAME`).
    pub fn pod(&self) -> Option<PodRef> {
        Some(PodRef {
            namespace: self.cni_arg("K8S_POD_NAMESPACE")?,
            name: self.cni_arg("K8S_POD_NAME")?,
            uid: self.cni_arg("K8S_POD_UID").unwrap_or_default(),
        })
    }

    /// CNI_NETNS as the environment spells it (empty when there is none).
    pub fn netns_str(&self) -> String {
        self.netns.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
    }

    /// The pod's namespace, when the call has one that still exists.
    pub fn live_netns(&self) -> Option<&Path> {
        self.netns.as_deref().filter(|p| p.exists())
    }

    /// The environment a plugin binary gets for this call, with CNI_PATH `path`.
    pub fn env(&self, path: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", self.command.as_str().to_owned()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns_str()),
            ("CNI_IFNAME", self.ifname.to_string()),
            ("CNI_ARGS", self.args.clone()),
            ("CNI_PATH", path.to_owned()),
        ]
    }
}

/// The longest container ID taken. The spec sets no limit, but the ID names files
/// (`<id>-<ifname>-device.json`, a cache entry and its temporary name), and a file name has at
/// most 255 bytes; runtimes use 64 hex digits.
pub const MAX_CONTAINER_ID: usize = 200;

/// Checks a container ID as the spec defines it (libcni's `ValidateContainerID`): it starts
/// with an alphanumeric character, then alphanumerics, `_`, `.` and `-`. Such an ID names a
/// file inside its store and nothing else (no `/`, never `.` or `..`).
pub fn check_container_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    match chars.next() {
        None => return Err("empty".into()),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(format!("{id:?} must start with a letter or digit"));
        }
        Some(_) => {}
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!("{id:?} has {bad:?}; only letters, digits, '_', '.' and '-' are allowed"));
    }
    if id.len() > MAX_CONTAINER_ID {
        return Err(format!("{} bytes long, more than {MAX_CONTAINER_ID}", id.len()));
    }
    Ok(())
}

/// Splits `K=V;K=V` (pairs without `=` are dropped).
pub fn parse_cni_args(args: &str) -> Vec<(String, String)> {
    args.split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |k| map.get(k).cloned()
    }

    fn attachment(call: Call) -> Invocation {
        match call {
            Call::Attachment(invocation) => invocation,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_environment_and_names_what_is_missing() {
        let inv = attachment(
            Call::from_env(env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/run/netns/p"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
                ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web"),
            ]))
            .unwrap(),
        );
        assert_eq!(inv.path, [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]);
        assert_eq!(inv.cni_arg("K8S_POD_NAME").as_deref(), Some("web"));
        assert_eq!(
            inv.pod(),
            Some(PodRef { namespace: "ns1".into(), name: "web".into(), uid: String::new() })
        );
        assert_eq!(inv.netns.as_deref(), Some(Path::new("/run/netns/p")));
        let err = Call::from_env(env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")])).unwrap_err();
        assert_eq!(err.to_string(), "CNI_NETNS is not set");
        let err = Call::from_env(env(&[])).unwrap_err();
        assert_eq!(err.to_string(), "CNI_COMMAND is not set");
        let err = Call::from_env(env(&[("CNI_COMMAND", "UP")])).unwrap_err();
        assert!(err.to_string().contains("\"UP\""));
        // DEL needs no netns (it may be gone); VERSION needs nothing.
        let del =
            [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/x")];
        assert_eq!(attachment(Call::from_env(env(&del)).unwrap()).netns, None);
        assert_eq!(Call::from_env(env(&[("CNI_COMMAND", "VERSION")])).unwrap(), Call::Version);
        // The interface name is the kernel's: checked here, once.
        let bad = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "a-name-far-too-long"),
            ("CNI_PATH", "/x"),
        ];
        let err = Call::from_env(env(&bad)).unwrap_err();
        assert!(matches!(err, EnvError::Invalid { name: "CNI_IFNAME", .. }), "{err}");
    }

    #[test]
    fn container_ids_are_the_specs_and_never_a_path() {
        let call = |cid: &str, ifname: &str| {
            Call::from_env(env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", cid),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", "/x"),
            ]))
        };
        for ok in ["c1", "0a1b2c", "A.b_c-d", &"f".repeat(64)] {
            assert_eq!(attachment(call(ok, "eth0").unwrap()).container_id, ok);
        }
        for bad in [
            "/abs/path",
            "../x",
            "../../x",
            ".",
            "..",
            "-x",
            "_x",
            ".x",
            "a/b",
            "a b",
            "a\nb",
            "ü",
            &"a".repeat(201),
        ] {
            let err = call(bad, "eth0").unwrap_err();
            assert!(matches!(err, EnvError::Invalid { name: "CNI_CONTAINERID", .. }), "{bad}: {err}");
            assert_eq!(crate::error::Failure::code(&err), 4);
        }
        let err = call("c1", "eth%d").unwrap_err();
        assert!(matches!(err, EnvError::Invalid { name: "CNI_IFNAME", .. }), "{err}");
        assert!(err.to_string().contains('%'), "{err}");
    }
}
