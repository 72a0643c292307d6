//! The pod's allocated devices as the agent finds them: the kubelet's PodResources API, else
//! (no socket, or one nobody answers on) the kubelet's checkpoint file.

use std::path::{Path, PathBuf};

use plexus_cni::multus::cluster::Pod;
use plexus_cni::multus::devices::{Checkpoint, Devices, DevicesError};
use plexus_device_plugin::podresources::PodResourcesError;

/// PodResources first, the checkpoint second.
#[derive(Debug)]
pub struct KubeletDevices {
    socket: PathBuf,
    checkpoint: Checkpoint,
    runtime: tokio::runtime::Handle,
}

impl KubeletDevices {
    /// The kubelet at `kubelet_dir`; device-info files under `devinfo_dir`; queries run on
    /// `runtime` (calls come from blocking threads of it).
    pub fn new(kubelet_dir: &Path, devinfo_dir: &Path, runtime: tokio::runtime::Handle) -> Self {
        Self {
            socket: kubelet_dir.join(plexus_device_plugin::podresources::SOCKET),
            checkpoint: Checkpoint {
                path: kubelet_dir.join("device-plugins/kubelet_internal_checkpoint"),
                devinfo_dir: devinfo_dir.to_owned(),
            },
            runtime,
        }
    }
}

impl Devices for KubeletDevices {
    fn allocated(&self, pod: &Pod, resource: &str) -> Result<Vec<String>, DevicesError> {
        let query = plexus_device_plugin::podresources::pod_devices(
            &self.socket,
            &pod.namespace,
            &pod.name,
            resource,
        );
        match self.runtime.block_on(query) {
            Ok(ids) => Ok(ids),
            // The checkpoint is the kubelet's internal file, not an API: read only when the
            // PodResources socket cannot be used at all (no socket, a kubelet without it).
            Err(PodResourcesError::Transport(e)) => {
                tracing::warn!(
                    "PodResources for pod {}/{}: {e}; reading the kubelet checkpoint instead",
                    pod.namespace,
                    pod.name
                );
                self.checkpoint.allocated(pod, resource)
            }
            Err(e) => Err(DevicesError::Kubelet(e.to_string())),
        }
    }

    fn devinfo_dir(&self) -> &Path {
        &self.checkpoint.devinfo_dir
    }
}
