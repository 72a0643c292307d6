//! `plexus`: the CNI meta-plugin the container runtime calls (config `"type": "plexus"`).
//! Installed (or linked) under the name of a built-in delegate, such as `sriov`, it is that
//! delegate alone, for plain Multus.

use std::io::{Read, Write};
use std::process::ExitCode;

use plexus_cni::entry::{self, Context};
use plexus_cni::multus::cluster::Cluster;
use plexus_cni::multus::config::MetaConfig;
use plexus_cni::multus::kube::KubeCluster;
use plexus_cni::routes::NetlinkRoutes;
use plexus_cni::spec::CniError;

/// Thin mode: the kubeconfig of the config, else in-cluster, else static networks only.
fn kube(config: &MetaConfig) -> Result<Option<Box<dyn Cluster>>, CniError> {
    Ok(KubeCluster::from_config(config)?.map(|c| Box::new(c) as Box<dyn Cluster>))
}

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    // A failed read leaves stdin empty, which the call reports as an unparsable config.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let called_as = std::env::args_os()
        .next()
        .and_then(|arg0| std::path::Path::new(&arg0).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let env = |name: &str| std::env::var(name).ok();
    let outcome = match entry::builtin_named(&called_as) {
        Some(plugin) => entry::run_plugin(env, &stdin, &*plugin),
        None => {
            entry::init_logging(&stdin);
            let context =
                Context { registry: entry::builtin_registry(), routes: &NetlinkRoutes, cluster: &kube };
            entry::run(env, &stdin, &context)
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(u8::try_from(outcome.code).unwrap_or(1))
}
