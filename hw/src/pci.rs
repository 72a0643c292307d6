//! PCI addresses, IDs and classes.

use std::fmt;
use std::str::FromStr;

/// A PCI function address `dddd:bb:dd.f`. Ordered numerically (domain, bus, device, function),
/// which is also the order the kernel enumerates in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    domain: u32,
    bus: u8,
    device: u8,
    function: u8,
}

/// A string that is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PCI address {value:?}: {reason} (expected dddd:bb:dd.f)")]
pub struct PciAddressError {
    /// The text given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl PciAddress {
    /// An address from its parts; `None` when the device (0-31) or function (0-7) is out of
    /// range.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Self { domain, bus, device, function })
    }

    /// The PCI domain (segment).
    pub fn domain(self) -> u32 {
        self.domain
    }

    /// The bus number.
    pub fn bus(self) -> u8 {
        self.bus
    }

    /// The device (slot) number, 0-31.
    pub fn device(self) -> u8 {
        self.device
    }

    /// The function number, 0-7.
    pub fn function(self) -> u8 {
        self.function
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

fn hex_field<T: TryFrom<u32>>(text: &str, min: usize, max: usize) -> Option<T> {
    if text.len() < min || text.len() > max || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok().and_then(|v| T::try_from(v).ok())
}

impl FromStr for PciAddress {
    type Err = PciAddressError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |reason| PciAddressError { value: value.to_owned(), reason };
        let (rest, function) = value.rsplit_once('.').ok_or_else(|| err("no '.' before the function"))?;
        let mut parts = rest.split(':');
        let (Some(domain), Some(bus), Some(device), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err("needs domain, bus and device separated by ':'"));
        };
        // Linux prints domains with at least four digits; VMD domains have five.
        let domain = hex_field::<u32>(domain, 4, 8).ok_or_else(|| err("bad domain"))?;
        let bus = hex_field::<u8>(bus, 2, 2).ok_or_else(|| err("bad bus"))?;
        let device = hex_field::<u8>(device, 2, 2).ok_or_else(|| err("bad device"))?;
        let function = hex_field::<u8>(function, 1, 1).ok_or_else(|| err("bad function"))?;
        Self::new(domain, bus, device, function).ok_or_else(|| err("device above 1f or function above 7"))
    }
}

crate::types::serde_as_text!(PciAddress);

/// A PCI vendor or device ID. Printed as four lower-case hex digits without `0x`, the form
/// the SR-IOV device plugin's selectors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciId(pub u16);

impl PciId {
    /// Parses `0x8086` (sysfs) or `8086` (config files).
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
        hex_field::<u16>(digits, 1, 4).map(Self)
    }
}

impl fmt::Display for PciId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}", self.0)
    }
}

/// A PCI class code (base class, subclass, programming interface), as in sysfs `class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PciClass(pub u32);

impl PciClass {
    /// Parses sysfs's `0x020000`.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix("0x")?;
        (digits.len() == 6).then_some(())?;
        hex_field::<u32>(digits, 6, 6).map(Self)
    }

    /// The base class (`0x02` is a network controller).
    pub fn base(self) -> u8 {
        (self.0 >> 16) as u8
    }
}

impl fmt::Display for PciClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:06x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        for text in ["0000:3b:00.0", "0000:3b:02.7", "ffff:ff:1f.7", "10000:00:02.0"] {
            let addr: PciAddress = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        let upper: PciAddress = "0000:AF:0A.1".parse().unwrap();
        assert_eq!(upper.to_string(), "0000:af:0a.1");
    }

    #[test]
    fn refuses_malformed_addresses_with_reason() {
        for text in [
            "",
            "3b:00.0",
            "0000:3b:00",
            "0000:3b:20.0",
            "0000:3b:00.8",
            "000:3b:00.0",
            "0000:3b:0g.0",
            "0000:3b:00.0.1",
            "0000:3b:00:00.0",
        ] {
            let err = text.parse::<PciAddress>().unwrap_err();
            assert_eq!(err.value, text);
            assert!(err.to_string().contains("expected dddd:bb:dd.f"));
        }
    }

    #[test]
    fn orders_numerically_not_lexically() {
        let mut addrs: Vec<PciAddress> =
            ["0000:3b:0a.0", "0000:3b:02.1", "0001:00:00.0", "0000:3b:02.0", "0000:af:00.0"]
                .iter()
                .map(|t| t.parse().unwrap())
                .collect();
        addrs.sort();
        let printed: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["0000:3b:02.0", "0000:3b:02.1", "0000:3b:0a.0", "0000:af:00.0", "0001:00:00.0"]);
    }

    #[test]
    fn ids_and_classes() {
        assert_eq!(PciId::parse("0x8086"), Some(PciId(0x8086)));
        assert_eq!(PciId::parse("158B").map(|i| i.to_string()), Some("158b".to_owned()));
        assert_eq!(PciId::parse("0x"), None);
        assert_eq!(PciId::parse("0x123456"), None);
        let class = PciClass::parse("0x020000").unwrap();
        assert_eq!(class.base(), 2);
        assert_eq!(class.to_string(), "0x020000");
        assert_eq!(PciClass::parse("020000"), None);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let addr: PciAddress = "0000:3b:02.0".parse().unwrap();
        let json = serde_json::to_string(&addr).unwrap();
        assert_eq!(json, "\"0000:3b:02.0\"");
        assert_eq!(serde_json::from_str::<PciAddress>(&json).unwrap(), addr);
        assert!(serde_json::from_str::<PciAddress>("\"0000:3b:02\"").is_err());
    }
}
