//! The CNI environment: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH.

use std::path::PathBuf;

use super::error::{CniError, ErrorCode};

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

/// One plugin invocation's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// CNI_COMMAND.
    pub command: Command,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS.
    pub netns: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// CNI_ARGS, as given (`K=V;K=V`).
    pub args: String,
    /// CNI_PATH, split.
    pub path: Vec<PathBuf>,
}

impl Invocation {
    /// Reads the environment through `get`; a variable the verb needs and lacks is error 4,
    /// naming it.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let missing = |name: &str| CniError::new(ErrorCode::InvalidEnvironment, format!("{name} is not set"));
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("unknown CNI_COMMAND {other:?}"),
                ));
            }
            None => return Err(missing("CNI_COMMAND")),
        };
        let need = |name: &str, required: bool| -> Result<String, CniError> {
            match get(name).filter(|v| !v.is_empty()) {
                Some(value) => Ok(value),
                None if required => Err(missing(name)),
                None => Ok(String::new()),
            }
        };
        let attach = matches!(command, Command::Add | Command::Del | Command::Check);
        let container_id = need("CNI_CONTAINERID", attach)?;
        let netns = need("CNI_NETNS", matches!(command, Command::Add | Command::Check))?;
        let ifname = need("CNI_IFNAME", attach)?;
        let path = need("CNI_PATH", attach || command == Command::Gc)?;
        Ok(Self {
            command,
            container_id,
            netns,
            ifname,
            args: get("CNI_ARGS").unwrap_or_default(),
            path: std::env::split_paths(&path).filter(|p| !p.as_os_str().is_empty()).collect(),
        })
    }

    /// CNI_ARGS as key/value pairs.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        parse_cni_args(&self.args)
    }

    /// The value of one CNI_ARGS key.
    pub fn cni_arg(&self, key: &str) -> Option<String> {
        self.cni_args().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The environment a delegate gets, with `ifname` and CNI_PATH `path`.
    pub fn env_for(&self, command: Command, ifname: &str, path: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.as_str().to_owned()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns.clone()),
            ("CNI_IFNAME", ifname.to_owned()),
            ("CNI_ARGS", self.args.clone()),
            ("CNI_PATH", path.to_owned()),
        ]
    }
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

    #[test]
    fn reads_the_environment_and_names_what_is_missing() {
        let inv = Invocation::from_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/p"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web"),
        ]))
        .unwrap();
        assert_eq!(inv.path, [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]);
        assert_eq!(inv.cni_arg("K8S_POD_NAME").as_deref(), Some("web"));
        let err =
            Invocation::from_env(env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")])).unwrap_err();
        assert_eq!((err.code, err.msg.as_str()), (4, "CNI_NETNS is not set"));
        let err = Invocation::from_env(env(&[])).unwrap_err();
        assert_eq!(err.msg, "CNI_COMMAND is not set");
        let err = Invocation::from_env(env(&[("CNI_COMMAND", "UP")])).unwrap_err();
        assert!(err.msg.contains("\"UP\""));
        // DEL needs no netns (it may be gone); VERSION needs nothing.
        let del =
            [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/x")];
        assert!(Invocation::from_env(env(&del)).is_ok());
        assert!(Invocation::from_env(env(&[("CNI_COMMAND", "VERSION")])).is_ok());
    }
}
