//! What a client sends on the agent's socket, as the agent reads it: the frame, then for a call
//! its environment and its config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::forward::{Frame, decode_frame};
use plexus_cni::spec::Call;

fuzz_target!(|data: &[u8]| {
    if let Frame::Call(request) = decode_frame(data) {
        let _ = Call::from_env(|key| request.env.get(key).cloned());
        let _ = plexus_cni::multus::config::MetaConfig::parse(request.stdin.as_bytes());
        let _ = plexus_cni::entry::error_version(request.stdin.as_bytes());
    }
});
