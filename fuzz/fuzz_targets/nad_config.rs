//! A NetworkAttachmentDefinition's `spec.config`, as the planner takes it (an empty one is
//! looked up by name in a conf directory that does not exist here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::multus::resolve;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = resolve::nad_config("tenant", "fuzz", text, std::path::Path::new("/nonexistent"));
});
