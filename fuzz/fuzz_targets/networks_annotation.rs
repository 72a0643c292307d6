//! The pod's `k8s.v1.cni.cncf.io/networks` and `v1.multus-cni.io/default-network` annotations,
//! in both forms (the short `ns/name@if` list and JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::multus::selection::{self, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = selection::parse(NETWORKS_ANNOTATION, text);
    let _ = selection::parse(DEFAULT_NETWORK_ANNOTATION, text);
});
