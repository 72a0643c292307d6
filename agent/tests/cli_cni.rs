//! The agent serving CNI (root): the `plexus` binary forwards to the agent's socket, the agent
//! attaches a simulated VF with its in-process `sriov` delegate, reports the call's phases in
//! `trace` and on /metrics; killed, the binary fails ADD at once and does DEL itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::agent_node::{Node, free_port, wait_for};
use common::plexus_binary;
use plexus_sim::apiserver::ApiStandIn;
use plexus_sim::kubelet::KubeletStandIn;
use serde_json::{Value, json};

/// Every thread of process `pid` has NET_ADMIN, NET_RAW, SYS_ADMIN, SYS_PTRACE and CHOWN and
/// nothing else in its effective, permitted and bounding sets, and none inheritable or ambient.
fn assert_keeps_only_its_capabilities(pid: u32) {
    // Bits of linux/capability.h: CHOWN 0, NET_ADMIN 12, NET_RAW 13, SYS_PTRACE 19, SYS_ADMIN 21.
    let kept: u64 = 1 | (1 << 12) | (1 << 13) | (1 << 19) | (1 << 21);
    let tasks: Vec<_> =
        std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().map(|t| t.unwrap().path()).collect();
    assert!(tasks.len() > 1, "the runtime's threads too");
    for task in tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let set = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        for (name, want) in
            [("CapEff:", kept), ("CapPrm:", kept), ("CapBnd:", kept), ("CapInh:", 0), ("CapAmb:", 0)]
        {
            assert_eq!(set(name), want, "{name} of {}: {:#x}", task.display(), set(name));
        }
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_calls_go_through_the_agent_and_survive_its_death() {
    let mut node = Node::new("death");
    let _kubelet = KubeletStandIn::start(&node.node.dir().join("kubelet")).await.unwrap();
    let metrics = free_port();
    let mut agent = node.agent(&metrics);
    let socket = node.socket_dir().join("plexus.sock");
    wait_for("the agent's socket", || socket.exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(node.socket_dir()).unwrap().permissions().mode() & 0o777, 0o700);
    assert_keeps_only_its_capabilities(agent.id());

    // Through the agent: the binary has no view of the node (no PLEXUS_SYSFS_ROOT, and /sys
    // has no such VF), so only the agent can have attached it.
    let first = node.pod();
    let (code, result, _) = tokio::task::block_in_place(|| node.plexus("ADD", "cid-1", &first, false));
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["ips"][0]["address"], "10.21.0.2/24");
    assert!(!node.vf_netdev_in_host());

    let (call, phases) = node.slowest_call();
    assert_eq!((call["command"].as_str(), call["outcome"].as_str()), (Some("ADD"), Some("ok")));
    for phase in [
        "networks",
        "cache",
        "sriov lookup",
        "sriov record",
        "sriov move",
        "sriov ipam",
        "delegate sriov-net",
    ] {
        assert!(phases.iter().any(|p| p == phase), "{phase} missing from {phases:?}");
    }
    let text = tokio::task::block_in_place(|| http_get(&metrics, "/metrics"));
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    assert!(
        text.contains(r#"plexus_cni_phase_duration_seconds_count{command="ADD",phase="sriov move"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"plexus_cni_calls_total{command="ADD",outcome="ok"} 1"#), "{text}");

    // The agent dies: ADD fails at once, naming it; DEL is done by the binary from its cache.
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(socket.exists(), "a dead agent's socket stays, so the binary can tell it is down");
    let second = node.pod();
    let (code, error, took) = tokio::task::block_in_place(|| node.plexus("ADD", "cid-2", &second, true));
    assert_eq!((code, error["code"].as_u64()), (1, Some(11)), "{error}");
    assert!(error["msg"].as_str().unwrap().contains("the plexus agent is not running"), "{error}");
    assert!(took < Duration::from_secs(2), "failed at once, not after a timeout: {took:?}");
    let (code, out, _) = tokio::task::block_in_place(|| node.plexus("DEL", "cid-1", &first, true));
    assert_eq!(code, 0, "{out}");
    assert!(node.vf_netdev_in_host(), "the VF was restored without the agent");

    // A new agent takes over the socket.
    let mut agent = node.agent(&free_port());
    wait_for("the new agent", || std::os::unix::net::UnixStream::connect(&socket).is_ok());
    let (code, result, _) = tokio::task::block_in_place(|| node.plexus("ADD", "cid-3", &second, false));
    assert_eq!(code, 0, "{result}");
    let (code, out, _) = tokio::task::block_in_place(|| node.plexus("DEL", "cid-3", &second, false));
    assert_eq!(code, 0, "{out}");
    assert!(node.vf_netdev_in_host());
    Command::new("kill").args(["-TERM", &agent.id().to_string()]).status().unwrap();
    let mut stderr = String::new();
    agent.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(agent.wait().unwrap().success(), "{stderr}");
}

/// The `plexus` binary alone, with `stdin` and `CNI_COMMAND` = `command`: its exit code and
/// stdout as JSON.
fn run_plexus(command: &str, stdin: &[u8]) -> (i32, Value) {
    let mut child = Command::new(plexus_binary())
        .env_clear()
        .envs([("CNI_COMMAND", command), ("CNI_CONTAINERID", "shim-1"), ("CNI_IFNAME", "eth0")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn the_binary_tells_no_agent_a_dead_agent_and_a_call_too_large_for_the_agent_apart() {
    let dir = plexus_sim::scratch("shim").unwrap();
    let socket = dir.path().join("plexus.sock");
    let config = json!({"cniVersion": "1.0.0", "name": "n", "type": "plexus", "daemonSocketDir": dir.path()});
    let config = config.to_string().into_bytes();

    // No socket: no agent, and plexus-standalone answers (VERSION needs no node).
    let (code, answer) = run_plexus("VERSION", &config);
    assert_eq!(code, 0, "{answer}");
    assert!(answer["supportedVersions"].as_array().is_some_and(|v| !v.is_empty()), "{answer}");

    // A socket nobody listens on any more: the agent is down, and ADD says so with why.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let (code, error) = run_plexus("ADD", &config);
    assert_eq!((code, error["code"].as_u64()), (1, Some(11)), "{error}");
    assert!(error["msg"].as_str().unwrap().contains("the plexus agent is not running"), "{error}");
    assert_eq!(error["details"], "Connection refused (os error 111)", "{error}");
    std::fs::remove_file(&socket).unwrap();

    // A config within the limit whose call (config and environment) is beyond it: refused
    // once connected, naming the size, and never sent.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let max = usize::try_from(plexus_cni::forward::MAX_MESSAGE).unwrap();
    let head = format!(r#"{{"cniVersion": "1.0.0", "daemonSocketDir": "{}", "pad": ""#, dir.path().display());
    let mut huge = head.into_bytes();
    huge.resize(max - 2, b'x');
    huge.extend_from_slice(b"\"}");
    assert_eq!(huge.len(), max);
    let (code, error) = run_plexus("ADD", &huge);
    assert_eq!((code, error["code"].as_u64()), (1, Some(7)), "{error}");
    let msg = error["msg"].as_str().unwrap();
    assert!(msg.starts_with("the call (") && msg.contains("is larger than"), "{error}");
    listener.set_nonblocking(true).unwrap();
    let (mut sent, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    sent.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "nothing was sent");
}

#[test]
fn the_binary_ends_with_a_whole_answer_not_with_the_agents_end_of_file() {
    // The agent answers as soon as it can and closes only once it has finished the call: an
    // agent stand-in that answers and holds the connection open until the test lets it go.
    let dir = plexus_sim::scratch("shim-whole").unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("plexus.sock")).unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let agent = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        let request: Value = serde_json::from_slice(&request).unwrap();
        // Written in two pieces: the first is not yet an answer.
        let answer = json!({"stdout": r#"{"cniVersion":"1.0.0","ips":[]}"#, "code": 0}).to_string();
        let (head, tail) = answer.split_at(answer.len() / 2);
        stream.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        stream.write_all(tail.as_bytes()).unwrap();
        let _ = released.recv_timeout(Duration::from_secs(60));
        request
    });
    let config = json!({"cniVersion": "1.0.0", "name": "n", "type": "plexus", "daemonSocketDir": dir.path()});
    let started = std::time::Instant::now();
    let (code, result) = run_plexus("ADD", config.to_string().as_bytes());
    let took = started.elapsed();
    release.send(()).unwrap();
    let request = agent.join().unwrap();
    assert_eq!(request["env"]["CNI_COMMAND"], "ADD", "{request}");
    assert_eq!((code, &result), (0, &json!({"cniVersion": "1.0.0", "ips": []})));
    assert!(took < Duration::from_secs(30), "the binary waited for the connection to close: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_right_after_an_adds_answer_finds_the_adds_result() {
    // The agent answers an ADD before it saves the result for DEL and CHECK; the calls that
    // follow must still find it. A plugin that records what it gets, as the cluster network.
    let mut node = Node::new("after-answer");
    let _kubelet = KubeletStandIn::start(&node.node.dir().join("kubelet")).await.unwrap();
    let bin = node.node.dir().join("bin");
    let seen = node.node.dir().join("seen");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&seen).unwrap();
    let recorder = format!(
        "#!/bin/sh\ncat > {}/$CNI_COMMAND-$CNI_CONTAINERID.json\n\
         [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\": \"1.0.0\", \"ips\": [{{\"address\": \"10.40.0.2/24\"}}]}}'\n\
         exit 0\n",
        seen.display()
    );
    std::fs::write(bin.join("recorder"), recorder).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("recorder"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = json!({"cniVersion": "1.0.0", "name": "recorded", "type": "recorder"});
    std::fs::write(node.node.dir().join("net.d/30-recorded.conf"), conf.to_string()).unwrap();
    let mut meta = node.meta();
    meta["clusterNetwork"] = json!("recorded");
    meta["binDir"] = json!(bin);
    let mut agent = node.agent(&free_port());
    wait_for("the agent's socket", || node.socket_dir().join("plexus.sock").exists());
    let netns = node.pod();
    for i in 0..20 {
        let cid = format!("after-{i}");
        let (code, result, _) = node.plexus_for("ADD", &cid, &netns, false, "", &meta);
        assert_eq!(code, 0, "{result}");
        // CHECK fails an attachment whose result is not cached ("its ADD did not finish").
        let (code, error, _) = node.plexus_for("CHECK", &cid, &netns, false, "", &meta);
        assert_eq!(code, 0, "CHECK right after ADD {i}: {error}");
        let (code, error, _) = node.plexus_for("DEL", &cid, &netns, false, "", &meta);
        assert_eq!(code, 0, "{error}");
        for command in ["CHECK", "DEL"] {
            let got: Value =
                serde_json::from_slice(&std::fs::read(seen.join(format!("{command}-{cid}.json"))).unwrap())
                    .unwrap();
            assert_eq!(got["prevResult"]["ips"][0]["address"], "10.40.0.2/24", "{command} {i}: {got}");
        }
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_64_concurrent_adds_is_queued_not_held_in_memory() {
    let node = Node::new("burst");
    let _kubelet = KubeletStandIn::start(&node.node.dir().join("kubelet")).await.unwrap();
    // A network whose plugin does no kernel work (the reference static IPAM as the plugin),
    // so the burst measures the agent, not the kernel.
    let conf_dir = node.node.dir().join("net.d");
    let noop = json!({"cniVersion": "1.0.0", "name": "noop", "type": "static",
                      "ipam": {"type": "static", "addresses": [{"address": "10.30.0.2/24"}]}});
    std::fs::write(conf_dir.join("20-noop.conf"), noop.to_string()).unwrap();
    let mut meta = node.meta();
    meta["clusterNetwork"] = json!("noop");
    let mut agent = node.agent(&free_port());
    let socket = node.socket_dir().join("plexus.sock");
    wait_for("the agent's socket", || socket.exists());
    let pid = agent.id();
    let burst = |round: usize| {
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let meta = meta.to_string();
                std::thread::spawn(move || {
                    let mut child = Command::new(plexus_binary())
                        .env_clear()
                        .env("CNI_COMMAND", "ADD")
                        .env("CNI_CONTAINERID", format!("burst-{round}-{i}"))
                        .env("CNI_NETNS", "/proc/self/ns/net")
                        .env("CNI_IFNAME", "eth0")
                        .env("CNI_PATH", "/usr/lib/cni")
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap();
                    child.stdin.take().unwrap().write_all(meta.as_bytes()).unwrap();
                    child.wait_with_output().unwrap().status.success()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).filter(|ok| *ok).count()
    };
    let before = peak_rss_kb(pid);
    let first = tokio::task::block_in_place(|| burst(0));
    let after_first = peak_rss_kb(pid);
    let second = tokio::task::block_in_place(|| burst(1));
    let after_second = peak_rss_kb(pid);
    assert_eq!((first, second), (64, 64), "every ADD of both bursts succeeds");
    eprintln!(
        "agent peak RSS: {before} kB at start, {after_first} kB after a burst of 64, {after_second} kB after another"
    );
    assert!(after_first - before < 32 * 1024, "{before} kB -> {after_first} kB");
    assert!(
        after_second - after_first < 4 * 1024,
        "a second burst must not grow the peak: {after_first} -> {after_second} kB"
    );
    let text = String::from_utf8(node.trace(&["--count", "3"]).stdout).unwrap();
    assert_eq!(text.lines().filter(|l| l.contains(" ADD burst-")).count(), 3, "{text}");

    // Calls one after the other, with every serving thread the bursts started waiting: each
    // goes to the thread that served the one before (last come, first served), not round
    // every thread in turn. Told by the threads that ran at all meanwhile.
    let serving_runs = || -> BTreeMap<String, u64> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .filter(|task| std::fs::read_to_string(task.path().join("comm")).unwrap().trim() == "plexus-cni")
            .map(|task| {
                let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap();
                (
                    task.file_name().into_string().unwrap(),
                    stat.split_whitespace().nth(2).unwrap().parse().unwrap(),
                )
            })
            .collect()
    };
    let before = serving_runs();
    assert!(before.len() > 4, "the bursts started serving threads: {before:?}");
    for i in 0..24 {
        let (code, out, _) = node.plexus_for("DEL", &format!("burst-1-{i}"), "", false, "", &meta);
        assert_eq!(code, 0, "{out}");
    }
    let after = serving_runs();
    let ran: Vec<_> = after.iter().filter(|(tid, runs)| before.get(*tid) != Some(runs)).collect();
    assert!(ran.len() <= 2, "24 calls in a row ran on {} of {} threads: {ran:?}", ran.len(), after.len());
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(agent.wait().unwrap().success());
}

/// The single objects the API server was asked for (GETs that are not a list or a watch).
fn object_gets(api: &ApiStandIn) -> Vec<String> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/namespaces/"))
        .map(|r| r.path)
        .collect()
}

/// The names of the links in namespace `netns` (a name or a /run/netns path).
fn links_in(netns: &str) -> Vec<String> {
    let name = Path::new(netns).file_name().unwrap();
    let out = Command::new("ip").arg("-n").arg(name).args(["-o", "link", "show"]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split(": ").nth(1).unwrap().split('@').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kubernetes_pods_get_their_allocated_vfs_from_watched_nads() {
    use plexus_device_plugin::proto::deviceplugin::{
        AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
        PreferredAllocationRequest,
    };
    const RESOURCE: &str = "intel.com/sriov_net";
    let mut node = Node::new("kube");
    let kubelet = KubeletStandIn::start(&node.node.dir().join("kubelet")).await.unwrap();
    let api = ApiStandIn::start().await.unwrap();
    let kubeconfig = node.node.dir().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let noop = json!({"cniVersion": "1.0.0", "name": "noop", "type": "static",
                      "ipam": {"type": "static", "addresses": [{"address": "10.30.0.2/24"}]}});
    std::fs::write(node.node.dir().join("net.d/20-noop.conf"), noop.to_string()).unwrap();
    let mut meta = node.meta();
    meta["clusterNetwork"] = json!("noop");
    let scratch = node.node.dir().to_owned();
    let start_agent = |node: &Node| {
        node.agent_with(
            &free_port(),
            &["--kubeconfig".as_ref(), kubeconfig.as_os_str(), "--node-name".as_ref(), "node-a".as_ref()],
        )
    };
    let mut agent = start_agent(&node);
    let socket = node.socket_dir().join("plexus.sock");

    // The kubelet's part: allocate two VFs of the pool to a pod, as it does before the pod's
    // sandbox exists, and remember them in PodResources.
    let registration = kubelet.wait_for_registration(RESOURCE, 0, Duration::from_secs(10)).await.unwrap();
    let mut plugin = kubelet.plugin(&registration.endpoint).await.unwrap();
    let mut devices = plugin.list_and_watch(Empty {}).await.unwrap().into_inner();
    let free: Vec<String> =
        devices.message().await.unwrap().unwrap().devices.into_iter().map(|d| d.id).collect();
    assert_eq!(free.len(), 6);
    let allocate = async |plugin: &mut plexus_device_plugin::proto::deviceplugin::device_plugin_client::DevicePluginClient<_>,
                          free: &[String],
                          pod: &str| {
        let request = PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: free.to_vec(),
                must_include_device_i_ds: vec![],
                allocation_size: 2,
            }],
        };
        let mut ids = plugin.get_preferred_allocation(request).await.unwrap().into_inner().container_responses[0]
            .device_i_ds
            .clone();
        let request = AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_ids: ids.clone() }] };
        let response = plugin.allocate(request).await.unwrap().into_inner();
        assert!(response.container_responses[0].envs.contains_key("PCIDEVICE_INTEL_COM_SRIOV_NET"));
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        kubelet.pod_resources().assign("tenant", pod, "app", RESOURCE, &refs);
        ids.sort();
        ids
    };
    let web_vfs = allocate(&mut plugin, &free, "web").await;
    assert_ne!(web_vfs[0][..10], web_vfs[1][..10], "one VF on each PF: {web_vfs:?}");

    // The pod and its network appear after the agent started: only the watches can bring them.
    let fast = json!({"cniVersion": "1.0.0", "type": "sriov", "vlan": 40, "dataDir": scratch.join("sriov"),
                      "ipam": {"type": "host-local", "subnet": "10.40.0.0/24", "dataDir": scratch.join("ipam")}});
    api.nad("tenant", "fast", json!({"k8s.v1.cni.cncf.io/resourceName": RESOURCE}), &fast);
    api.pod("tenant", "web", "node-a", json!({"k8s.v1.cni.cncf.io/networks": "fast, fast"}));
    api.pod("tenant", "elsewhere", "node-b", json!({"k8s.v1.cni.cncf.io/networks": "fast"}));
    wait_for("the pod and the NAD to reach the agent's watches", || {
        api.delivered("/api/v1/pods", "web")
            && api.delivered("/apis/k8s.cni.cncf.io/v1/network-attachment-definitions", "fast")
    });
    assert!(!api.delivered("/api/v1/pods", "elsewhere"), "the agent watches the pods of its node only");
    wait_for("the agent's socket", || socket.exists());

    let web = node.pod();
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=tenant;K8S_POD_NAME=web;K8S_POD_UID=uid-web";
    let (code, result, _) =
        tokio::task::block_in_place(|| node.plexus_for("ADD", "cid-web", &web, false, args, &meta));
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["ips"][0]["address"], "10.30.0.2/24", "the cluster network's result");
    let links = links_in(&web);
    assert!(links.contains(&"net1".into()) && links.contains(&"net2".into()), "{links:?}");

    let requests = api.requests();
    let gets = object_gets(&api);
    assert!(gets.is_empty(), "ADD read the pod and the NADs from the watch caches, not by GET: {gets:?}");
    let pod_lists: Vec<_> = requests.iter().filter(|r| r.path == "/api/v1/pods").collect();
    assert!(pod_lists.len() >= 2, "a list, then a watch: {pod_lists:?}");
    assert!(pod_lists.iter().all(|r| r.query["fieldSelector"] == "spec.nodeName=node-a"), "{pod_lists:?}");

    // network-status: the cluster network, then each attachment with the next allocated VF.
    let pod = api.object("/api/v1/namespaces/tenant/pods/web").unwrap();
    let status: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(status.as_array().unwrap().len(), 3, "{status}");
    assert_eq!((status[0]["name"].as_str(), status[0]["default"].as_bool()), (Some("noop"), Some(true)));
    for (i, ifname) in [(1, "net1"), (2, "net2")] {
        assert_eq!(status[i]["name"], "tenant/fast");
        assert_eq!(status[i]["interface"], ifname);
        assert_eq!(status[i]["ips"][0], format!("10.40.0.{}", i + 1), "{status}");
        assert_eq!(status[i]["device-info"]["pci"]["pci-address"], web_vfs[i - 1], "{status}");
    }
    let events: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| format!("{} {}", r.body["reason"].as_str().unwrap(), r.body["message"].as_str().unwrap()))
        .collect();
    assert!(
        events.contains(&"AddedInterface Add net2 [10.40.0.3/24] from tenant/fast".to_owned()),
        "{events:?}"
    );
    let (_, phases) = node.slowest_call();
    for phase in ["pod", "networks", "devices", "delegate tenant/fast", "status"] {
        assert!(phases.iter().any(|p| p == phase), "{phase} missing from {phases:?}");
    }

    // Killed and restarted: the new agent lists again and takes over both pods' calls.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let seen = kubelet.registrations().len();
    let mut agent = start_agent(&node);
    let registration = kubelet.wait_for_registration(RESOURCE, seen, Duration::from_secs(10)).await.unwrap();
    let mut plugin = kubelet.plugin(&registration.endpoint).await.unwrap();
    wait_for("the new agent", || std::os::unix::net::UnixStream::connect(&socket).is_ok());
    let left: Vec<String> = free.iter().filter(|id| !web_vfs.contains(id)).cloned().collect();
    let db_vfs = allocate(&mut plugin, &left, "db").await;
    api.pod("tenant", "db", "node-a", json!({"k8s.v1.cni.cncf.io/networks": "fast"}));
    wait_for("the new agent's watch to bring the pod", || api.delivered("/api/v1/pods", "db"));
    let db = node.pod();
    let db_args = "K8S_POD_NAMESPACE=tenant;K8S_POD_NAME=db;K8S_POD_UID=uid-db";
    let (code, result, _) =
        tokio::task::block_in_place(|| node.plexus_for("ADD", "cid-db", &db, false, db_args, &meta));
    assert_eq!(code, 0, "{result}");
    let pod = api.object("/api/v1/namespaces/tenant/pods/db").unwrap();
    let status = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap();
    assert!(status.contains(&db_vfs[0]), "the first of the pod's VFs: {status}");
    assert!(object_gets(&api).is_empty(), "{:?}", object_gets(&api));

    let (code, out, _) =
        tokio::task::block_in_place(|| node.plexus_for("DEL", "cid-web", &web, false, args, &meta));
    assert_eq!(code, 0, "{out}");
    assert_eq!(links_in(&web), ["lo"]);

    // The pod object is deleted; 20-60 s later the kubelet's sandbox GC sends DEL twice more,
    // with an empty CNI_NETNS, through the agent: done at once, no API request.
    let deliveries = api.deliveries("/api/v1/pods", "web");
    api.delete("/api/v1/namespaces/tenant/pods/web");
    wait_for("the deletion to reach the agent's watch", || {
        api.deliveries("/api/v1/pods", "web") > deliveries
    });
    let before = api.requests().len();
    for _ in 0..2 {
        let (code, out, _) =
            tokio::task::block_in_place(|| node.plexus_for("DEL", "cid-web", "", false, args, &meta));
        assert_eq!(code, 0, "{out}");
    }
    let asked: Vec<String> =
        api.requests()[before..].iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(asked.is_empty(), "a finished DEL asks the API server nothing: {asked:?}");
    let calls: Value =
        serde_json::from_slice(&node.trace(&["--count", "256", "--output", "json"]).stdout).unwrap();
    let gc_dels: Vec<f64> = calls
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["command"] == "DEL" && c["container_id"] == "cid-web")
        .map(|c| c["total"].as_f64().unwrap())
        .collect();
    assert_eq!(gc_dels.len(), 3, "{calls}");
    // The first DEL undid the attachments; the two after it are the GC's.
    let mut sorted = gc_dels.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(sorted[1] < 0.010, "the GC DELs took {gc_dels:?} s in the agent");
    eprintln!("DELs of cid-web in the agent (s): {gc_dels:?}");
    // A DEL that still has a namespace but no cache entry, of a pod that is gone: rebuilt from
    // nothing, without waiting for the pod or asking the API server.
    let before = api.requests().len();
    let (code, out, took) =
        tokio::task::block_in_place(|| node.plexus_for("DEL", "cid-web", &web, false, args, &meta));
    assert_eq!(code, 0, "{out}");
    assert!(api.requests()[before..].is_empty() && took < Duration::from_millis(400), "{took:?}");
    // The agent down during DEL: the binary does it from its cache, with its own view of the node.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let (code, out, _) =
        tokio::task::block_in_place(|| node.plexus_for("DEL", "cid-db", &db, true, db_args, &meta));
    assert_eq!(code, 0, "{out}");
    let host = links_in(node.node.netns_name().unwrap());
    for vf in ["ens1f0v0", "ens1f0v1", "ens1f0v2", "ens1f1v0", "ens1f1v1", "ens1f1v2"] {
        assert!(host.contains(&vf.to_owned()), "{vf} back on the node under its name: {host:?}");
    }
    assert!(
        !std::fs::read_dir(scratch.join("ipam/fast"))
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().starts_with("10.") }),
        "host-local released every address"
    );
    kubelet.stop().await;
}

/// A root file system with a shell and its libraries, as the node's root is for the agent's
/// container; `files` are put in it too.
fn fake_root(dir: &Path, files: &[(&str, &str, u32)]) {
    use std::os::unix::fs::PermissionsExt;
    let put = |path: &str, from: &Path| {
        let to = dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    };
    put("/bin/sh", Path::new("/bin/dash"));
    let ldd = Command::new("ldd").arg("/bin/dash").output().unwrap();
    for line in String::from_utf8(ldd.stdout).unwrap().lines() {
        let path = line.split_whitespace().find(|w| w.starts_with('/')).unwrap_or_default();
        if !path.is_empty() {
            put(path, Path::new(path));
        }
    }
    for (path, content, mode) in files {
        let to = dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(&to, content).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_chroot_dir_delegates_run_in_the_nodes_root_and_find_its_files() {
    // The primary plugin reads a file that only the node's root has (as flannel reads
    // /run/flannel/subnet.env), and lives in a bin directory only the node's root has.
    let mut node = Node::new("chroot");
    let _kubelet = KubeletStandIn::start(&node.node.dir().join("kubelet")).await.unwrap();
    let root = node.node.dir().join("hostroot");
    let reader = "#!/bin/sh\nread -r address < /run/plexus-test/subnet.env || exit 1\n\
                  [ \"$CNI_COMMAND\" = ADD ] && printf '{\"cniVersion\": \"1.0.0\", \"ips\": [{\"address\": \"%s\"}]}' \"$address\"\n\
                  exit 0\n";
    fake_root(
        &root,
        &[
            ("/run/plexus-test/subnet.env", "10.244.7.3/24\n", 0o644),
            ("/opt/plexus-test/bin/reader", reader, 0o755),
        ],
    );
    let conf = json!({"cniVersion": "1.0.0", "name": "primary", "type": "reader"});
    std::fs::write(node.node.dir().join("net.d/20-primary.conf"), conf.to_string()).unwrap();
    let mut meta = node.meta();
    meta["clusterNetwork"] = json!("primary");
    meta["binDir"] = json!("/opt/plexus-test/bin");
    let socket = node.socket_dir().join("plexus.sock");
    let call = |node: &Node, command: &str, cid: &str, netns: &str| {
        let child = Node::spawn_plexus(node.plexus_command(command, cid, netns, false, ""), &meta);
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap(), serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null))
    };

    // Without --chroot-dir the agent's own root has neither the plugin nor its file.
    let mut agent = node.agent(&free_port());
    wait_for("the agent's socket", || socket.exists());
    let pod = node.pod();
    let (code, error) = tokio::task::block_in_place(|| call(&node, "ADD", "chroot-1", &pod));
    assert_eq!(code, 1, "{error}");
    assert!(error["msg"].as_str().unwrap().contains("\"reader\" not found"), "{error}");
    agent.kill().unwrap();
    agent.wait().unwrap();

    // With it, the plugin runs in the node's root: it finds its file, and so its address.
    let mut agent = node.agent_with(&free_port(), &[std::ffi::OsStr::new("--chroot-dir"), root.as_os_str()]);
    wait_for("the new agent", || std::os::unix::net::UnixStream::connect(&socket).is_ok());
    let pod = node.pod();
    let (code, result) = tokio::task::block_in_place(|| call(&node, "ADD", "chroot-2", &pod));
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["ips"][0]["address"], "10.244.7.3/24");
    let (code, out) = tokio::task::block_in_place(|| call(&node, "DEL", "chroot-2", &pod));
    assert_eq!(code, 0, "{out}");
    Command::new("kill").args(["-TERM", &agent.id().to_string()]).status().unwrap();
    let mut stderr = String::new();
    agent.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(agent.wait().unwrap().success(), "{stderr}");
    assert!(stderr.contains("CAP_SYS_CHROOT") || stderr.contains("sys_chroot"), "kept for chroot: {stderr}");
}
