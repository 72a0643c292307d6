//! The `plexus` binary starts itself (src/rt.rs): linked static and not position-independent,
//! so the kernel maps it where it was linked and nothing needs relocating, and without the C
//! library's start files, whose `_start` it replaces.
fn main() {
    for arg in ["-nostartfiles", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bin=plexus={arg}");
    }
}
