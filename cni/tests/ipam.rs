//! In-process IPAM against the reference plugins: our host-local and Debian's
//! `/usr/lib/cni/host-local` take turns on one range and one store; our static matches the
//! reference static's result.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command as Process, Stdio};

use plexus_cni::ipam::{self, Request};
use plexus_cni::spec::{Command, Invocation};
use serde_json::{Value, json};

const PLUGINS: &str = "/usr/lib/cni";

fn invocation(command: Command, cid: &str, ifname: &str, args: &str) -> Invocation {
    let env = HashMap::from([
        ("CNI_COMMAND", command.as_str().to_owned()),
        ("CNI_CONTAINERID", cid.to_owned()),
        ("CNI_NETNS", "/proc/self/ns/net".to_owned()),
        ("CNI_IFNAME", ifname.to_owned()),
        ("CNI_ARGS", args.to_owned()),
        ("CNI_PATH", PLUGINS.to_owned()),
    ]);
    Invocation::from_env(|k| env.get(k).cloned()).unwrap()
}

/// Runs a reference IPAM binary; its result, or its error JSON as `Err`.
fn reference(
    plugin: &str,
    command: Command,
    cid: &str,
    ifname: &str,
    network: &Value,
) -> Result<Value, Value> {
    let mut child = Process::new(format!("{PLUGINS}/{plugin}"))
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", PLUGINS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(network).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if out.status.success() { Ok(value) } else { Err(value) }
}

fn ours(command: Command, cid: &str, ifname: &str, network: &Value) -> Result<Value, String> {
    let inv = invocation(command, cid, ifname, "");
    let request = Request::new(network, &inv).unwrap().unwrap();
    let result = match command {
        Command::Add => ipam::add(&request).map(|r| r.to_value("1.0.0".parse().unwrap()).unwrap()),
        Command::Del => ipam::del(&request).map(|()| Value::Null),
        _ => ipam::check(&request).map(|()| Value::Null),
    };
    result.map_err(|e| e.reply().msg)
}

fn address(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().to_owned()
}

#[test]
fn host_local_shares_one_range_with_the_reference_plugin() {
    let dir = plexus_sim::scratch("ipam-shared").unwrap();
    let network = json!({"cniVersion": "1.0.0", "name": "shared",
        "ipam": {"type": "host-local", "dataDir": dir.path(), "ranges": [[{"subnet": "10.70.0.0/28"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}});
    // 13 addresses (.2 to .14; .1 is the gateway, .15 the broadcast), taken in turns.
    let mut taken = Vec::new();
    for i in 0..13 {
        let cid = format!("cid-{i}");
        let result = if i % 2 == 0 {
            let result = ours(Command::Add, &cid, "net1", &network).unwrap();
            assert_eq!(result["ips"][0]["gateway"], "10.70.0.1");
            assert_eq!(result["routes"], json!([{"dst": "0.0.0.0/0"}]));
            result
        } else {
            reference("host-local", Command::Add, &cid, "net1", &network).unwrap()
        };
        taken.push(address(&result));
    }
    // Round-robin continues across the two: each starts after the other's last address.
    let want: Vec<String> = (2..=14).map(|n| format!("10.70.0.{n}/28")).collect();
    assert_eq!(taken, want);
    // Both see the range as full.
    let err = ours(Command::Add, "cid-x", "net1", &network).unwrap_err();
    assert!(err.contains("no address available in range set 10.70.0.1-10.70.0.14"), "{err}");
    assert!(reference("host-local", Command::Add, "cid-x", "net1", &network).is_err());
    // Each releases the other's reservations (the files are the same format).
    reference("host-local", Command::Del, "cid-0", "net1", &network).unwrap();
    ours(Command::Del, "cid-1", "net1", &network).unwrap();
    let store = dir.path().join("shared");
    assert!(!store.join("10.70.0.2").exists() && !store.join("10.70.0.3").exists());
    assert_eq!(std::fs::read_to_string(store.join("10.70.0.4")).unwrap(), "cid-2\r\nnet1");
    let again: BTreeSet<String> = [
        address(&reference("host-local", Command::Add, "cid-y", "net1", &network).unwrap()),
        address(&ours(Command::Add, "cid-z", "net1", &network).unwrap()),
    ]
    .into();
    assert_eq!(again, ["10.70.0.2/28".to_owned(), "10.70.0.3/28".to_owned()].into());
    ours(Command::Check, "cid-z", "net1", &network).unwrap();
    let err = ours(Command::Check, "cid-0", "net1", &network).unwrap_err();
    assert!(err.contains("holds no address"), "{err}");
    // A second ADD for the same interface is refused, as the reference refuses it.
    let err = ours(Command::Add, "cid-z", "net1", &network).unwrap_err();
    assert!(err.contains("duplicate allocation"), "{err}");
    assert!(reference("host-local", Command::Add, "cid-y", "net1", &network).is_err());
}

#[test]
fn host_local_dual_stack_requested_addresses_and_legacy_keys_match_the_reference() {
    let dir = plexus_sim::scratch("ipam-dual").unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.0.0.53\nsearch a.example b.example\noptions ndots:2\n").unwrap();
    let conf = |name: &str, ipam: Value| {
        let mut ipam = ipam;
        ipam["dataDir"] = json!(dir.path());
        ipam["type"] = json!("host-local");
        json!({"cniVersion": "1.0.0", "name": name, "ipam": ipam})
    };
    let dual = |name: &str| {
        conf(
            name,
            json!({"ranges": [[{"subnet": "10.80.0.0/24", "rangeStart": "10.80.0.100", "rangeEnd": "10.80.0.110"}],
                              [{"subnet": "fd80::/64", "gateway": "fd80::fe"}]],
                   "resolvConf": resolv}),
        )
    };
    let mine = ours(Command::Add, "c1", "net1", &dual("mine")).unwrap();
    let theirs = reference("host-local", Command::Add, "c1", "net1", &dual("theirs")).unwrap();
    assert_eq!(mine, theirs, "the same config gives the same result");
    assert_eq!(mine["ips"][1], json!({"address": "fd80::1/64", "gateway": "fd80::fe"}));
    assert_eq!(mine["dns"]["search"], json!(["a.example", "b.example"]));

    // A requested address (runtimeConfig.ips), and the old single-range keys.
    let mut legacy = conf("legacy", json!({"subnet": "10.90.0.0/24", "gateway": "10.90.0.254"}));
    legacy["runtimeConfig"] = json!({"ips": ["10.90.0.77"]});
    let got = ours(Command::Add, "c2", "net1", &legacy).unwrap();
    assert_eq!(got["ips"][0], json!({"address": "10.90.0.77/24", "gateway": "10.90.0.254"}));
    let err = ours(Command::Add, "c3", "net1", &legacy).unwrap_err();
    assert!(err.contains("10.90.0.77 is not available"), "{err}");
    legacy["runtimeConfig"] = json!({"ips": ["10.91.0.1"]});
    let err = ours(Command::Add, "c3", "net1", &legacy).unwrap_err();
    assert!(err.contains("10.91.0.1 is in no configured range"), "{err}");

    for (ipam, want) in [
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}]]}),
            "ranges[0][0].rangeStart: 10.2.0.1 is not in 10.1.0.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/31"}]]}),
            "ranges[0][0].subnet: 10.1.0.0/31 has too few addresses",
        ),
        (
            json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]}),
            "ranges[0]: mixes IPv4 and IPv6",
        ),
        (json!({}), "ranges: missing"),
        (json!({"ranges": []}), "ranges: is empty: no IP ranges specified"),
    ] {
        let err = ours(Command::Add, "c4", "net1", &conf("bad", ipam)).unwrap_err();
        assert!(err.contains(want), "{err} should contain {want}");
    }
    // The reference refuses an empty list too (an ADD without an address is none).
    let err =
        reference("host-local", Command::Add, "c4", "net1", &conf("bad", json!({"ranges": []}))).unwrap_err();
    assert!(err["msg"].as_str().unwrap_or_default().contains("no IP ranges specified"), "{err}");
}

#[test]
fn static_matches_the_reference_static_plugin() {
    let network = json!({"cniVersion": "1.0.0", "name": "st",
        "ipam": {"type": "static",
                 "addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}, {"address": "fd10::5/64"}],
                 "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254"}],
                 "dns": {"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"]}}});
    let mine = ours(Command::Add, "c1", "net1", &network).unwrap();
    let theirs = reference("static", Command::Add, "c1", "net1", &network).unwrap();
    assert_eq!(mine, theirs);
    let mut with_runtime = network.clone();
    with_runtime["runtimeConfig"] = json!({"ips": ["10.10.0.9/24"]});
    let mine = ours(Command::Add, "c1", "net1", &with_runtime).unwrap();
    assert_eq!(mine["ips"][2]["address"], "10.10.0.9/24");
    let err =
        ours(Command::Add, "c1", "net1", &json!({"name": "st", "ipam": {"type": "static"}})).unwrap_err();
    assert!(err.contains("addresses: none given"), "{err}");
}
