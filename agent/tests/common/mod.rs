//! What the agent's end-to-end tests share.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod agent_node;

/// The `plexus` binary next to the agent's, built when missing.
pub fn plexus_binary() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_plexus-agent")).with_file_name("plexus");
    if !binary.exists() {
        let status =
            // With the simulated node, as the agent builds it (the tests point it at one).
            Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "plexus-cni", "--features", "simulated-node", "--bin", "plexus"])
                .status();
        assert!(status.unwrap().success());
    }
    binary
}
