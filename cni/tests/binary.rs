//! The `plexus` binary itself: VERSION, the spec's errors for bad input, STATUS, GC, and an
//! ADD/DEL through the process, run inside the test's host namespace with nsenter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::Node;
use serde_json::{Value, json};

/// Runs the binary in `node`'s host namespace; returns (exit code, stdout as JSON or Null).
fn plexus(node: Option<&Node>, env: &HashMap<String, String>, stdin: &[u8]) -> (i32, Value) {
    let binary = env!("CARGO_BIN_EXE_plexus-standalone");
    let mut command = match node {
        Some(node) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", node.host.path().display())).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let mut child = command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout: Value =
        if out.stdout.is_empty() { Value::Null } else { serde_json::from_slice(&out.stdout).unwrap() };
    (out.status.code().unwrap(), stdout)
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn version_lists_every_supported_version() {
    let (code, out) = plexus(None, &env(&[("CNI_COMMAND", "VERSION")]), b"{}");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        json!({"cniVersion": "1.1.0",
               "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn bad_input_gets_the_spec_error_never_a_panic() {
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c"),
        ("CNI_NETNS", "/run/netns/none"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    let good = br#"{"cniVersion": "0.4.0", "name": "n", "type": "plexus", "clusterNetwork": "x"}"#;
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [u8], u64, &'a str);
    let cases: [Case; 5] = [
        (&[], good, 4, "CNI_COMMAND is not set"),
        (&add[..2], good, 4, "CNI_NETNS is not set"),
        (&add, b"{not json", 6, "not valid JSON"),
        (
            &add,
            br#"{"cniVersion": "0.0.2", "type": "plexus", "clusterNetwork": "x"}"#,
            1,
            "unsupported CNI version \"0.0.2\"",
        ),
        (&add, br#"{"cniVersion": "1.0.0", "type": "plexus"}"#, 7, "needs clusterNetwork"),
    ];
    for (vars, stdin, code, msg) in cases {
        let (exit, out) = plexus(None, &env(vars), stdin);
        assert_eq!(exit, 1, "{out}");
        assert_eq!(out["code"], code, "{out}");
        assert!(out["msg"].as_str().unwrap().contains(msg), "{out}");
        assert!(out["cniVersion"].is_string());
    }
}

#[test]
fn add_status_gc_and_del_through_the_binary() {
    let node = Node::new("cni-bin");
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr9", "10.90.0.0/24"));
    let meta = node.meta(json!({"cniVersion": "1.1.0", "clusterNetwork": "cluster"}));
    let (code, out) = plexus(Some(&node), &node.env("ADD", "b1", None), &meta);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["cniVersion"], "1.1.0");
    assert_eq!(out["interfaces"].as_array().unwrap().iter().filter(|i| i["sandbox"].is_string()).count(), 1);

    let status = env(&[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/usr/lib/cni")]);
    let (code, out) = plexus(Some(&node), &status, &meta);
    assert_eq!(code, 0, "{out}");
    let missing =
        node.meta(json!({"clusterNetwork": "cluster", "readinessindicatorfile": "/nonexistent/ready"}));
    let (code, out) = plexus(Some(&node), &status, &missing);
    assert_eq!((code, out["code"].as_u64()), (1, Some(50)), "{out}");

    // GC: b1 is still valid; a second container the runtime forgot is cleaned up.
    let mut b2 = node.env("ADD", "b2", None);
    b2.insert("CNI_IFNAME".into(), "eth1".into());
    let (code, out) = plexus(Some(&node), &b2, &meta);
    assert_eq!(code, 0, "{out}");
    assert_eq!(node.reserved_ips().len(), 2);
    let mut gc = serde_json::from_slice::<Value>(&meta).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "b1", "ifname": "eth0"}]);
    let gc_env = env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")]);
    let (code, out) = plexus(Some(&node), &gc_env, &serde_json::to_vec(&gc).unwrap());
    assert_eq!(code, 0, "{out}");
    assert_eq!(node.reserved_ips().len(), 1, "b2's address released");
    assert!(node.cni_dir().join("b1").exists() && !node.cni_dir().join("b2").exists());

    let (code, out) = plexus(Some(&node), &node.env("DEL", "b1", None), &meta);
    assert_eq!(code, 0, "{out}");
    assert!(node.reserved_ips().is_empty());
    node.finish();
}

#[test]
fn configs_and_results_of_cni_0_1_0_and_0_2_0_convert_both_ways() {
    let node = Node::new("cni-old");
    // The cluster network a 0.2.0 plugin: it prints `ip4`, not `ips`.
    let mut cluster = node.bridge_conf("cluster", "pxbr8", "10.91.0.0/24");
    cluster["cniVersion"] = json!("0.2.0");
    node.write_conf("10-cluster.conf", cluster);
    // A meta config without cniVersion (Multus's own cni-conf.json): 0.1.0, as libcni reads it.
    let mut meta: Value = serde_json::from_slice(&node.meta(json!({"clusterNetwork": "cluster"}))).unwrap();
    meta.as_object_mut().unwrap().remove("cniVersion");
    let meta = serde_json::to_vec(&meta).unwrap();
    let (code, out) = plexus(Some(&node), &node.env("ADD", "o1", None), &meta);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["cniVersion"], "0.1.0", "{out}");
    assert!(out["ip4"]["ip"].as_str().unwrap().starts_with("10.91.0."), "{out}");
    assert!(out.get("ips").is_none() && out.get("interfaces").is_none(), "{out}");
    // The same 0.2.0 delegate under a 1.0.0 meta config: converted up.
    let meta10 = node.meta(json!({"cniVersion": "1.0.0", "clusterNetwork": "cluster"}));
    let mut o2 = node.env("ADD", "o2", None);
    o2.insert("CNI_IFNAME".into(), "eth1".into());
    let (code, up) = plexus(Some(&node), &o2, &meta10);
    assert_eq!(code, 0, "{up}");
    assert_eq!(up["cniVersion"], "1.0.0");
    assert!(up["ips"][0]["address"].as_str().unwrap().starts_with("10.91.0."), "{up}");
    assert_eq!(node.reserved_ips().len(), 2);
    for (cid, ifname, meta) in [("o1", "eth0", &meta), ("o2", "eth1", &meta10)] {
        let mut del = node.env("DEL", cid, None);
        del.insert("CNI_IFNAME".into(), ifname.into());
        let (code, out) = plexus(Some(&node), &del, meta);
        assert_eq!(code, 0, "{out}");
    }
    assert!(node.reserved_ips().is_empty());
    node.finish();
}

#[test]
fn log_file_and_level_are_honoured() {
    let dir = plexus_sim::scratch("cni-log").unwrap();
    let log = dir.path().join("plexus.log");
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "plexus", "clusterNetwork": "nothing-here",
                      "confDir": dir.path(), "cniDir": dir.path().join("cache"), "LogFile": log, "LogLevel": "verbose"});
    let del = env(&[
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "logged"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ]);
    let (code, out) = plexus(None, &del, &serde_json::to_vec(&conf).unwrap());
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, Value::Null, "nothing on stdout for DEL");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("DEL container logged interface eth0"), "{text}");
    // The default level (panic) writes nothing.
    let mut quiet = conf.clone();
    quiet.as_object_mut().unwrap().remove("LogLevel");
    std::fs::remove_file(&log).unwrap();
    plexus(None, &del, &serde_json::to_vec(&quiet).unwrap());
    assert!(std::fs::read_to_string(&log).unwrap_or_default().is_empty());
}
