//! What the criterion benches in `benches/` share. Run them with
//! `cargo bench -p plexus-benches`; figures are recorded in docs/performance.md.

use plexus_hw::sim::{ScratchDir, SimError, SimNode, SimSpec};

/// A simulated node in a scratch directory; both go away when dropped (node first).
#[derive(Debug)]
pub struct BenchNode {
    /// The node.
    pub node: SimNode,
    _scratch: ScratchDir,
}

impl BenchNode {
    /// Builds the fake sysfs tree of `spec` (no links, no root needed).
    pub fn tree(spec: &SimSpec) -> Result<Self, SimError> {
        let scratch =
            ScratchDir::new("bench").map_err(|e| SimError::Io { path: std::env::temp_dir(), error: e })?;
        let node = SimNode::build(scratch.path().join("sys"), spec)?;
        Ok(Self { node, _scratch: scratch })
    }
}
