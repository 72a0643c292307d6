//! Where things are on a node unless a config or a flag says otherwise: the defaults of Multus,
//! the SR-IOV and userspace plugins, the kubelet and OVS, and Plexus's own, in one place.

/// Multus's `confDir`: network configs by name.
pub const CONF_DIR: &str = "/etc/cni/multus/net.d";
/// Multus's `cniDir`: the DEL cache.
pub const CNI_DIR: &str = "/var/lib/cni/multus";
/// Multus's `binDir`, and where runtimes look for plugins.
pub const BIN_DIR: &str = "/opt/cni/bin";
/// Multus's `multusNamespace`.
pub const MULTUS_NAMESPACE: &str = "kube-system";
/// The agent's socket directory (`daemonSocketDir`), where the `plexus` binary forwards calls,
/// and the socket's name in it.
pub use plexus_shim::{SOCKET_DIR, SOCKET_NAME};
/// Device-info files (the device-info spec): `dp/` by the device plugin, `cni/` by CNI.
pub const DEVINFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";
/// The kubelet's directory.
pub const KUBELET_DIR: &str = "/var/lib/kubelet";
/// The kubelet's device manager checkpoint.
pub const KUBELET_CHECKPOINT: &str = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
/// host-local's store, as the reference plugin keeps it.
pub const HOST_LOCAL_DIR: &str = "/var/lib/cni/networks";
/// The `sriov` delegate's records (its `dataDir`).
pub const SRIOV_DATA_DIR: &str = "/var/lib/cni/plexus/sriov";
/// The `userspace` delegate's records (its `dataDir`).
pub const USERSPACE_DATA_DIR: &str = "/var/lib/cni/plexus/userspace";
/// The userspace plugin's `sharedDir`: vhost-user sockets of pods without a `shared-dir` volume.
pub const SHARED_DIR: &str = "/var/lib/cni/usrspcni";
/// ovsdb-server's socket.
pub const OVSDB_SOCKET: &str = "/var/run/openvswitch/db.sock";
/// ovs-vswitchd's run directory, where it makes server-mode vhost-user sockets.
pub const OVS_RUN_DIR: &str = "/var/run/openvswitch";

/// The stores with the default paths, whose leftovers (the temporary files of writers killed
/// mid-write) the agent removes when it starts: the DEL cache, the delegates' records,
/// host-local's networks, the CNI side of device-info under `devinfo_dir`. Stores a config
/// puts elsewhere are swept by the calls that use them (DEL, GC).
pub fn default_stores(devinfo_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> =
        [CNI_DIR, SRIOV_DATA_DIR, USERSPACE_DATA_DIR].iter().map(Into::into).collect();
    dirs.push(std::path::Path::new(USERSPACE_DATA_DIR).join("pending"));
    dirs.push(devinfo_dir.join("cni"));
    let networks = std::fs::read_dir(HOST_LOCAL_DIR).into_iter().flatten().flatten();
    dirs.extend(networks.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
    dirs
}
