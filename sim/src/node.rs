//! A simulated SR-IOV node.
//!
//! [`SimNode::build`] writes a fake sysfs tree shaped like the kernel's: device directories
//! under `devices/pci<domain>:<bus>/`, relative links to them from `bus/pci/devices/`, and the
//! `driver`, `iommu_group`, `virtfnN` and `physfn` links discovery follows. Point a
//! [`SysfsRoot`](plexus_hw::SysfsRoot) at [`SimNode::root`] and discovery runs unchanged.
//!
//! With [`SimNode::create_netdevs`] (root needed) the node also gets real links, in a network
//! namespace of its own that plays the node's host namespace: every PF netdev is a bridge (the
//! NIC's embedded switch) and every VF netdev is one end of a veth pair whose other end, named
//! like a switchdev representor (`ens1f0r3`), is a port of that bridge. VFs can then be moved
//! into pod namespaces and pass traffic to each other, as VFs of one PF do.
//!
//! What the links cannot fake is the PF side of VF settings (a veth answers VF netlink
//! requests with EOPNOTSUPP): [`crate::store::VfStore`] keeps it, and
//! [`SimNode::hw_node`] (in [`crate::vfs`]) is the node as Plexus's delegates reach it.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use plexus_hw::events;
use plexus_hw::netlink::{Netlink, NetlinkError};
use plexus_hw::netns::{NETNS_RUN_DIR, Netns, NetnsError};
use plexus_hw::vf::VfError;
use plexus_hw::{IfName, IommuGroup, MacAddr, NumaNode, OperState, PciAddress, VfIndex};

use crate::store::VfStore;

/// The file in the simulated root that records what was built, so a later process can tear
/// it down (`plexus-agent sim down`) and nothing else is ever removed by mistake.
pub const STATE_FILE: &str = "plexus-sim.json";
/// The unix datagram socket in a simulated node's root where a listener gets the kernel's
/// events about the node (`plexus_hw::events::EventSource::Socket`): the node sends them as
/// its links and devices change.
pub const EVENTS_SOCKET: &str = "events.sock";
/// The made-up index of PF 0's netdev in the link events (PF n's is this plus n).
const SIM_IFINDEX_BASE: u32 = 1000;

/// Intel XXV710 and its adaptive VF: common SR-IOV NICs, with names in the PCI ID database.
const PF_VENDOR: &str = "0x8086";
const PF_DEVICE: &str = "0x158b";
const PF_DRIVER: &str = "i40e";
const VF_DEVICE: &str = "0x154c";
const VF_DRIVER: &str = "iavf";
const VFIO_DRIVER: &str = "vfio-pci";
const NET_CLASS: &str = "0x020000";
const PF_SPEED_MBPS: &str = "25000";

/// A simulator failure, naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The requested node cannot be built.
    #[error("invalid simulated node: {0}")]
    Spec(String),
    /// Writing or reading the fake tree failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// The directory holds no simulated node (no state file, or a broken one).
    #[error("{path}: not a simulated node ({reason})")]
    NotASim {
        /// The state file looked for.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The node's namespace could not be made or removed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A link could not be made.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The VF store could not be changed.
    #[error(transparent)]
    Vfs(#[from] VfError),
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimSpec {
    /// Physical functions, two per NIC card (ports f0 and f1).
    pub pfs: u32,
    /// NUMA nodes; cards are spread over them in order.
    pub numa_nodes: u32,
    /// VFs enabled on every PF.
    pub vfs_per_pf: u32,
    /// How many of each PF's VFs (the last ones) are bound to vfio-pci, without a netdev.
    pub vfio_vfs_per_pf: u32,
    /// CPUs per NUMA node.
    pub cpus_per_node: u32,
}

impl Default for SimSpec {
    fn default() -> Self {
        Self { pfs: 4, numa_nodes: 2, vfs_per_pf: 8, vfio_vfs_per_pf: 2, cpus_per_node: 4 }
    }
}

impl SimSpec {
    /// The most PFs: cards sit on buses 0x20, 0x30, ... 0xf0.
    pub const MAX_PFS: u32 = 28;
    /// The most VFs per PF: both ports' VFs share the card's bus, 8 functions per device slot,
    /// from slot 2 to 31.
    pub const MAX_VFS: u32 = 120;

    /// Refuses what cannot be laid out, naming the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |what: String| Err(SimError::Spec(what));
        if self.pfs == 0 || self.pfs > Self::MAX_PFS {
            return bad(format!("pfs = {}: must be 1 to {}", self.pfs, Self::MAX_PFS));
        }
        if self.numa_nodes == 0 || self.numa_nodes > 64 {
            return bad(format!("numa_nodes = {}: must be 1 to 64", self.numa_nodes));
        }
        if self.vfs_per_pf > Self::MAX_VFS {
            return bad(format!("vfs_per_pf = {}: must be at most {}", self.vfs_per_pf, Self::MAX_VFS));
        }
        if self.vfio_vfs_per_pf > self.vfs_per_pf {
            return bad(format!(
                "vfio_vfs_per_pf = {}: must not exceed vfs_per_pf ({})",
                self.vfio_vfs_per_pf, self.vfs_per_pf
            ));
        }
        if self.cpus_per_node == 0 || self.cpus_per_node > 1024 {
            return bad(format!("cpus_per_node = {}: must be 1 to 1024", self.cpus_per_node));
        }
        Ok(())
    }
}

/// A simulated physical function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimPf {
    /// Its PCI address.
    pub address: PciAddress,
    /// Its netdev (a bridge when the node has real links).
    pub netdev: IfName,
    /// Its NUMA node.
    pub numa_node: NumaNode,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its IOMMU group.
    pub iommu_group: IommuGroup,
    /// Its VFs, by index.
    pub vfs: Vec<SimVf>,
}

/// A simulated virtual function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimVf {
    /// Its PCI address.
    pub address: PciAddress,
    /// Its index under the PF.
    pub index: VfIndex,
    /// Its netdev; `None` when bound to vfio-pci.
    pub netdev: Option<IfName>,
    /// The switch-side end of its veth (`ens1f0r3`), when it has a netdev.
    pub representor: Option<IfName>,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its IOMMU group.
    pub iommu_group: IommuGroup,
}

/// The state file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimState {
    spec: SimSpec,
    pfs: Vec<SimPf>,
    /// The named namespace holding the real links, when they were made.
    netns: Option<String>,
}

/// A simulated node: a fake sysfs tree and, optionally, real links in a namespace of its own.
///
/// Dropping it removes the links' namespace and the tree, unless [`keep`](Self::keep) was
/// called (the CLI keeps a node for a later `sim down`).
#[derive(Debug)]
pub struct SimNode {
    root: PathBuf,
    state: SimState,
    cleanup_on_drop: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SimError + '_ {
    move |source| SimError::Io { path: path.to_owned(), error: source }
}

fn write(path: &Path, content: impl AsRef<[u8]>) -> Result<(), SimError> {
    fs::write(path, content).map_err(io_err(path))
}

fn mkdir(path: &Path) -> Result<(), SimError> {
    fs::create_dir_all(path).map_err(io_err(path))
}

fn link(target: impl AsRef<Path>, at: &Path) -> Result<(), SimError> {
    symlink(target, at).map_err(io_err(at))
}

/// Removes a file, link or directory tree; one already gone is fine.
fn remove_path(path: &Path) -> Result<(), SimError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_err(path))
}

pub(crate) fn name(text: String) -> Result<IfName, SimError> {
    text.parse().map_err(|e| SimError::Spec(format!("{e}")))
}

impl SimNode {
    /// Writes a simulated node's sysfs tree into `root` (created if needed; it must hold no
    /// simulated node yet).
    pub fn build(root: impl Into<PathBuf>, spec: &SimSpec) -> Result<Self, SimError> {
        spec.validate()?;
        let root = root.into();
        let state_path = root.join(STATE_FILE);
        if state_path.exists() {
            return Err(SimError::Spec(format!("{} already holds a simulated node", root.display())));
        }
        mkdir(&root)?;
        let node = Self {
            state: SimState { spec: spec.clone(), pfs: layout(spec)?, netns: None },
            root,
            cleanup_on_drop: true,
        };
        node.write_numa()?;
        for driver in [PF_DRIVER, VF_DRIVER, VFIO_DRIVER] {
            mkdir(&node.root.join("bus/pci/drivers").join(driver))?;
        }
        mkdir(&node.root.join("bus/pci/devices"))?;
        mkdir(&node.root.join("class/net"))?;
        for pf in &node.state.pfs {
            node.write_pf(pf)?;
        }
        node.save()?;
        Ok(node)
    }

    /// Loads the simulated node recorded in `root` by an earlier [`build`](Self::build). The
    /// loaded node is kept on drop; call [`destroy`](Self::destroy) to remove it.
    pub fn load(root: impl Into<PathBuf>) -> Result<Self, SimError> {
        let root = root.into();
        let path = root.join(STATE_FILE);
        let text = fs::read_to_string(&path)
            .map_err(|e| SimError::NotASim { path: path.clone(), reason: e.to_string() })?;
        let state = serde_json::from_str(&text)
            .map_err(|e| SimError::NotASim { path: path.clone(), reason: e.to_string() })?;
        Ok(Self { root, state, cleanup_on_drop: false })
    }

    /// The root of the fake sysfs tree (use it as the sysfs root).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What was simulated.
    pub fn spec(&self) -> &SimSpec {
        &self.state.spec
    }

    /// The simulated PFs, by address.
    pub fn pfs(&self) -> &[SimPf] {
        &self.state.pfs
    }

    /// The named namespace that holds the real links, once they were made.
    pub fn netns_name(&self) -> Option<&str> {
        self.state.netns.as_deref()
    }

    /// The path of [`netns_name`](Self::netns_name)'s namespace.
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.netns_name().map(|name| Path::new(NETNS_RUN_DIR).join(name))
    }

    /// The directory of a PCI device in the fake tree (the target of its `bus/pci/devices`
    /// link), for tests that change or break its files.
    pub fn device_dir(&self, address: PciAddress) -> PathBuf {
        self.root
            .join("devices")
            .join(format!("pci{:04x}:{:02x}", address.domain(), address.bus()))
            .join(address.to_string())
    }

    /// Sets the operational state of PF `pf`'s netdev in the tree (`up`, `down`, ...), as the
    /// kernel shows a link going down.
    pub fn set_pf_operstate(&self, pf_index: usize, state: OperState) -> Result<(), SimError> {
        let pf = self.pf(pf_index)?;
        let net = self.device_dir(pf.address).join("net").join(pf.netdev.as_str());
        write(&net.join("operstate"), format!("{state}\n"))?;
        write(&net.join("carrier"), if state == OperState::Up { "1\n" } else { "0\n" })?;
        // The PF's netdev is not a real link: its index is made up, stable per PF.
        let index = SIM_IFINDEX_BASE + pf_index as u32;
        let message = events::link_message(index, pf.netdev.as_str(), state == OperState::Up);
        self.emit(events::TAG_RTNETLINK, &message);
        Ok(())
    }

    /// Sends the kobject uevent the kernel would for PCI device `address` (`add`, `remove`,
    /// `bind`, `unbind`, `change`) to whoever listens on the node's [`EVENTS_SOCKET`].
    pub fn pci_event(&self, action: &str, address: PciAddress) {
        let dir = self.device_dir(address);
        let devpath = format!("/{}", dir.strip_prefix(&self.root).unwrap_or(&dir).display());
        self.emit(events::TAG_UEVENT, &events::pci_uevent(action, &devpath, address));
    }

    /// Sends one of the kernel's messages, behind its tag, to the node's [`EVENTS_SOCKET`];
    /// without a listener it goes nowhere, as the kernel's would.
    fn emit(&self, tag: u8, message: &[u8]) {
        let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else { return };
        let _ = socket.send_to(&[&[tag][..], message].concat(), self.root.join(EVENTS_SOCKET));
    }

    /// Gives the function at `address` the RDMA device `name` with character devices number
    /// `n` (`uverbsN`, `umadN`, `issmN`) and the shared `rdma_cm`, as mlx5 and rdma_ucm show
    /// them in sysfs.
    pub fn add_rdma(&self, address: PciAddress, name: &str, n: u32) -> Result<(), SimError> {
        mkdir(&self.device_dir(address).join("infiniband").join(name))?;
        for (class, char_device) in [
            ("infiniband_verbs", format!("uverbs{n}")),
            ("infiniband_mad", format!("umad{n}")),
            ("infiniband_mad", format!("issm{n}")),
        ] {
            let dir = self.root.join("class").join(class).join(char_device);
            mkdir(&dir)?;
            write(&dir.join("ibdev"), format!("{name}\n"))?;
        }
        mkdir(&self.root.join("class/misc/rdma_cm"))
    }

    /// Changes PF `pf`'s number of VFs, as writing `sriov_numvfs` does: the kernel removes all
    /// VFs, then creates `count` new ones (VF netdevs only; the tree's links are not touched).
    pub fn set_num_vfs(&mut self, pf: usize, count: u32) -> Result<(), SimError> {
        if count > self.state.spec.vfs_per_pf {
            return Err(SimError::Spec(format!(
                "{count} VFs: the simulated layout has room for {} per PF",
                self.state.spec.vfs_per_pf
            )));
        }
        let sim_pf = self.pf(pf)?.clone();
        let pf_dir = self.device_dir(sim_pf.address);
        for vf in &sim_pf.vfs {
            self.pci_event("remove", vf.address);
            remove_path(&pf_dir.join(format!("virtfn{}", vf.index)))?;
            remove_path(&self.root.join("bus/pci/devices").join(vf.address.to_string()))?;
            if let Some(netdev) = &vf.netdev {
                remove_path(&self.root.join("class/net").join(netdev.as_str()))?;
            }
            remove_path(&self.device_dir(vf.address))?;
        }
        let full = layout(&self.state.spec)?.swap_remove(pf);
        let mut updated = sim_pf;
        updated.vfs = full.vfs.into_iter().take(count as usize).collect();
        // The layout of each VF is the one of build time.
        for vf in &updated.vfs {
            self.write_vf(&updated, vf)?;
        }
        write(&pf_dir.join("sriov_numvfs"), format!("{count}\n"))?;
        for vf in &updated.vfs {
            self.pci_event("add", vf.address);
        }
        let netdev = updated.netdev.clone();
        self.state.pfs[pf] = updated;
        self.save()?;
        Ok(VfStore::new(&self.root).reset(&netdev)?)
    }

    fn pf(&self, pf: usize) -> Result<&SimPf, SimError> {
        self.state
            .pfs
            .get(pf)
            .ok_or_else(|| SimError::Spec(format!("no PF {pf}: the node has {}", self.state.pfs.len())))
    }

    /// Leaves the node in place when this value is dropped.
    pub fn keep(mut self) -> PathBuf {
        self.cleanup_on_drop = false;
        self.root.clone()
    }

    /// Makes the real links (root needed): a new named namespace `netns_name` holding a bridge
    /// per PF and a veth per VF netdev, the representor end enslaved to its PF's bridge.
    pub async fn create_netdevs(&mut self, netns_name: &str) -> Result<(), SimError> {
        if let Some(existing) = &self.state.netns {
            return Err(SimError::Spec(format!("links already made in namespace {existing}")));
        }
        let netns = Netns::create(netns_name)?;
        // Record the namespace before making links, so a failure half way is still torn down.
        self.state.netns = Some(netns_name.to_owned());
        self.save()?;
        let nl = Netlink::connect(Some(&netns)).await?;
        for pf in &self.state.pfs {
            let bridge = nl.add_bridge(&pf.netdev, Some(pf.mac)).await?;
            for vf in &pf.vfs {
                let (Some(netdev), Some(representor)) = (&vf.netdev, &vf.representor) else {
                    continue;
                };
                nl.add_veth(netdev, representor, Some(vf.mac)).await?;
                let port = nl.link_index(representor).await?;
                nl.set_controller_up(port, bridge).await?;
            }
        }
        Ok(())
    }

    /// Removes the real links (by deleting their namespace) and the fake tree.
    pub fn destroy(mut self) -> Result<(), SimError> {
        self.cleanup_on_drop = false;
        self.remove()
    }

    fn remove(&mut self) -> Result<(), SimError> {
        if let Some(name) = self.state.netns.take() {
            Netns::delete_path(&Path::new(NETNS_RUN_DIR).join(name))?;
        }
        match fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SimError::Io { path: self.root.clone(), error: source }),
        }
    }

    fn save(&self) -> Result<(), SimError> {
        let path = self.root.join(STATE_FILE);
        let text = serde_json::to_string_pretty(&self.state)
            .map_err(|e| SimError::Spec(format!("serializing state: {e}")))?;
        write(&path, text)
    }

    fn write_numa(&self) -> Result<(), SimError> {
        let spec = &self.state.spec;
        let base = self.root.join("devices/system/node");
        for node in 0..spec.numa_nodes {
            let dir = base.join(format!("node{node}"));
            mkdir(&dir)?;
            let first = node * spec.cpus_per_node;
            let last = first + spec.cpus_per_node - 1;
            write(&dir.join("cpulist"), format!("{first}-{last}\n"))?;
            // SLIT convention: 10 to itself, 21 to every other node (two-socket servers).
            let distances: Vec<&str> =
                (0..spec.numa_nodes).map(|o| if o == node { "10" } else { "21" }).collect();
            write(&dir.join("distance"), format!("{}\n", distances.join(" ")))?;
        }
        write(&base.join("online"), format!("0-{}\n", spec.numa_nodes - 1))?;
        write(&base.join("possible"), format!("0-{}\n", spec.numa_nodes - 1))
    }

    /// Writes a device directory and its `bus/pci/devices` link; returns the directory.
    fn write_device(
        &self,
        address: PciAddress,
        device_id: &str,
        driver: &str,
        numa: NumaNode,
        group: IommuGroup,
    ) -> Result<PathBuf, SimError> {
        let dir = self.device_dir(address);
        mkdir(&dir)?;
        write(&dir.join("vendor"), format!("{PF_VENDOR}\n"))?;
        write(&dir.join("device"), format!("{device_id}\n"))?;
        write(&dir.join("class"), format!("{NET_CLASS}\n"))?;
        write(&dir.join("numa_node"), format!("{numa}\n"))?;
        link(format!("../../../bus/pci/drivers/{driver}"), &dir.join("driver"))?;
        // As the kernel words it (discovery reads the IDs, class and driver from here).
        let hex = |id: &str| id.trim_start_matches("0x").to_uppercase();
        let class = u32::from_str_radix(NET_CLASS.trim_start_matches("0x"), 16).unwrap_or_default();
        let (vendor, device) = (hex(PF_VENDOR), hex(device_id));
        let uevent = format!(
            "DRIVER={driver}\nPCI_CLASS={class:X}\nPCI_ID={vendor}:{device}\nPCI_SUBSYS_ID={vendor}:0000\n\
             PCI_SLOT_NAME={address}\nMODALIAS=pci:v0000{vendor}d0000{device}sv0000{vendor}sd00000000bc02sc00i00\n"
        );
        write(&dir.join("uevent"), uevent)?;
        let group_dir = self.root.join("kernel/iommu_groups").join(group.to_string());
        mkdir(&group_dir.join("devices"))?;
        link(format!("../../../kernel/iommu_groups/{group}"), &dir.join("iommu_group"))?;
        let bus_dir = format!("pci{:04x}:{:02x}", address.domain(), address.bus());
        link(
            format!("../../../devices/{bus_dir}/{address}"),
            &self.root.join("bus/pci/devices").join(address.to_string()),
        )?;
        Ok(dir)
    }

    /// Writes `net/<name>/` of a device and its `class/net` link.
    fn write_netdev(&self, dir: &Path, name: &IfName, mac: MacAddr, up: bool) -> Result<(), SimError> {
        let net = dir.join("net").join(name.as_str());
        mkdir(&net)?;
        write(&net.join("type"), "1\n")?;
        write(&net.join("address"), format!("{mac}\n"))?;
        write(&net.join("mtu"), "1500\n")?;
        write(&net.join("operstate"), if up { "up\n" } else { "down\n" })?;
        write(&net.join("carrier"), if up { "1\n" } else { "0\n" })?;
        if up {
            write(&net.join("speed"), format!("{PF_SPEED_MBPS}\n"))?;
        }
        // As the kernel: net/<if>/device leads back to the PCI device.
        link("../..", &net.join("device"))?;
        let rel = net.strip_prefix(&self.root).map_err(|_| SimError::Spec("netdev outside root".into()))?;
        link(Path::new("../..").join(rel), &self.root.join("class/net").join(name.as_str()))
    }

    /// Writes a VF's device directory and its `physfn` / `virtfn<N>` links with its PF.
    fn write_vf(&self, pf: &SimPf, vf: &SimVf) -> Result<(), SimError> {
        let driver = if vf.netdev.is_some() { VF_DRIVER } else { VFIO_DRIVER };
        let vf_dir = self.write_device(vf.address, VF_DEVICE, driver, pf.numa_node, vf.iommu_group)?;
        link(format!("../{}", pf.address), &vf_dir.join("physfn"))?;
        link(format!("../{}", vf.address), &self.device_dir(pf.address).join(format!("virtfn{}", vf.index)))?;
        if let Some(netdev) = &vf.netdev {
            self.write_netdev(&vf_dir, netdev, vf.mac, false)?;
        }
        Ok(())
    }

    fn write_pf(&self, pf: &SimPf) -> Result<(), SimError> {
        let dir = self.write_device(pf.address, PF_DEVICE, PF_DRIVER, pf.numa_node, pf.iommu_group)?;
        let total = self.state.spec.vfs_per_pf.max(64);
        write(&dir.join("sriov_totalvfs"), format!("{total}\n"))?;
        write(&dir.join("sriov_numvfs"), format!("{}\n", pf.vfs.len()))?;
        self.write_netdev(&dir, &pf.netdev, pf.mac, true)?;
        for vf in &pf.vfs {
            self.write_vf(pf, vf)?;
        }
        Ok(())
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        if self.cleanup_on_drop
            && let Err(e) = self.remove()
        {
            tracing::warn!("cleaning up simulated node {}: {e}", self.root.display());
        }
    }
}

/// The switch-side end of VF `vf` of PF `pf`, named as a switchdev representor (`ens1f0r3`).
pub(crate) fn representor_name(pf: &str, vf: VfIndex) -> String {
    format!("{pf}r{vf}")
}

/// Whether `name` is one the simulator gives links: a PF's `ens<N>f<M>`, a VF netdev's
/// `ens<N>f<M>v<K>`, a representor's `ens<N>f<M>r<K>`; so a check of what a simulated node
/// left can look at its own links only.
pub fn names_a_link(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = name.strip_prefix("ens") else { return false };
    let Some((card, port)) = rest.split_once('f') else { return false };
    let port = match port.find(['v', 'r']) {
        Some(at) if digits(&port[at + 1..]) => &port[..at],
        Some(_) => return false,
        None => port,
    };
    digits(card) && digits(port)
}

/// Addresses, names and NUMA placement of every PF and VF.
fn layout(spec: &SimSpec) -> Result<Vec<SimPf>, SimError> {
    let slots_per_port = spec.vfs_per_pf.div_ceil(8);
    let mut group = 40u32;
    let mut pfs = Vec::new();
    for i in 0..spec.pfs {
        let (card, port) = (i / 2, i % 2);
        let bus = u8::try_from(0x20 + 0x10 * card).map_err(|_| SimError::Spec("too many PFs".into()))?;
        let addr = |device: u32, function: u32| {
            PciAddress::new(0, bus, device as u8, function as u8)
                .ok_or_else(|| SimError::Spec(format!("no PCI slot for device {device} function {function}")))
        };
        let netdev = format!("ens{}f{port}", card + 1);
        let numa_node = NumaNode(i * spec.numa_nodes / spec.pfs);
        let pf_group = IommuGroup(group);
        group += 1;
        let mut vfs = Vec::new();
        for v in 0..spec.vfs_per_pf {
            let slot = 2 + port * slots_per_port + v / 8;
            let has_netdev = v < spec.vfs_per_pf - spec.vfio_vfs_per_pf;
            vfs.push(SimVf {
                address: addr(slot, v % 8)?,
                index: VfIndex(v),
                netdev: has_netdev.then(|| name(format!("{netdev}v{v}"))).transpose()?,
                representor: has_netdev.then(|| name(representor_name(&netdev, VfIndex(v)))).transpose()?,
                // Locally administered, 70:78 = "px", then PF and VF numbers.
                mac: MacAddr([0x02, 0x70, 0x78, i as u8, (v >> 8) as u8 + 1, v as u8]),
                iommu_group: IommuGroup(group),
            });
            group += 1;
        }
        pfs.push(SimPf {
            address: addr(0, port)?,
            netdev: name(netdev)?,
            numa_node,
            mac: MacAddr([0x02, 0x70, 0x78, i as u8, 0, 0]),
            iommu_group: pf_group,
            vfs,
        });
    }
    Ok(pfs)
}
