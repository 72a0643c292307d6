//! Small validated types shared by discovery, netlink and the crates above.

use std::fmt;
use std::str::FromStr;

/// Serializes a type as its `Display` text and deserializes it through `FromStr`, so JSON
/// carries `"0000:3b:02.0"` and `"ens1f0"` and a bad value fails with the type's own error.
macro_rules! serde_as_text {
    ($($ty:ty),*) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
pub(crate) use serde_as_text;

serde_as_text!(IfName, MacAddr);

/// A network interface name the kernel accepts: 1-15 bytes, not `.` or `..`, without `/`,
/// `:` or whitespace (the rules of the kernel's `dev_valid_name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

/// A string the kernel would refuse as an interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid interface name {value:?}: {reason}")]
pub struct IfNameError {
    /// The text given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl IfName {
    /// The longest name: `IFNAMSIZ` less the terminating NUL.
    pub const MAX_LEN: usize = 15;

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = IfNameError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |reason| Err(IfNameError { value: value.to_owned(), reason });
        if value.is_empty() {
            return err("empty");
        }
        if value.len() > Self::MAX_LEN {
            return err("longer than 15 bytes");
        }
        if value == "." || value == ".." {
            return err("reserved name");
        }
        if value.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
            return err("contains '/', ':' or whitespace");
        }
        // The kernel reads `%d` in a name as "the first free number" (`dev_alloc_name`): the
        // link would come out named otherwise than asked, and nothing could find it again.
        if value.contains('%') {
            return err("contains '%', which the kernel expands");
        }
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An Ethernet MAC address; printed lower-case with colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (expected six hex pairs separated by ':')")]
pub struct MacAddrError(pub String);

impl FromStr for MacAddr {
    type Err = MacAddrError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 6];
        let mut parts = value.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(|| MacAddrError(value.to_owned()))?;
            if part.len() != 2 {
                return Err(MacAddrError(value.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacAddrError(value.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacAddrError(value.to_owned()));
        }
        Ok(Self(bytes))
    }
}

impl MacAddr {
    /// Parses an address a link can have: a well-formed one that is [`Self::unassignable`]
    /// is refused with the reason.
    pub fn parse_assignable(text: &str) -> Result<Self, String> {
        let mac: Self = text.parse().map_err(|e: MacAddrError| e.to_string())?;
        match mac.unassignable() {
            Some(why) => Err(format!("{mac} is {why}, which no interface can have")),
            None => Ok(mac),
        }
    }

    /// Why a link cannot have this address, when it cannot: the kernel refuses a multicast
    /// (broadcast included) or all-zero address on an Ethernet link (`is_valid_ether_addr`),
    /// and would answer only "Cannot assign requested address".
    pub fn unassignable(&self) -> Option<&'static str> {
        if self.0 == [0; 6] {
            Some("all zero")
        } else if self.0 == [0xff; 6] {
            Some("the broadcast address")
        } else if self.0[0] & 1 == 1 {
            Some("a multicast address (the first byte is odd)")
        } else {
            None
        }
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The index of a VF under its PF (`virtfn<N>`), as the kernel and `ip link set vf N` use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct VfIndex(pub u32);

impl fmt::Display for VfIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An IOMMU group number (the basename of the `iommu_group` link); a VF bound to vfio-pci is
/// opened through `/dev/vfio/<group>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct IommuGroup(pub u32);

impl fmt::Display for IommuGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The link layer of a netdev, from `net/<if>/type` (an `ARPHRD_*` number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// `ARPHRD_ETHER` (1).
    Ether,
    /// `ARPHRD_INFINIBAND` (32).
    Infiniband,
    /// `ARPHRD_LOOPBACK` (772).
    Loopback,
    /// `ARPHRD_NONE` (65534), as tun devices have.
    None,
    /// Any other `ARPHRD_*` value.
    Other(u16),
}

impl LinkType {
    /// The link type of an `ARPHRD_*` number.
    pub fn from_arphrd(value: u16) -> Self {
        match value {
            1 => Self::Ether,
            32 => Self::Infiniband,
            772 => Self::Loopback,
            65534 => Self::None,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for LinkType {
    /// The names the SR-IOV device plugin's `linkTypes` selector uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ether => f.write_str("ether"),
            Self::Infiniband => f.write_str("infiniband"),
            Self::Loopback => f.write_str("loopback"),
            Self::None => f.write_str("none"),
            Self::Other(n) => write!(f, "{n}"),
        }
    }
}

/// RFC 2863 operational state, from `net/<if>/operstate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperState {
    /// `unknown`: the driver does not report it (veth before carrier, many virtual links).
    Unknown,
    /// `notpresent`.
    NotPresent,
    /// `down`.
    Down,
    /// `lowerlayerdown`.
    LowerLayerDown,
    /// `testing`.
    Testing,
    /// `dormant`.
    Dormant,
    /// `up`.
    Up,
}

impl OperState {
    /// Parses the kernel's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "unknown" => Self::Unknown,
            "notpresent" => Self::NotPresent,
            "down" => Self::Down,
            "lowerlayerdown" => Self::LowerLayerDown,
            "testing" => Self::Testing,
            "dormant" => Self::Dormant,
            "up" => Self::Up,
            _ => return None,
        })
    }

    /// The kernel's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::NotPresent => "notpresent",
            Self::Down => "down",
            Self::LowerLayerDown => "lowerlayerdown",
            Self::Testing => "testing",
            Self::Dormant => "dormant",
            Self::Up => "up",
        }
    }
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_kernel_rules() {
        for ok in ["eth0", "ens1f0v12", "a", "net-1_x.y", "123456789012345"] {
            assert_eq!(ok.parse::<IfName>().unwrap().as_str(), ok);
        }
        for bad in ["", ".", "..", "1234567890123456", "a/b", "a:b", "a b", "tab\t", "eth%d", "%"] {
            let err = bad.parse::<IfName>().unwrap_err();
            assert_eq!(err.value, bad);
        }
    }

    #[test]
    fn mac_addresses_round_trip() {
        let mac: MacAddr = "02:AB:cd:00:01:ff".parse().unwrap();
        assert_eq!(mac.to_string(), "02:ab:cd:00:01:ff");
        for bad in ["", "02:ab:cd:00:01", "02:ab:cd:00:01:ff:00", "2:ab:cd:00:01:ff", "zz:ab:cd:00:01:ff"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert_eq!(mac.unassignable(), None);
        for (bad, why) in [
            ("00:00:00:00:00:00", "all zero"),
            ("ff:ff:ff:ff:ff:ff", "broadcast"),
            ("01:00:5e:00:00:01", "multicast"),
            ("03:00:00:00:00:01", "multicast"),
        ] {
            let why_not = bad.parse::<MacAddr>().unwrap().unassignable().unwrap();
            assert!(why_not.contains(why), "{bad}: {why_not}");
        }
    }

    #[test]
    fn link_types_and_operstates() {
        assert_eq!(LinkType::from_arphrd(1).to_string(), "ether");
        assert_eq!(LinkType::from_arphrd(32).to_string(), "infiniband");
        assert_eq!(LinkType::from_arphrd(776).to_string(), "776");
        for s in ["unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up"] {
            assert_eq!(OperState::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(OperState::parse("UP"), None);
    }
}
