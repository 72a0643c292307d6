//! Vendor and device names from the PCI ID database (compiled in by the `pci-ids` crate).

use pci_ids::FromId;

use crate::pci::PciId;

/// The vendor's name, when the database knows the vendor.
pub fn vendor_name(vendor: PciId) -> Option<&'static str> {
    pci_ids::Vendor::from_id(vendor.0).map(|v| v.name())
}

/// The device's name, when the database knows the device.
pub fn device_name(vendor: PciId, device: PciId) -> Option<&'static str> {
    pci_ids::Device::from_vid_pid(vendor.0, device.0).map(|d| d.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_ids() {
        assert_eq!(vendor_name(PciId(0x8086)), Some("Intel Corporation"));
        assert_eq!(
            device_name(PciId(0x8086), PciId(0x158b)),
            Some("Ethernet Controller XXV710 for 25GbE SFP28")
        );
        assert_eq!(device_name(PciId(0x8086), PciId(0xfffe)), None);
    }
}
