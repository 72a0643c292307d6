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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod() -> Pod {
        Pod { namespace: "tenant".into(), name: "web".into(), uid: "uid-web".into(), ..Default::default() }
    }

    #[test]
    fn the_checkpoint_is_read_only_when_the_pod_resources_socket_is_unusable() {
        let dir = plexus_sim::scratch("kubelet-devices").unwrap();
        let kubelet_dir = dir.path().join("kubelet");
        std::fs::create_dir_all(kubelet_dir.join("device-plugins")).unwrap();
        // The checkpoint says something else than PodResources will: the answer tells which
        // one was read.
        let checkpoint = r#"{"Data": {"PodDeviceEntries": [{"PodUID": "uid-web", "ContainerName": "app",
            "ResourceName": "intel.com/sriov_net", "DeviceIDs": ["0000:99:00.0"]}]}, "Checksum": 1}"#;
        std::fs::write(kubelet_dir.join("device-plugins/kubelet_internal_checkpoint"), checkpoint).unwrap();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let devices =
            KubeletDevices::new(&kubelet_dir, &dir.path().join("devinfo"), runtime.handle().clone());

        // No PodResources socket (an old kubelet): the checkpoint.
        assert_eq!(devices.allocated(&pod(), "intel.com/sriov_net").unwrap(), ["0000:99:00.0"]);

        // A kubelet up to 1.33 (Get answers Unknown): List, never the checkpoint.
        let kubelet = runtime.block_on(plexus_sim::kubelet::KubeletStandIn::start(&kubelet_dir)).unwrap();
        kubelet.pod_resources().assign("tenant", "web", "app", "intel.com/sriov_net", &["0000:20:02.1"]);
        assert_eq!(devices.allocated(&pod(), "intel.com/sriov_net").unwrap(), ["0000:20:02.1"]);
        // A pod the kubelet does not know has no devices: not the checkpoint's either.
        let other = Pod { name: "gone".into(), ..pod() };
        assert!(devices.allocated(&other, "intel.com/sriov_net").unwrap().is_empty());
        runtime.block_on(kubelet.stop());
    }
}
