//! The values discovery reads from sysfs files, each through its parser: CPU lists, NUMA nodes,
//! PCI addresses and IDs, link types and states, MACs, interface names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_hw::{CpuList, IfName, LinkType, MacAddr, NumaNode, OperState, PciAddress, PciId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let text = text.trim();
    if let Some(list) = CpuList::parse(text) {
        assert!(list.cpus().len() <= plexus_hw::numa::MAX_CPUS as usize, "an unbounded CPU list");
    }
    let _ = NumaNode::parse_device_attr(text);
    let _ = text.parse::<PciAddress>();
    let _ = PciId::parse(text);
    if let Ok(n) = text.parse::<u16>() {
        let _ = LinkType::from_arphrd(n).to_string();
    }
    let _ = OperState::parse(text);
    if let Ok(mac) = MacAddr::parse_assignable(text) {
        assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
    }
    if let Ok(name) = text.parse::<IfName>() {
        assert!(name.as_str().len() <= IfName::MAX_LEN && !name.as_str().contains(['/', '%']));
    }
});
