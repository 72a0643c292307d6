//! The CNI environment: lines of `NAME=value` (the input), read into a call; its CNI_ARGS split
//! and the pod it names.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use plexus_cni::spec::{Call, env::parse_cni_args};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let vars: HashMap<&str, &str> = text.lines().filter_map(|line| line.split_once('=')).collect();
    if let Ok(Call::Attachment(invocation)) = Call::from_env(|key| vars.get(key).map(|v| (*v).to_owned())) {
        let _ = invocation.pod();
        let _ = invocation.env("/opt/cni/bin");
    }
    let _ = parse_cni_args(text);
});
