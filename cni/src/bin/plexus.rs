//! `plexus`: the CNI meta-plugin the container runtime calls (config `"type": "plexus"`).
//! On a node with the agent, it forwards the call to the agent's socket and prints the answer;
//! without one, it does the work itself. Installed (or linked) under the name of a built-in
//! delegate, such as `sriov`, it is that delegate alone, for plain Multus.

use std::io::{Read, Write};
use std::process::ExitCode;

use plexus_cni::entry::{self, Context, Outcome};
use plexus_cni::forward::{self, Forwarded};
use plexus_cni::multus::cluster::Cluster;
use plexus_cni::multus::config::MetaConfig;
use plexus_cni::multus::kube::KubeCluster;
use plexus_cni::routes::NetlinkRoutes;
use plexus_cni::spec::{CniError, ErrorCode};

/// Thin mode: the kubeconfig of the config, else in-cluster, else static networks only.
fn kube(config: &MetaConfig) -> Result<Option<Box<dyn Cluster>>, CniError> {
    Ok(KubeCluster::from_config(config)?.map(|c| Box::new(c) as Box<dyn Cluster>))
}

/// The call done here, by this process.
fn locally(stdin: &[u8]) -> Outcome {
    entry::init_logging(stdin);
    let checkpoint = plexus_cni::multus::devices::Checkpoint::default();
    let context = Context {
        registry: entry::builtin_registry(),
        routes: &NetlinkRoutes,
        cluster: &kube,
        devices: Some(&checkpoint),
    };
    entry::run(|name| std::env::var(name).ok(), stdin, &context)
}

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    // A failed read leaves stdin empty, which the call reports as an unparsable config.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let called_as = std::env::args_os()
        .next()
        .and_then(|arg0| std::path::Path::new(&arg0).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let outcome = match entry::builtin_named(&called_as) {
        Some(plugin) => entry::run_plugin(|name| std::env::var(name).ok(), &stdin, &*plugin),
        None => {
            let command = std::env::var("CNI_COMMAND").unwrap_or_default();
            let request = forward::Request {
                env: forward::cni_env(std::env::vars()),
                stdin: String::from_utf8_lossy(&stdin).into_owned(),
            };
            match forward::forward(&forward::socket_dir(&stdin), &request) {
                Forwarded::Answered(outcome) => outcome,
                Forwarded::NoAgent => locally(&stdin),
                // Without the agent an ADD would miss what only the agent knows (the pod's
                // devices, its watch cache): fail now rather than after a timeout. Everything
                // else can be done here; DEL must be, or the pod never terminates.
                Forwarded::AgentDown { socket, error } if command == "ADD" => {
                    let err = CniError::new(
                        ErrorCode::TryAgainLater,
                        format!(
                            "the plexus agent is not running (its socket {} does not answer)",
                            socket.display()
                        ),
                    )
                    .with_details(error.to_string());
                    Outcome { stdout: err.to_json(&entry::error_version(&stdin)), code: 1 }
                }
                Forwarded::AgentDown { .. } => locally(&stdin),
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(u8::try_from(outcome.code).unwrap_or(1))
}
