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
/// The agent's socket directory (`daemonSocketDir`), where the `plexus` binary forwards calls.
pub const SOCKET_DIR: &str = "/run/plexus";
/// The agent's socket, in its socket directory.
pub const SOCKET_NAME: &str = "plexus.sock";
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
