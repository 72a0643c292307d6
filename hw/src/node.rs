//! The node a process works on: where its sysfs is, which namespace holds its PFs and the VF
//! netdevs not given to a pod, and how VF settings reach the PFs. Real or simulated is decided
//! once, where the process starts (`plexus-agent run`, the `plexus` binary), and handed down.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::kernel::NetlinkKernel;
use crate::sysfs::SysfsRoot;
use crate::vf::{NetlinkVfControl, VfControl};

/// A node's hardware, as the delegates reach it.
#[derive(Debug, Clone)]
pub struct Node {
    sysfs: SysfsRoot,
    host_netns: Option<PathBuf>,
    vfs: Arc<dyn VfControl>,
}

impl Node {
    /// A real node: sysfs at `sysfs`, the caller's namespace as the host, VF settings by
    /// netlink on the PFs.
    pub fn real(sysfs: SysfsRoot) -> Self {
        Self { sysfs, host_netns: None, vfs: Arc::new(NetlinkVfControl) }
    }

    /// A node whose host namespace is at `host_netns` (`None`: the caller's) and whose VF
    /// settings go through `vfs` (how the simulated node is put together).
    pub fn new(sysfs: SysfsRoot, host_netns: Option<PathBuf>, vfs: Arc<dyn VfControl>) -> Self {
        Self { sysfs, host_netns, vfs }
    }

    /// Its sysfs.
    pub fn sysfs(&self) -> &SysfsRoot {
        &self.sysfs
    }

    /// Its host namespace, `None` for the caller's.
    pub fn host_netns(&self) -> Option<&Path> {
        self.host_netns.as_deref()
    }

    /// Its VF control.
    pub fn vfs(&self) -> &dyn VfControl {
        &*self.vfs
    }

    /// A kernel session for one call whose pod namespace is at `pod`.
    pub fn session(&self, pod: Option<&Path>) -> NetlinkKernel {
        NetlinkKernel::new(self.host_netns.clone(), pod.map(Path::to_path_buf))
    }
}
