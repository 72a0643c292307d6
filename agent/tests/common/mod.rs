//! What the agent's end-to-end tests share.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod agent_node;

/// The `plexus` binary next to the agent's, and the `plexus-standalone` it becomes without
/// the agent, built once per test process: always, not only when missing (cargo does nothing
/// when they are fresh), or a binary built from older sources, or without the simulated node
/// by a plain `hack/build-plexus.sh`, would be what the tests judge.
pub fn plexus_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let built = *BUILT.get_or_init(|| {
        // As hack/build-plexus.sh builds them; with the simulated node, as the agent builds
        // it (the tests point it at one).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new("bash")
            .arg(root.join("hack/build-plexus.sh"))
            .args(["--simulated-node", "-q"])
            .env("CARGO", env!("CARGO"))
            .status();
        matches!(status, Ok(s) if s.success())
    });
    assert!(built, "building plexus with hack/build-plexus.sh");
    Path::new(env!("CARGO_BIN_EXE_plexus-agent")).with_file_name("plexus")
}
