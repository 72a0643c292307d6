//! A network configuration on stdin, as each reader of one takes it: the spec's conf or
//! conflist, the meta-plugin's config, the built-in delegates' configs and both IPAMs. None may
//! panic, hang or allocate without bound; an error is fine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::ipam;
use plexus_cni::spec::{Invocation, NetworkConfig};

fuzz_target!(|data: &[u8]| {
    let _ = NetworkConfig::parse(data, "fuzz.conf");
    let _ = plexus_cni::multus::config::MetaConfig::parse(data);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let _ = plexus_cni::sriov::config::SriovConfig::parse(&value);
    let _ = plexus_cni::userspace::config::UserspaceConfig::parse(&value);
    let _ = plexus_cni::bond::config::BondConfig::parse(&value);
    let _ = plexus_cni::spec::CniVersion::of_config(&value, "fuzz config");
    let _ = plexus_cni::entry::error_version(data);
    let invocation = Invocation::from_env(|key| {
        let value = match key {
            "CNI_COMMAND" => "ADD",
            "CNI_CONTAINERID" => "fuzz",
            "CNI_NETNS" => "/run/netns/fuzz",
            "CNI_IFNAME" => "net1",
            "CNI_PATH" => "/nonexistent",
            _ => return None,
        };
        Some(value.to_owned())
    });
    let Ok(invocation) = invocation else { return };
    // IPAM as ADD reads it, with nothing written: host-local's config check, static's result.
    if let Ok(Some(request)) = ipam::Request::new(&value, &invocation) {
        match request.plugin_type().as_deref() {
            Ok("host-local") => drop(ipam::host_local::check_config(&request)),
            Ok("static") => drop(ipam::static_ip::add(&request)),
            _ => {}
        }
    }
});
