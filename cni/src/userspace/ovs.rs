//! The OVS side of a vhost-user attachment, as OVSDB transactions: a port on a netdev
//! (userspace datapath) bridge, created with the bridge when it is missing, and removed with
//! the bridge when Plexus created it and nothing else is on it. Each change bumps `next_cfg`
//! and waits for ovs-vswitchd to reach it, as `ovs-vsctl` does, so the port exists in the
//! datapath when ADD returns.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::config::VhostMode;
use super::ovsdb::{Ovsdb, OvsdbError, map_get, set_atoms, uuid};

/// The Bridge `external_ids` key marking the bridges Plexus made (and may remove).
pub const CREATED_BY: &str = "created-by";

/// The port to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Bridge name.
    pub bridge: String,
    /// Port (and interface) name.
    pub port: String,
    /// OVS's side of the socket.
    pub mode: VhostMode,
    /// Client mode: the socket OVS connects to.
    pub server_path: Option<String>,
    /// The port's VLAN tag.
    pub vlan: Option<u16>,
    /// Who asked, for the port's `external_ids`.
    pub container_id: String,
}

/// The operations inserting the port's Interface and Port rows (named `iface` and `port`).
pub fn port_rows(spec: &PortSpec) -> Vec<Value> {
    let mut interface = json!({"name": spec.port});
    match spec.mode {
        VhostMode::Client => {
            interface["type"] = json!("dpdkvhostuserclient");
            let path = spec.server_path.clone().unwrap_or_default();
            interface["options"] = json!(["map", [["vhost-server-path", path]]]);
        }
        VhostMode::Server => interface["type"] = json!("dpdkvhostuser"),
    }
    let mut port = json!({"name": spec.port, "interfaces": ["named-uuid", "iface"],
                          "external_ids": ["map", [["container-id", spec.container_id], [CREATED_BY, "plexus"]]]});
    if let Some(vlan) = spec.vlan {
        port["tag"] = json!(vlan);
    }
    vec![
        json!({"op": "insert", "table": "Interface", "row": interface, "uuid-name": "iface"}),
        json!({"op": "insert", "table": "Port", "row": port, "uuid-name": "port"}),
    ]
}

/// Bumps `next_cfg` and reads it back: ovs-vswitchd has applied the transaction once its
/// `cur_cfg` reaches the value.
fn bump_cfg() -> [Value; 2] {
    [
        json!({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]}),
        json!({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]}),
    ]
}

/// The transaction adding the port to an existing bridge. Its third result's `count` is 0
/// when there is no such bridge (the inserted rows, referenced by nothing, are then dropped by
/// the server).
pub fn add_to_bridge(spec: &PortSpec) -> Vec<Value> {
    let mut ops = port_rows(spec);
    ops.push(json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", spec.bridge]],
                    "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]}));
    ops.extend(bump_cfg());
    ops
}

/// The transaction creating the bridge (netdev datapath, its internal port, marked as
/// Plexus's) with the port on it.
pub fn create_bridge_with(spec: &PortSpec) -> Vec<Value> {
    let mut ops = port_rows(spec);
    ops.push(json!({"op": "insert", "table": "Interface", "row": {"name": spec.bridge, "type": "internal"},
                    "uuid-name": "bridge_iface"}));
    ops.push(json!({"op": "insert", "table": "Port",
                    "row": {"name": spec.bridge, "interfaces": ["named-uuid", "bridge_iface"]},
                    "uuid-name": "bridge_port"}));
    ops.push(json!({"op": "insert", "table": "Bridge", "uuid-name": "bridge",
                    "row": {"name": spec.bridge, "datapath_type": "netdev",
                            "ports": ["set", [["named-uuid", "port"], ["named-uuid", "bridge_port"]]],
                            "external_ids": ["map", [[CREATED_BY, "plexus"]]]}}));
    ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                    "mutations": [["bridges", "insert", ["set", [["named-uuid", "bridge"]]]]]}));
    ops.extend(bump_cfg());
    ops
}

/// `next_cfg` from the results of a transaction ending with [`bump_cfg`].
fn next_cfg(results: &[Value]) -> Option<i64> {
    results.last()?["rows"][0]["next_cfg"].as_i64()
}

/// What [`add_port`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// The bridge was missing and Plexus made it.
    pub bridge_created: bool,
}

/// Adds the port, creating the bridge when it is missing, and waits up to `wait` for
/// ovs-vswitchd to apply it.
pub fn add_port(db: &mut Ovsdb, spec: &PortSpec, wait: Duration) -> Result<Added, OvsdbError> {
    let results = db.transact(&add_to_bridge(spec))?;
    let (results, bridge_created) = if results[2]["count"] == 0 {
        match db.transact(&create_bridge_with(spec)) {
            Ok(results) => (results, true),
            // Another ADD made the bridge meanwhile (the name is a unique index): join it.
            Err(OvsdbError::Transaction { error, .. }) if error == "constraint violation" => {
                (db.transact(&add_to_bridge(spec))?, false)
            }
            Err(e) => return Err(e),
        }
    } else {
        (results, false)
    };
    if let Some(target) = next_cfg(&results) {
        wait_applied(db, target, wait)?;
    }
    Ok(Added { bridge_created })
}

/// Waits for ovs-vswitchd to have applied configuration `target`.
fn wait_applied(db: &mut Ovsdb, target: i64, wait: Duration) -> Result<(), OvsdbError> {
    let deadline = Instant::now() + wait;
    let query = [json!({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["cur_cfg"]})];
    loop {
        let results = db.transact(&query)?;
        if results[0]["rows"][0]["cur_cfg"].as_i64().is_some_and(|cur| cur >= target) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(OvsdbError::Transaction {
                op: "waiting for ovs-vswitchd".into(),
                error: format!(
                    "configuration {target} not applied within {} ms: is ovs-vswitchd running?",
                    wait.as_millis()
                ),
                details: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What [`del_port`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The port was there.
    pub port: bool,
    /// Its bridge, made by Plexus, was left with only its own port and was removed too.
    pub bridge: bool,
}

/// Removes port `name` from its bridge (its rows go with it), and the bridge when Plexus made
/// it and nothing else is on it; waits up to `wait` for ovs-vswitchd. No such port is not an
/// error.
pub fn del_port(db: &mut Ovsdb, name: &str, wait: Duration) -> Result<Removed, OvsdbError> {
    let found = db.transact(&[
        json!({"op": "select", "table": "Port", "where": [["name", "==", name]], "columns": ["_uuid"]}),
        json!({"op": "select", "table": "Bridge", "where": [], "columns": ["_uuid", "name", "ports", "external_ids"]}),
        json!({"op": "select", "table": "Port", "where": [], "columns": ["_uuid", "name"]}),
    ])?;
    let Some(port) = found[0]["rows"][0]["_uuid"].get(1).and_then(Value::as_str).map(str::to_owned) else {
        return Ok(Removed { port: false, bridge: false });
    };
    let port_name = |id: &Value| {
        found[2]["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|row| row["_uuid"] == *id)
            .map(|row| row["name"].clone())
    };
    let mut ops = Vec::new();
    let mut bridge_removed = false;
    for bridge in found[1]["rows"].as_array().into_iter().flatten() {
        let ports = set_atoms(&bridge["ports"]);
        if !ports.contains(&uuid(&port)) {
            continue;
        }
        let bridge_id = bridge["_uuid"].clone();
        let others: Vec<&Value> = ports.iter().filter(|p| **p != uuid(&port)).collect();
        let only_its_own = others.iter().all(|p| port_name(p).is_some_and(|n| n == bridge["name"]));
        let ours = map_get(&bridge["external_ids"], CREATED_BY).is_some_and(|v| v == "plexus");
        if ours && only_its_own {
            // Unless another ADD put a port on it since the select.
            ops.push(json!({"op": "wait", "table": "Bridge", "where": [["_uuid", "==", bridge_id]],
                            "columns": ["ports"], "until": "==", "rows": [{"ports": bridge["ports"]}], "timeout": 0}));
            ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                            "mutations": [["bridges", "delete", ["set", [bridge_id]]]]}));
            bridge_removed = true;
        } else {
            ops.push(json!({"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", bridge_id]],
                            "mutations": [["ports", "delete", ["set", [uuid(&port)]]]]}));
        }
    }
    ops.extend(bump_cfg());
    let results = match db.transact(&ops) {
        // The bridge changed under us: remove the port alone, leaving the bridge to its users.
        Err(OvsdbError::Transaction { error, .. }) if error == "timed out" => {
            return del_port_only(db, &port, wait);
        }
        other => other?,
    };
    if let Some(target) = next_cfg(&results) {
        wait_applied(db, target, wait)?;
    }
    Ok(Removed { port: true, bridge: bridge_removed })
}

fn del_port_only(db: &mut Ovsdb, port: &str, wait: Duration) -> Result<Removed, OvsdbError> {
    let mut ops = vec![json!({"op": "mutate", "table": "Bridge", "where": [],
                              "mutations": [["ports", "delete", ["set", [uuid(port)]]]]})];
    ops.extend(bump_cfg());
    let results = db.transact(&ops)?;
    if let Some(target) = next_cfg(&results) {
        wait_applied(db, target, wait)?;
    }
    Ok(Removed { port: true, bridge: false })
}

/// The named interface's columns `columns`, `None` when there is no such interface.
pub fn interface(db: &mut Ovsdb, name: &str, columns: &[&str]) -> Result<Option<Value>, OvsdbError> {
    let results = db.transact(&[
        json!({"op": "select", "table": "Interface", "where": [["name", "==", name]], "columns": columns}),
    ])?;
    Ok(results[0]["rows"].as_array().and_then(|rows| rows.first().cloned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(mode: VhostMode) -> PortSpec {
        PortSpec {
            bridge: "br0".into(),
            port: "0123456789ab-net1".into(),
            mode,
            server_path: (mode == VhostMode::Client).then(|| "/run/pod/sock".into()),
            vlan: Some(100),
            container_id: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn client_mode_is_a_dpdkvhostuserclient_port_with_the_pods_socket() {
        let ops = add_to_bridge(&spec(VhostMode::Client));
        assert_eq!(
            ops[0],
            json!({"op": "insert", "table": "Interface", "uuid-name": "iface",
                   "row": {"name": "0123456789ab-net1", "type": "dpdkvhostuserclient",
                           "options": ["map", [["vhost-server-path", "/run/pod/sock"]]]}})
        );
        assert_eq!(ops[1]["row"]["tag"], 100);
        assert_eq!(ops[1]["row"]["interfaces"], json!(["named-uuid", "iface"]));
        assert_eq!(ops[2]["where"], json!([["name", "==", "br0"]]));
        assert_eq!(ops[3]["mutations"], json!([["next_cfg", "+=", 1]]));
    }

    #[test]
    fn server_mode_and_a_new_bridge_on_the_netdev_datapath() {
        let ops = create_bridge_with(&spec(VhostMode::Server));
        assert_eq!(ops[0]["row"], json!({"name": "0123456789ab-net1", "type": "dpdkvhostuser"}));
        let bridge = ops.iter().find(|op| op["table"] == "Bridge").unwrap();
        assert_eq!(bridge["row"]["datapath_type"], "netdev");
        assert_eq!(map_get(&bridge["row"]["external_ids"], CREATED_BY), Some(&json!("plexus")));
        assert_eq!(set_atoms(&bridge["row"]["ports"]).len(), 2, "the pod's port and the bridge's own");
        let root = ops.iter().find(|op| op["table"] == "Open_vSwitch" && op["op"] == "mutate").unwrap();
        assert_eq!(root["mutations"][0][0], "bridges");
    }
}
