//! The device plugin's pool config (the SR-IOV network device plugin's `config.json`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_device_plugin::config::PoolConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = PoolConfig::parse(text, "pools.json", "intel.com");
});
