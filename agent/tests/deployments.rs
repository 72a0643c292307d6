//! The manifests in deployments/ against the code: a flag, path, port or name that drifts
//! apart fails here. Also `install-cni` replacing a running binary (root not needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn deployments() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments")
}

/// Every document of a YAML file, as JSON values.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deployments().join(file)).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn one(file: &str, kind: &str) -> Value {
    let docs: Vec<Value> = documents(file).into_iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(docs.len(), 1, "one {kind} in {file}");
    docs.into_iter().next().unwrap()
}

/// The flags `plexus-agent <command> --help` lists.
fn flags(command: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus-agent")).args([command, "--help"]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(',').split(['=', '[', '<']).next().unwrap().to_owned())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[test]
fn the_daemonset_runs_the_agent_with_flags_paths_and_port_the_code_uses() {
    let ds = one("daemonset.yaml", "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "VFs move between the host's and the pods' namespaces");
    let agent = &pod["containers"][0];
    assert_eq!(agent["securityContext"]["privileged"], true);
    let args = strings(&agent["args"]);
    assert_eq!(args[0], "run");
    let known = flags("run");
    let arg = |name: &str| args.iter().find_map(|a| a.strip_prefix(&format!("{name}="))).map(str::to_owned);
    for flag in &args[1..] {
        let name = flag.split('=').next().unwrap();
        assert!(known.iter().any(|k| k == name), "{name} is not a flag of plexus-agent run: {known:?}");
    }

    // Host paths mounted at the same paths, covering every default the binary on the host and
    // the agent share.
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = agent["volumeMounts"].as_array().unwrap();
    let host_path = |volume: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == volume)
            .and_then(|v| v["hostPath"]["path"].as_str())
            .map(str::to_owned)
    };
    let mut mounted = Vec::new();
    // The node's root, where delegates run chrooted: the one mount at another path.
    let chroot_dir = arg("--chroot-dir").unwrap();
    for mount in mounts {
        let path = mount["mountPath"].as_str().unwrap();
        if let Some(host) = host_path(mount["name"].as_str().unwrap()) {
            if path == chroot_dir {
                assert_eq!(host, "/", "--chroot-dir is the node's root");
                assert_eq!(mount["mountPropagation"], "HostToContainer", "the node's later mounts too");
                continue;
            }
            assert_eq!(host, path, "host paths are mounted where the host's binary sees them");
            mounted.push(PathBuf::from(path));
        }
    }
    let socket_dir = arg("--socket-dir").unwrap();
    let kubelet_dir = arg("--kubelet-dir").unwrap();
    let devinfo_dir = arg("--devinfo-dir").unwrap();
    let conf_dir = arg("--cni-conf-dir").unwrap();
    assert_eq!(socket_dir, plexus_cni::paths::SOCKET_DIR, "the binary's default daemonSocketDir");
    assert_eq!(devinfo_dir, plexus_cni::paths::DEVINFO_DIR, "where the binary looks");
    assert_eq!(kubelet_dir, "/var/lib/kubelet");
    let checkpoint = Path::new(plexus_cni::paths::KUBELET_CHECKPOINT);
    for needed in [
        socket_dir.as_str(),
        kubelet_dir.as_str(),
        devinfo_dir.as_str(),
        conf_dir.as_str(),
        plexus_cni::paths::CONF_DIR,
        plexus_cni::paths::CNI_DIR,
        plexus_cni::paths::BIN_DIR,
        plexus_cni::paths::HOST_LOCAL_DIR,
        plexus_cni::paths::SRIOV_DATA_DIR,
        checkpoint.to_str().unwrap(),
        "/var/run/netns",
    ] {
        assert!(
            mounted.iter().any(|m| Path::new(needed).starts_with(m)),
            "{needed} is not mounted: {mounted:?}"
        );
    }

    // The metrics port: the flag, the container port and the scrape annotation agree.
    let port: u16 = arg("--metrics-addr").unwrap().rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(agent["ports"][0]["containerPort"], port);
    assert_eq!(ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"], port.to_string());

    // The node name reaches the pod watch.
    assert_eq!(agent["env"][0]["name"], "NODE_NAME");
    assert_eq!(agent["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");

    // The pool config comes from the ConfigMap, at the path --pools names.
    let pools = PathBuf::from(arg("--pools").unwrap());
    let pools_mount = mounts.iter().find(|m| pools.starts_with(m["mountPath"].as_str().unwrap())).unwrap();
    let volume = volumes.iter().find(|v| v["name"] == pools_mount["name"]).unwrap();
    let configmap = one("configmap.yaml", "ConfigMap");
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);
    assert!(configmap["data"][pools.file_name().unwrap().to_str().unwrap()].is_string());

    // The init container installs the binary where the runtime and the agent look for it.
    let init = &pod["initContainers"][0];
    let command = strings(&init["command"]);
    assert_eq!(command[1], "install-cni");
    let install_flags = flags("install-cni");
    for flag in command.iter().filter(|c| c.starts_with("--")) {
        assert!(install_flags.contains(flag), "{flag} is not a flag of install-cni: {install_flags:?}");
    }
    let bin_dir = &command[command.iter().position(|c| c == "--bin-dir").unwrap() + 1];
    assert_eq!(bin_dir, plexus_cni::paths::BIN_DIR);
    assert_eq!(init["volumeMounts"][0]["mountPath"], bin_dir.as_str());

    // The image puts the binaries where the manifests run them from.
    let dockerfile = std::fs::read_to_string(deployments().join("Dockerfile")).unwrap();
    let from = &command[command.iter().position(|c| c == "--from").unwrap() + 1];
    // install-cni takes plexus-standalone from next to plexus.
    let standalone = Path::new(from).with_file_name("plexus-standalone").display().to_string();
    for binary in [command[0].as_str(), from.as_str(), &standalone, agent["command"][0].as_str().unwrap()] {
        assert!(
            dockerfile.lines().any(|l| l.starts_with("COPY") && l.ends_with(binary)),
            "{binary} not in the image"
        );
    }
    assert_eq!(pod["serviceAccountName"], one("rbac.yaml", "ServiceAccount")["metadata"]["name"]);
}

#[test]
fn rbac_grants_what_the_agent_does_and_the_crd_is_the_one_it_watches() {
    let role = one("rbac.yaml", "ClusterRole");
    let allows = |group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|rule| {
            strings(&rule["apiGroups"]).iter().any(|g| g == group)
                && strings(&rule["resources"]).iter().any(|r| r == resource)
                && strings(&rule["verbs"]).iter().any(|v| v == verb)
        })
    };
    let nads = plexus_cni::multus::kube::nad_resource();
    for (group, resource, verb) in [
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/status", "patch"),
        (nads.group.as_str(), nads.plural.as_str(), "get"),
        (nads.group.as_str(), nads.plural.as_str(), "list"),
        (nads.group.as_str(), nads.plural.as_str(), "watch"),
        ("", "events", "create"),
    ] {
        assert!(allows(group, resource, verb), "{verb} {group}/{resource} not granted");
    }
    let binding = one("rbac.yaml", "ClusterRoleBinding");
    let account = one("rbac.yaml", "ServiceAccount");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], account["metadata"]["namespace"]);

    let crd = one("crd.yaml", "CustomResourceDefinition");
    assert_eq!(crd["spec"]["group"], nads.group);
    assert_eq!(crd["spec"]["names"]["plural"], nads.plural);
    assert_eq!(crd["spec"]["names"]["kind"], nads.kind);
    assert_eq!(crd["spec"]["versions"][0]["name"], nads.version);
    assert_eq!(crd["metadata"]["name"], format!("{}.{}", nads.plural, nads.group));
    // Multus's short names: applying ours over theirs keeps `kubectl get nad` working.
    assert_eq!(strings(&crd["spec"]["names"]["shortNames"]), ["net-attach-def", "nad"]);
    // The image's build context leaves the build outputs out.
    let ignored = std::fs::read_to_string(deployments().join("../.dockerignore")).unwrap();
    assert!(ignored.lines().any(|l| l == "target/"), "{ignored}");
}

#[test]
fn the_pools_and_the_example_networks_are_valid_and_agree() {
    let configmap = one("configmap.yaml", "ConfigMap");
    let text = configmap["data"]["config.json"].as_str().unwrap();
    let pools = plexus_device_plugin::config::PoolConfig::parse(text, "configmap.yaml", "intel.com").unwrap();
    let resources: Vec<String> = pools.pools.iter().map(|p| p.resource_name()).collect();

    let nads: Vec<Value> = documents("examples/sriov-network.yaml");
    assert!(!nads.is_empty());
    for nad in &nads {
        assert_eq!(nad["kind"], "NetworkAttachmentDefinition");
        let resource = nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"].as_str().unwrap();
        assert!(resources.iter().any(|r| r == resource), "{resource} is not a pool: {resources:?}");
        let mut config: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
        assert_eq!(config["type"], "sriov");
        assert_eq!(config["name"], nad["metadata"]["name"]);
        // As the meta-plugin hands it over, with the pod's device.
        config["deviceID"] = "0000:3b:02.0".into();
        plexus_cni::sriov::config::SriovConfig::parse(&config).unwrap();
    }
    let pod = one("examples/pod.yaml", "Pod");
    let selection = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"].as_str().unwrap();
    let elements: Vec<Value> = serde_json::from_str(selection).unwrap();
    let resource = nads[0]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"].as_str().unwrap();
    let requested: usize =
        pod["spec"]["containers"][0]["resources"]["limits"][resource].as_str().unwrap().parse().unwrap();
    assert_eq!(requested, elements.len(), "one VF per attachment");
}

#[test]
fn install_cni_replaces_a_running_binary_atomically() {
    let dir = std::env::temp_dir().join(format!("plexus-install-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("plexus");
    std::fs::copy("/bin/sleep", &target).unwrap();
    let mut running = Command::new(&target).arg("30").spawn().unwrap();
    // Writing in place over a running executable fails: what Multus's copy runs into.
    let busy = std::fs::OpenOptions::new().write(true).open(&target).unwrap_err();
    assert_eq!(busy.raw_os_error(), Some(26), "ETXTBSY: {busy}");

    // Two programs to install: any two files will do, named as they are.
    let from = dir.join("from");
    std::fs::create_dir_all(&from).unwrap();
    let source = from.join("plexus");
    std::fs::copy(env!("CARGO_BIN_EXE_plexus-agent"), &source).unwrap();
    std::fs::copy("/bin/true", from.join("plexus-standalone")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_plexus-agent"))
        .args(["install-cni", "--from"])
        .arg(&source)
        .arg("--bin-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&target).unwrap(), std::fs::read(&source).unwrap());
    assert_eq!(std::fs::read(dir.join("plexus-standalone")).unwrap(), std::fs::read("/bin/true").unwrap());
    use std::os::unix::fs::PermissionsExt;
    for name in ["plexus", "plexus-standalone"] {
        assert_eq!(std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777, 0o755, "{name}");
    }
    assert!(running.try_wait().unwrap().is_none(), "the running one is untouched");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["from", "plexus", "plexus-standalone"], "no temporary file left");
    running.kill().unwrap();
    running.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
