//! What iproute2 says, for tests that check the kernel independently of the code under test.

use std::process::Command;

use serde_json::Value;

/// `ip -j [-n <netns>] <args>` as JSON; `Null` when ip fails (no such object) or prints
/// nothing.
pub fn json(netns: Option<&str>, args: &[&str]) -> Value {
    let mut command = Command::new("ip");
    command.arg("-j");
    if let Some(netns) = netns {
        command.args(["-n", netns]);
    }
    match command.args(args).output() {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// `ip [-n <netns>] <args>`, for changes a test makes behind the code's back; an error
/// carries what ip printed.
pub fn run(netns: Option<&str>, args: &[&str]) -> Result<(), String> {
    let mut command = Command::new("ip");
    if let Some(netns) = netns {
        command.args(["-n", netns]);
    }
    let out = command.args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A link as iproute2 shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its MAC.
    pub mac: String,
    /// Its MTU.
    pub mtu: u64,
    /// Administratively up.
    pub up: bool,
}

/// Link `name` in `netns`, `None` when there is no such link.
pub fn link(netns: Option<&str>, name: &str) -> Option<Link> {
    let links = json(netns, &["link", "show", "dev", name]);
    let link = links.get(0)?;
    let up = link["flags"].as_array().is_some_and(|flags| flags.iter().any(|f| f == "UP"));
    Some(Link { mac: link["address"].as_str()?.to_owned(), mtu: link["mtu"].as_u64()?, up })
}

/// The names of every link in `netns`.
pub fn link_names(netns: Option<&str>) -> Vec<String> {
    json(netns, &["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}
