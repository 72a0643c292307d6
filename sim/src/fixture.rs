//! A simulated node in a scratch directory of its own: what tests and benches start from.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use plexus_hw::netns::{Netns, NetnsError};

use crate::node::{SimError, SimNode, SimSpec};
use crate::vfs::SimVfControl;

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A simulated node whose tree is `<dir>/sys`, optionally with its links in a namespace of its
/// own, and the pod namespaces a test makes. Dropping it removes the pods, the node (its
/// namespace and every link in it) and the directory, also when a test fails.
#[derive(Debug)]
pub struct ScratchNode {
    pods: Vec<PathBuf>,
    // Fields drop in order: the node before the directory holding it.
    node: SimNode,
    dir: tempfile::TempDir,
}

impl ScratchNode {
    /// The tree of `spec`, without links (no root needed).
    pub fn tree(tag: &str, spec: &SimSpec) -> Result<Self, SimError> {
        let dir = crate::scratch(tag).map_err(|error| SimError::Io { path: std::env::temp_dir(), error })?;
        let node = SimNode::build(dir.path().join("sys"), spec)?;
        Ok(Self { pods: Vec::new(), node, dir })
    }

    /// The tree of `spec` and its links, in a new namespace `plexus-<tag>-<pid>-<n>` (root).
    /// Callable from async code too: the links are made on a thread and runtime of their own.
    pub fn with_links(tag: &str, spec: &SimSpec) -> Result<Self, SimError> {
        let mut this = Self::tree(tag, spec)?;
        let netns = format!("plexus-{tag}-{}-{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed));
        let node = &mut this.node;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .build()
                        .map_err(|error| SimError::Io { path: PathBuf::from("(runtime)"), error })?;
                    runtime.block_on(node.create_netdevs(&netns))
                })
                .join()
                .map_err(|_| SimError::Spec("making the links: the thread panicked".into()))?
        })?;
        Ok(this)
    }

    /// The scratch directory (the tree is its `sys/`); tests put their other files here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node's VF control, to read or change VF settings behind the delegates' back.
    pub fn control(&self) -> SimVfControl {
        SimVfControl::for_node(&self.node)
    }

    /// A new pod namespace, removed with the node.
    pub fn pod(&mut self) -> Result<Netns, NetnsError> {
        let ns = Netns::create_unique("plexus-pod")?;
        self.pods.push(ns.path().to_owned());
        Ok(ns)
    }
}

/// The node itself: `root()`, `pfs()`, `set_num_vfs()`, `hw_node()`...
impl std::ops::Deref for ScratchNode {
    type Target = SimNode;

    fn deref(&self) -> &SimNode {
        &self.node
    }
}

impl std::ops::DerefMut for ScratchNode {
    fn deref_mut(&mut self) -> &mut SimNode {
        &mut self.node
    }
}

impl Drop for ScratchNode {
    fn drop(&mut self) {
        for pod in &self.pods {
            let _ = Netns::delete_path(pod);
        }
    }
}
