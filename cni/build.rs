//! Whether the kernel this is built on can make bonds: the real bond test runs only there,
//! and elsewhere reports itself ignored with the reason (a test cannot skip itself at run time).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(plexus_kernel_bonding)");
    println!("cargo::rerun-if-changed=build.rs");
    let loaded = Path::new("/sys/module/bonding").exists();
    let loadable = Command::new("modprobe").args(["-n", "-q", "bonding"]).status().is_ok_and(|s| s.success());
    if loaded || loadable {
        println!("cargo::rustc-cfg=plexus_kernel_bonding");
    }
}
