//! The meta-plugin end to end, in real network namespaces, with Debian's reference plugins as
//! delegates (bridge, macvlan on a veth parent, ptp, host-local, static, tuning).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, failed, ok};
use serde_json::{Value, json};

/// A veth in the host namespace for macvlan to sit on.
fn macvlan_parent(node: &Node, name: &str) {
    node.ip_host(&["link", "add", name, "type", "veth", "peer", "name", &format!("{name}p")]);
    node.ip_host(&["link", "set", name, "up"]);
}

fn macvlan_conf(name: &str, master: &str, address: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": master, "mode": "bridge",
           "ipam": {"type": "static", "addresses": [{"address": address}]}})
}

#[test]
fn cluster_network_plus_two_secondaries_then_del() {
    let node = Node::new("cni-three");
    macvlan_parent(&node, "pxm0");
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr0", "10.10.0.0/24"));
    node.write_conf("20-macvlan.conf", macvlan_conf("macnet", "pxm0", "192.168.50.5/24"));
    node.write_conf(
        "30-ptp.conflist",
        json!({"cniVersion": "1.0.0", "name": "ptpnet", "plugins": [
            {"type": "ptp", "ipam": {"type": "host-local", "subnet": "10.20.0.0/24", "dataDir": node.ipam_dir()}}]}),
    );
    // The caller speaks 0.4.0: the cluster network's 1.0.0 result comes back converted.
    let meta = node.meta(
        json!({"cniVersion": "0.4.0", "clusterNetwork": "cluster", "defaultNetworks": ["macnet", "ptpnet"]}),
    );

    let result = ok(&node.call(&node.env("ADD", "c1", None), &meta, false));
    assert_eq!(result["cniVersion"], "0.4.0");
    assert_eq!(result["ips"][0]["version"], "4");
    assert!(result["ips"][0]["address"].as_str().unwrap().starts_with("10.10.0."), "{result}");
    let addrs = node.pod_addrs();
    assert_eq!(addrs.keys().collect::<Vec<_>>(), ["eth0", "net1", "net2"]);
    assert!(addrs["eth0"][0].starts_with("10.10.0."));
    assert_eq!(addrs["net1"], ["192.168.50.5/24"]);
    assert!(addrs["net2"][0].starts_with("10.20.0."));
    assert_eq!(node.reserved_ips().len(), 2);
    assert!(node.cni_dir().join("c1").exists(), "the DEL cache");

    ok(&node.call(&node.env("DEL", "c1", None), &meta, false));
    assert!(node.pod_addrs().is_empty(), "{:?}", node.pod_addrs());
    assert!(node.reserved_ips().is_empty(), "host-local released its addresses");
    assert!(!node.cni_dir().join("c1").exists());
    // DEL again, and DEL of something never added: success.
    ok(&node.call(&node.env("DEL", "c1", None), &meta, false));
    ok(&node.call(&node.env("DEL", "never-added", None), &meta, false));
    node.finish();
}

#[test]
fn a_conflist_chains_prev_result_and_check_checks_every_attachment() {
    let node = Node::new("cni-chain");
    let mut bridge = node.bridge_conf("x", "pxbr1", "10.30.0.0/24");
    bridge.as_object_mut().unwrap().remove("name");
    bridge.as_object_mut().unwrap().remove("cniVersion");
    node.write_conf(
        "10-chain.conflist",
        json!({"cniVersion": "1.0.0", "name": "chained", "plugins": [bridge, {"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}]}),
    );
    node.write_conf("20-macvlan.conf", macvlan_conf("macnet", "pxm1", "192.168.60.5/24"));
    macvlan_parent(&node, "pxm1");
    let meta = node.meta(json!({"clusterNetwork": "chained", "defaultNetworks": ["macnet"]}));

    let result = ok(&node.call(&node.env("ADD", "c2", None), &meta, false));
    assert!(result["ips"][0].get("version").is_none(), "1.0.0 IPs carry no version");
    let links = node.ip_json(&node.pod, &["link", "show", "eth0"]);
    assert_eq!(links[0]["mtu"], 1400, "tuning ran on the bridge plugin's result");
    ok(&node.call(&node.env("CHECK", "c2", None), &meta, false));

    // The secondary's interface disappears: CHECK says which network is wrong.
    node.ip_json(&node.pod, &["link", "del", "net1"]);
    let err = failed(&node.call(&node.env("CHECK", "c2", None), &meta, false));
    assert!(err["msg"].as_str().unwrap().contains("network macnet"), "{err}");
    ok(&node.call(&node.env("DEL", "c2", None), &meta, false));
    node.finish();
}

#[test]
fn a_failed_delegate_rolls_back_every_attachment_and_names_the_network() {
    let node = Node::new("cni-rollback");
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr2", "10.40.0.0/24"));
    node.write_conf(
        "20-ptp.conf",
        json!({"cniVersion": "1.0.0", "name": "ptpnet", "type": "ptp",
               "ipam": {"type": "host-local", "subnet": "10.41.0.0/24", "dataDir": node.ipam_dir()}}),
    );
    // Its master does not exist: macvlan fails after two networks were attached.
    node.write_conf("30-broken.conf", macvlan_conf("broken", "no-such-link", "192.168.70.5/24"));
    let meta = node.meta(json!({"clusterNetwork": "cluster", "defaultNetworks": ["ptpnet", "broken"]}));

    let err = failed(&node.call(&node.env("ADD", "c3", None), &meta, false));
    let msg = err["msg"].as_str().unwrap();
    assert!(msg.starts_with("network broken (net2)"), "{err}");
    assert!(node.pod_addrs().is_empty(), "nothing left in the pod: {:?}", node.pod_addrs());
    assert!(node.reserved_ips().is_empty(), "no address left reserved: {:?}", node.reserved_ips());
    // The reference macvlan's DEL fails without its master ("Link not found"): the entry
    // stays for the runtime's DEL, which reports it and, without retryDeleteOnError, lets go.
    assert!(node.cni_dir().join("c3").exists(), "kept: an undo failed");
    let err = failed(&node.call(&node.env("DEL", "c3", None), &meta, false));
    assert!(err["msg"].as_str().unwrap().contains("network broken"), "{err}");
    assert!(!node.cni_dir().join("c3").exists());
    ok(&node.call(&node.env("DEL", "c3", None), &meta, false));
    node.finish();
}

#[test]
fn del_works_from_the_cache_alone() {
    let node = Node::new("cni-cache");
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr3", "10.50.0.0/24"));
    node.write_conf(
        "20-ptp.conf",
        json!({"cniVersion": "1.0.0", "name": "ptpnet", "type": "ptp",
        "ipam": {"type": "host-local", "subnet": "10.51.0.0/24", "dataDir": node.ipam_dir()}}),
    );
    let meta = node.meta(json!({"clusterNetwork": "cluster", "defaultNetworks": ["ptpnet"]}));
    ok(&node.call(&node.env("ADD", "c4", None), &meta, false));
    assert_eq!(node.reserved_ips().len(), 2);

    // The confs are gone (a NAD deleted, a config rewritten): DEL still removes everything.
    std::fs::remove_dir_all(node.conf_dir()).unwrap();
    ok(&node.call(&node.env("DEL", "c4", None), &meta, false));
    assert!(node.pod_addrs().is_empty());
    assert!(node.reserved_ips().is_empty());
    node.finish();
}

#[test]
fn pod_annotation_networks_and_default_route_selection() {
    let node = Node::new("cni-route");
    macvlan_parent(&node, "pxm2");
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr4", "10.60.0.0/24"));
    node.cluster.add_nad("tenant", "fast", &macvlan_conf("fast", "pxm2", "192.168.80.5/24"));
    // A NAD with an empty config: the conf in confDir with its name.
    node.write_conf(
        "20-p2p.conf",
        json!({"cniVersion": "1.0.0", "name": "p2p", "type": "ptp",
        "ipam": {"type": "host-local", "subnet": "10.61.0.0/24", "dataDir": node.ipam_dir()}}),
    );
    node.cluster.add_nad("tenant", "p2p", &Value::Null);
    node.cluster.add_pod(
        "tenant",
        "web",
        &[(
            "k8s.v1.cni.cncf.io/networks",
            r#"[{"name": "fast", "interface": "fast0", "default-route": ["192.168.80.1"]}, {"name": "p2p"}]"#,
        )],
    );
    let meta = node.meta(json!({"clusterNetwork": "cluster"}));

    let result = ok(&node.call(&node.env("ADD", "c5", Some(("tenant", "web"))), &meta, true));
    assert!(result["ips"][0]["address"].as_str().unwrap().starts_with("10.60.0."));
    let addrs = node.pod_addrs();
    assert_eq!(addrs.keys().collect::<Vec<_>>(), ["eth0", "fast0", "net2"], "named, else net<position>");
    assert_eq!(
        node.pod_default_routes(),
        [("192.168.80.1".to_owned(), "fast0".to_owned())],
        "only the requested gateway"
    );

    let statuses = node.cluster.statuses.lock().unwrap().clone();
    assert_eq!(statuses.len(), 1);
    let (pod, status) = &statuses[0];
    assert_eq!(pod, "tenant/web");
    let names: Vec<&str> = status.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cluster", "tenant/fast", "tenant/p2p"]);
    assert!(status[0].default);
    assert_eq!(status[1].interface.as_deref(), Some("fast0"));
    assert_eq!(status[1].ips, ["192.168.80.5"]);
    assert_eq!(status[1].gateway, ["192.168.80.1"]);
    assert!(status[1].mac.is_some());
    let events = node.cluster.events.lock().unwrap().clone();
    assert_eq!(events.len(), 3);
    // Multus's exact text: the addresses with their prefixes, as Go prints a list.
    assert_eq!(events[1].1, "Add fast0 [192.168.80.5/24] from tenant/fast", "{events:?}");

    ok(&node.call(&node.env("DEL", "c5", Some(("tenant", "web"))), &meta, true));
    assert!(node.pod_addrs().is_empty());
    node.finish();
}

#[test]
fn a_pods_ips_and_mac_reach_a_network_without_those_capabilities_through_cni_args() {
    // Multus's examples/macvlan-pod.yml: static IPAM with no addresses, no `ips`/`mac`
    // capability; the pod's selection gives both, and "gateway", which Multus ignores.
    let node = Node::new("cni-args");
    macvlan_parent(&node, "pxm3");
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr5", "10.62.0.0/24"));
    node.cluster.add_nad(
        "tenant",
        "macvlan-conf",
        &json!({"cniVersion": "0.3.1", "type": "macvlan", "master": "pxm3", "mode": "bridge",
                "ipam": {"type": "static"}}),
    );
    node.cluster.add_pod(
        "tenant",
        "samplepod",
        &[(
            "k8s.v1.cni.cncf.io/networks",
            r#"[{"name": "macvlan-conf", "ips": ["10.1.1.101/24"], "mac": "c2:b0:57:49:47:f1",
                 "gateway": ["10.1.1.1"]}]"#,
        )],
    );
    let meta = node.meta(json!({"clusterNetwork": "cluster"}));
    ok(&node.call(&node.env("ADD", "c9", Some(("tenant", "samplepod"))), &meta, true));
    assert_eq!(node.pod_addrs()["net1"], ["10.1.1.101/24"]);
    let link = node.ip_json(&node.pod, &["link", "show", "net1"]);
    assert_eq!(link[0]["address"], "c2:b0:57:49:47:f1");
    ok(&node.call(&node.env("DEL", "c9", Some(("tenant", "samplepod"))), &meta, true));
    assert!(node.pod_addrs().is_empty());
    node.finish();
}

#[test]
fn the_auxiliary_cni_chain_runs_on_the_cluster_interface_for_every_pod() {
    // auxiliaryCNIChainName: the confs of that subdirectory, next to the cluster network's
    // file, chained after passthru on eth0 (here tuning, setting the MTU).
    let node = Node::new("cni-aux");
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr6", "10.63.0.0/24"));
    let chain = node.conf_dir().join("vendor-cni-chain");
    std::fs::create_dir_all(&chain).unwrap();
    std::fs::write(
        chain.join("10-tuning.conf"),
        json!({"cniVersion": "1.0.0", "name": "tune", "type": "tuning", "mtu": 1380}).to_string(),
    )
    .unwrap();
    let cluster_file = node.conf_dir().join("10-cluster.conf");
    let meta =
        node.meta(json!({"clusterNetwork": cluster_file, "auxiliaryCNIChainName": "vendor-cni-chain"}));
    let result = ok(&node.call(&node.env("ADD", "c10", None), &meta, false));
    assert!(
        result["ips"][0]["address"].as_str().unwrap().starts_with("10.63.0."),
        "the cluster's result: {result}"
    );
    let eth0 = node.ip_json(&node.pod, &["link", "show", "eth0"]);
    assert_eq!(eth0[0]["mtu"], 1380, "the chain ran on eth0");
    ok(&node.call(&node.env("DEL", "c10", None), &meta, false));
    assert!(node.pod_addrs().is_empty());
    assert!(node.reserved_ips().is_empty());

    // A name that would leave the directory is refused.
    let bad = node.meta(json!({"clusterNetwork": cluster_file, "auxiliaryCNIChainName": "../x"}));
    let out = failed(&node.call(&node.env("ADD", "c11", None), &bad, false));
    assert!(out["msg"].as_str().unwrap().contains("auxiliaryCNIChainName"), "{out}");
    node.finish();
}

#[test]
fn bad_selections_fail_before_anything_is_created() {
    let node = Node::new("cni-refuse");
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr5", "10.70.0.0/24"));
    node.cluster.add_nad("other", "net-a", &macvlan_conf("net-a", "pxm9", "192.168.90.5/24"));
    node.cluster.add_nad("tenant", "net-a", &macvlan_conf("net-a", "pxm9", "192.168.90.5/24"));
    let cases = [
        ("dup", r#"[{"name": "net-a", "interface": "eth0"}]"#, "interface name \"eth0\" requested twice"),
        ("iso", "other/net-a", "namespace isolation"),
        ("missing", "nope", "cannot find a network-attachment-definition (nope) in namespace (tenant)"),
        ("bad", "net-a@way-too-long-name0", "invalid interface name"),
        (
            "gw",
            r#"[{"name": "net-a", "default-route": ["192.168.90.1"]}, {"name": "net-a", "interface": "x1", "default-route": ["192.168.90.2"]}]"#,
            "more than one IPv4 gateway",
        ),
    ];
    let meta = node
        .meta(json!({"clusterNetwork": "cluster", "namespaceIsolation": true, "globalNamespaces": "shared"}));
    for (pod, annotation, want) in cases {
        node.cluster.add_pod("tenant", pod, &[("k8s.v1.cni.cncf.io/networks", annotation)]);
        let err = failed(&node.call(&node.env("ADD", pod, Some(("tenant", pod))), &meta, true));
        assert!(err["msg"].as_str().unwrap().contains(want), "{pod}: {err}");
        assert!(node.pod_addrs().is_empty(), "{pod}: nothing was created");
        assert!(node.reserved_ips().is_empty());
    }
    let warnings: Vec<String> =
        node.cluster.events.lock().unwrap().iter().filter(|e| e.2).map(|e| e.0.clone()).collect();
    assert_eq!(warnings, ["missing/NoNetworkFound"]);
    let message = node.cluster.events.lock().unwrap().iter().find(|e| e.2).unwrap().1.clone();
    assert_eq!(
        message,
        "cannot find a network-attachment-definition (nope) in namespace (tenant): \
         network-attachment-definitions.k8s.cni.cncf.io \"nope\" not found"
    );
    node.finish();
}

#[test]
fn system_namespaces_skip_default_networks_and_the_annotation_replaces_the_cluster_network() {
    let node = Node::new("cni-defnet");
    node.write_conf("10-cluster.conf", node.bridge_conf("cluster", "pxbr6", "10.80.0.0/24"));
    node.write_conf(
        "20-ptp.conf",
        json!({"cniVersion": "1.0.0", "name": "ptpnet", "type": "ptp",
        "ipam": {"type": "host-local", "subnet": "10.81.0.0/24", "dataDir": node.ipam_dir()}}),
    );
    node.cluster.add_nad("kube-system", "alt", &node.bridge_conf("alt", "pxbr7", "10.82.0.0/24"));
    node.cluster.add_pod("kube-system", "dns", &[]);
    node.cluster.add_pod("tenant", "app", &[("v1.multus-cni.io/default-network", "alt")]);
    let meta = node.meta(json!({"clusterNetwork": "cluster", "defaultNetworks": ["ptpnet"]}));

    ok(&node.call(&node.env("ADD", "s1", Some(("kube-system", "dns"))), &meta, true));
    assert_eq!(node.pod_addrs().keys().collect::<Vec<_>>(), ["eth0"], "no defaultNetworks in kube-system");
    ok(&node.call(&node.env("DEL", "s1", Some(("kube-system", "dns"))), &meta, true));

    let result = ok(&node.call(&node.env("ADD", "s2", Some(("tenant", "app"))), &meta, true));
    assert!(
        result["ips"][0]["address"].as_str().unwrap().starts_with("10.82.0."),
        "the annotation's network: {result}"
    );
    assert_eq!(node.pod_addrs().keys().collect::<Vec<_>>(), ["eth0", "net1"]);
    ok(&node.call(&node.env("DEL", "s2", Some(("tenant", "app"))), &meta, true));

    // What a pod names is a NAD or a conf by name, never a file or directory on the node.
    node.cluster.add_pod("tenant", "probe", &[("v1.multus-cni.io/default-network", "etc/cni")]);
    let err = failed(&node.call(&node.env("ADD", "s3", Some(("tenant", "probe"))), &meta, true));
    let msg = err["msg"].as_str().unwrap();
    assert!(msg.contains("no NAD, and no conf named \"cni\"") && !msg.contains("directory"), "{err}");
    node.finish();
}

#[test]
fn a_failed_del_keeps_the_cache_only_with_retry_delete_on_error() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::new("cni-retry");
    // A delegate whose ADD works and whose DEL fails, as a plugin binary would.
    let bin = node.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("flaky");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat > /dev/null\nif [ \"$CNI_COMMAND\" = DEL ]; then\n  echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"busy, try later\"}'\n  exit 1\nfi\necho '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.95.0.2/24\"}]}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    node.write_conf("10-flaky.conf", json!({"cniVersion": "1.0.0", "name": "flaky", "type": "flaky"}));

    for (retry, cache_kept) in [(true, true), (false, false)] {
        let meta = node.meta(json!({"clusterNetwork": "flaky", "binDir": bin, "retryDeleteOnError": retry}));
        let id = format!("r-{retry}");
        ok(&node.call(&node.env("ADD", &id, None), &meta, false));
        let err = failed(&node.call(&node.env("DEL", &id, None), &meta, false));
        assert_eq!(err["code"], 11, "the delegate's own error: {err}");
        assert!(err["msg"].as_str().unwrap().contains("network flaky"), "{err}");
        assert_eq!(node.cni_dir().join(&id).exists(), cache_kept, "retryDeleteOnError = {retry}");
    }
    node.finish();
}
