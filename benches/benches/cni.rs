//! The meta-plugin's own cost: ADD of a pod with one bridge delegate through `plexus`, against
//! the bridge plugin called directly for the same work. Both run as processes, as the runtime
//! runs them, from a thread inside a namespace of the bench's own (the bridge plugin makes its
//! bridge and veth ends there); each ADD is followed by an untimed DEL. Needs root and Debian's
//! containernetworking-plugins in /usr/lib/cni. The figure is the difference of the medians.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use plexus_hw::netns::Netns;
use plexus_sim::TempDir;
use serde_json::json;

const PLUGINS: &str = "/usr/lib/cni";

/// Binary `bin` of this profile in the target directory.
fn artifact(bin: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join(if cfg!(debug_assertions) { "debug" } else { "release" }).join(bin)
}

/// Binary `bin` of `package`, of this profile. A bench run builds it first, always (cargo does
/// nothing when it is fresh): `cargo bench` builds no other package's binaries, and an agent
/// built from older sources would be what the bench measures. In test mode (`cargo test
/// --workspace`, debug) the workspace's binaries were just built: only a missing one is, as
/// building it alone could unify other features and build the agent a second time.
fn built(package: &str, bin: &str) -> PathBuf {
    let binary = artifact(bin);
    if !cfg!(debug_assertions) || !binary.exists() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-q", "-p", package, "--bin", bin]);
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let status = cargo.status();
        assert!(matches!(status, Ok(s) if s.success()), "building {bin}: {status:?}");
    }
    binary
}

/// The `plexus` binary as a node gets it, with the `plexus-standalone` next to it that it
/// becomes without the agent: built by hack/build-plexus.sh (always run: cargo does nothing
/// when they are fresh).
fn plexus_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut build = Command::new("bash");
    build.arg(root.join("hack/build-plexus.sh")).args(["--simulated-node", "-q"]).env("CARGO", env!("CARGO"));
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status();
    assert!(matches!(status, Ok(s) if s.success()), "building plexus: {status:?}");
    artifact("plexus")
}

/// The agent, serving CNI in `host`'s namespace on `socket_dir` (no pools, no Kubernetes):
/// what the `plexus` binary forwards to. Killed on drop.
struct Agent(std::process::Child);

impl Agent {
    fn start(host: &Netns, dir: &Path) -> Self {
        let pools = dir.join("pools.json");
        let written =
            std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&pools, r#"{"resourceList": []}"#));
        assert!(written.is_ok(), "{written:?}");
        let Some(host_name) = host.name() else { panic!("a named namespace") };
        let Ok(child) = Command::new("ip")
            .args(["netns", "exec", host_name])
            .arg(built("plexus-agent", "plexus-agent"))
            .arg("run")
            .arg("--pools")
            .arg(&pools)
            .arg("--kubelet-dir")
            .arg(dir.join("kubelet"))
            .arg("--devinfo-dir")
            .arg(dir.join("devinfo"))
            .arg("--socket-dir")
            .arg(dir.join("run"))
            .args(["--route-file", "/dev/null"])
            .env("PLEXUS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            panic!("starting plexus-agent")
        };
        let socket = dir.join("run/plexus.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the agent's socket never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn call(binary: &Path, env: &[(&str, &str)], stdin: &[u8]) {
    let Ok(mut child) = Command::new(binary)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        panic!("starting {}", binary.display())
    };
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let Ok(out) = child.wait_with_output() else { panic!("waiting for {}", binary.display()) };
    assert!(out.status.success(), "{}: {}", binary.display(), String::from_utf8_lossy(&out.stdout));
}

struct Setup {
    host: Netns,
    pod: Netns,
    dir: TempDir,
}

impl Setup {
    fn new() -> Self {
        let (Ok(host), Ok(pod), Ok(dir)) = (
            Netns::create_unique("plexus-bench-h"),
            Netns::create_unique("plexus-bench-p"),
            plexus_sim::scratch("bench-cni"),
        ) else {
            panic!("the CNI bench needs root (network namespaces)")
        };
        Self { host, pod, dir }
    }

    fn bridge_conf(&self) -> Vec<u8> {
        let conf = json!({"cniVersion": "1.0.0", "name": "cluster", "type": "bridge", "bridge": "pxbench0", "isGateway": true,
                          "ipam": {"type": "host-local", "subnet": "10.99.0.0/16", "dataDir": self.dir.path().join("ipam")}});
        conf.to_string().into_bytes()
    }

    /// `ADD` (timed) then `DEL` (untimed) of `binary` with `stdin`, `iters` times.
    fn measure(&self, binary: &Path, stdin: &[u8], iters: u64) -> Duration {
        self.measure_each(&[(binary, stdin)], iters)[0].iter().sum()
    }

    /// Like [`Setup::measure`] for each of `cases` in turn, round after round, so that the
    /// machine's drift (this VM's speed moves by a third within minutes) touches every case
    /// alike: each case's ADD times, round by round.
    fn measure_each(&self, cases: &[(&Path, &[u8])], iters: u64) -> Vec<Vec<Duration>> {
        let netns = self.pod.path().display().to_string();
        let Ok(totals) = self.host.run(|| {
            let mut totals = vec![Vec::new(); cases.len()];
            for i in 0..iters {
                for (case, (binary, stdin)) in cases.iter().enumerate() {
                    let id = format!("bench-{i}-{case}");
                    let env = |command| {
                        [
                            ("CNI_COMMAND", command),
                            ("CNI_CONTAINERID", id.as_str()),
                            ("CNI_NETNS", netns.as_str()),
                            ("CNI_IFNAME", "eth0"),
                            ("CNI_PATH", PLUGINS),
                        ]
                    };
                    let start = Instant::now();
                    call(binary, &env("ADD"), stdin);
                    totals[case].push(start.elapsed());
                    call(binary, &env("DEL"), stdin);
                }
            }
            totals
        }) else {
            panic!("entering the bench namespace")
        };
        totals
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = Netns::delete_path(self.pod.path());
        let _ = Netns::delete_path(self.host.path());
    }
}

fn meta_plugin_cost(c: &mut Criterion) {
    let setup = Setup::new();
    let plexus = plexus_binary();
    let bridge = Path::new(PLUGINS).join("bridge");
    let conf_dir = setup.dir.path().join("net.d");
    let _ = std::fs::create_dir_all(&conf_dir);
    let _ = std::fs::write(conf_dir.join("10-cluster.conf"), setup.bridge_conf());
    let cache_on = |dir: &Path| {
        json!({"cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus", "clusterNetwork": "cluster",
               "confDir": conf_dir, "cniDir": dir, "binDir": PLUGINS})
        .to_string()
        .into_bytes()
    };
    // The DEL cache where Multus keeps it, on disk, and on tmpfs.
    let disk = Path::new("/var/tmp").join(format!("plexus-bench-cache-{}", std::process::id()));
    let meta_disk = cache_on(&disk);
    let meta_tmpfs = cache_on(&setup.dir.path().join("cache"));

    let mut group = c.benchmark_group("CNI ADD, one bridge delegate");
    group.sample_size(30).measurement_time(Duration::from_secs(15));
    group.bench_function("bridge plugin alone", |b| {
        b.iter_custom(|n| setup.measure(&bridge, &setup.bridge_conf(), n))
    });
    group.bench_function("through plexus (cache on tmpfs)", |b| {
        b.iter_custom(|n| setup.measure(&plexus, &meta_tmpfs, n))
    });
    group.bench_function("through plexus (cache on disk)", |b| {
        b.iter_custom(|n| setup.measure(&plexus, &meta_disk, n))
    });
    group.finish();

    // The same through a delegate that does no kernel work (the reference static IPAM plugin
    // as the network's plugin only prints its result): the difference is the meta-plugin's
    // cost without the jitter of moving veths between namespaces.
    let noop = json!({"cniVersion": "1.0.0", "name": "noop", "type": "static",
                      "ipam": {"type": "static", "addresses": [{"address": "10.98.0.2/24"}]}});
    let noop_bytes = noop.to_string().into_bytes();
    let _ = std::fs::write(conf_dir.join("20-noop.conf"), &noop_bytes);
    let noop_meta = |dir: &Path| {
        json!({"cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus", "clusterNetwork": "noop",
               "confDir": conf_dir, "cniDir": dir, "binDir": PLUGINS})
        .to_string()
        .into_bytes()
    };
    let (noop_tmpfs, noop_disk) = (noop_meta(&setup.dir.path().join("cache")), noop_meta(&disk));
    // Forwarded: the binary hands the call to the agent, which runs the delegate.
    let agent_dir = setup.dir.path().join("agent");
    let agent = Agent::start(&setup.host, &agent_dir);
    let mut forwarded: serde_json::Value = serde_json::from_slice(&noop_tmpfs).unwrap_or_default();
    forwarded["daemonSocketDir"] = json!(agent_dir.join("run"));
    let noop_forwarded = forwarded.to_string().into_bytes();
    let static_plugin = Path::new(PLUGINS).join("static");
    let mut group = c.benchmark_group("CNI ADD, a delegate that does no kernel work");
    group.sample_size(50);
    group.bench_function("static plugin alone", |b| {
        b.iter_custom(|n| setup.measure(&static_plugin, &noop_bytes, n))
    });
    group.bench_function("through plexus (cache on tmpfs)", |b| {
        b.iter_custom(|n| setup.measure(&plexus, &noop_tmpfs, n))
    });
    group.bench_function("through plexus (cache on disk)", |b| {
        b.iter_custom(|n| setup.measure(&plexus, &noop_disk, n))
    });
    group.bench_function("through plexus and the agent (cache on tmpfs)", |b| {
        b.iter_custom(|n| setup.measure(&plexus, &noop_forwarded, n))
    });
    // Plexus's own cost itself: each round the plugin alone, then through plexus and the
    // agent; a sample's time per iteration is the median of its rounds' differences (the
    // pairing takes out the machine's drift, the median the odd slow call).
    group.bench_function("own cost through plexus and the agent, paired with the plugin alone", |b| {
        b.iter_custom(|n| {
            let rounds = setup.measure_each(&[(&static_plugin, &noop_bytes), (&plexus, &noop_forwarded)], n);
            let mut differences: Vec<f64> = rounds[1]
                .iter()
                .zip(&rounds[0])
                .map(|(through, alone)| through.as_secs_f64() - alone.as_secs_f64())
                .collect();
            differences.sort_by(f64::total_cmp);
            let median = differences.get(differences.len() / 2).copied().unwrap_or_default();
            Duration::from_secs_f64(median.max(0.0) * n as f64)
        })
    });
    group.finish();
    drop(agent);
    let _ = std::fs::remove_dir_all(&disk);
}

criterion_group!(benches, meta_plugin_cost);
criterion_main!(benches);
