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
        let status =
            // With the simulated node, as the agent builds it (the tests point it at one).
            Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "plexus-shim", "-p", "plexus-cni", "--features"])
                .args(["plexus-cni/simulated-node", "--bin", "plexus", "--bin", "plexus-standalone"])
                .status();
        assert!(status.unwrap().success());
    }
    binary
}
