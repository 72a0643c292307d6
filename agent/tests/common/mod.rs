//! What the agent's end-to-end tests share.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod agent_node;

/// The `plexus` binary next to the agent's, and the `plexus-standalone` it becomes without
/// the agent, built when missing.
pub fn plexus_binary() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_plexus-agent")).with_file_name("plexus");
    let standalone = binary.with_file_name("plexus-standalone");
    if !binary.exists() || !standalone.exists() {
        // As hack/build-plexus.sh builds them; with the simulated node, as the agent builds
        // it (the tests point it at one).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new("bash")
            .arg(root.join("hack/build-plexus.sh"))
            .args(["--simulated-node", "-q"])
            .env("CARGO", env!("CARGO"))
            .status();
        assert!(status.unwrap().success());
    }
    binary
}
