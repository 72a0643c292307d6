//! The PF side of VFs on the simulated node, where the "PFs" are bridges that cannot answer VF
//! requests: each PF's VF settings are kept in a file under the node's root
//! ([`VF_STATE_FILE`]), so every process working on the node (the `plexus` binary, the agent,
//! a test) sees the same state. A VF index the PF does not have and out-of-range values are
//! refused as the kernel refuses them; a change of `sriov_numvfs` resets the VFs (the kernel
//! makes them anew).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use plexus_hw::vf::{VfChange, VfError, VfState};
use plexus_hw::{IfName, VfIndex};

/// The file in the simulated root holding each simulated PF's VF settings.
pub const VF_STATE_FILE: &str = "plexus-sim-vfs.json";

/// Each PF's VF settings, by PF name.
type Store = BTreeMap<String, Vec<VfState>>;

/// A failure of the store, as the seam reports one.
pub(crate) fn failed(what: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> VfError {
    VfError::Failed { what: what.into(), source: Box::new(e) }
}

/// The VF settings of a simulated node's PFs, on disk under the node's root.
#[derive(Debug, Clone)]
pub struct VfStore {
    root: PathBuf,
}

impl VfStore {
    /// The store of the simulated node at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `sriov_numvfs` of the PF with netdev `pf`, through `class/net/<pf>/device`.
    fn num_vfs(&self, pf: &IfName) -> Result<u32, VfError> {
        let path = self.root.join("class/net").join(pf.as_str()).join("device/sriov_numvfs");
        let what = || path.display().to_string();
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|e| failed(what(), e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(VfError::NoSuchPf(pf.to_string())),
            Err(e) => Err(failed(what(), e)),
        }
    }

    /// Runs `f` on the store under an exclusive lock; saves it when `f` says it changed.
    fn with<T>(&self, f: impl FnOnce(&mut Store) -> Result<(T, bool), VfError>) -> Result<T, VfError> {
        let path = self.root.join(VF_STATE_FILE);
        let lock_path = self.root.join(format!("{VF_STATE_FILE}.lock"));
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| failed(lock_path.display().to_string(), e))?;
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| failed(lock_path.display().to_string(), e))?;
        let mut store: Store = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| failed(path.display().to_string(), e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Store::new(),
            Err(e) => return Err(failed(path.display().to_string(), e)),
        };
        let (value, changed) = f(&mut store)?;
        if changed {
            let tmp = self.root.join(format!("{VF_STATE_FILE}.tmp"));
            let bytes = serde_json::to_vec_pretty(&store).map_err(|e| failed("encoding VF state", e))?;
            fs::write(&tmp, bytes).map_err(|e| failed(tmp.display().to_string(), e))?;
            fs::rename(&tmp, &path).map_err(|e| failed(path.display().to_string(), e))?;
        }
        Ok(value)
    }

    /// Forgets the VF settings of PF `pf` (its VFs were made anew).
    pub fn reset(&self, pf: &IfName) -> Result<(), VfError> {
        self.with(|store| Ok(((), store.remove(pf.as_str()).is_some())))
    }

    /// Every VF of `pf`, as set or pristine.
    pub fn vfs(&self, pf: &IfName) -> Result<Vec<VfState>, VfError> {
        let count = self.num_vfs(pf)?;
        self.with(|store| {
            let known = store.get(pf.as_str());
            let states = (0..count)
                .map(|i| {
                    known
                        .and_then(|list| list.iter().find(|s| s.index == VfIndex(i)).cloned())
                        .unwrap_or_else(|| VfState::pristine(VfIndex(i)))
                })
                .collect();
            Ok((states, false))
        })
    }

    /// Changes VF `vf` of `pf`, refusing what the kernel refuses.
    pub fn set(&self, pf: &IfName, vf: VfIndex, change: &VfChange) -> Result<(), VfError> {
        change.validate(pf.as_str(), vf)?;
        if vf.0 >= self.num_vfs(pf)? {
            return Err(VfError::NoSuchVf { pf: pf.to_string(), vf });
        }
        self.with(|store| {
            let list = store.entry(pf.to_string()).or_default();
            match list.iter_mut().find(|s| s.index == vf) {
                Some(state) => *state = state.with(change),
                None => list.push(VfState::pristine(vf).with(change)),
            }
            list.sort_by_key(|s| s.index);
            Ok(((), true))
        })
    }

    /// One VF's state.
    pub fn vf(&self, pf: &IfName, vf: VfIndex) -> Result<VfState, VfError> {
        self.vfs(pf)?
            .into_iter()
            .find(|s| s.index == vf)
            .ok_or_else(|| VfError::NoSuchVf { pf: pf.to_string(), vf })
    }
}
