//! CNI spec versions.

use std::fmt;
use std::str::FromStr;

/// A CNI spec version Plexus speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.1.0: what libcni reads a config without `cniVersion` as.
    V0_1_0,
    /// 0.2.0: results carry one `ip4` and one `ip6` instead of lists.
    V0_2_0,
    /// 0.3.0: results list interfaces and addresses.
    V0_3_0,
    /// 0.3.1
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: IPs lose their `version`.
    V1_0_0,
    /// 1.1.0: adds STATUS and GC, interface `mtu`, `socketPath`, `pciID`, route details.
    V1_1_0,
}

impl CniVersion {
    /// A plugin config's `cniVersion` (`what` names the config in errors): 1.0.0 when it says
    /// none, an error when it says one we do not speak.
    pub fn of_config(config: &serde_json::Value, what: &str) -> Result<Self, super::ConfigError> {
        match config.get("cniVersion").and_then(serde_json::Value::as_str) {
            None => Ok(Self::V1_0_0),
            Some(text) => {
                text.parse().map_err(|error| super::ConfigError::Version { what: what.to_owned(), error })
            }
        }
    }

    /// Every version, oldest first.
    pub const ALL: [CniVersion; 7] =
        [Self::V0_1_0, Self::V0_2_0, Self::V0_3_0, Self::V0_3_1, Self::V0_4_0, Self::V1_0_0, Self::V1_1_0];
    /// The newest.
    pub const LATEST: CniVersion = Self::V1_1_0;

    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1_0 => "0.1.0",
            Self::V0_2_0 => "0.2.0",
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// Whether results carry `"version"` on each IP (0.3.x and 0.4.0).
    pub fn ips_have_version(self) -> bool {
        (Self::V0_3_0..Self::V1_0_0).contains(&self)
    }

    /// Whether results have the 0.1.0/0.2.0 shape (`ip4`, `ip6`, no interfaces).
    pub fn legacy_result(self) -> bool {
        self < Self::V0_3_0
    }
}

/// A `cniVersion` Plexus does not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported CNI version {0:?} (supported: {list})", list = supported())]
pub struct UnsupportedVersion(pub String);

fn supported() -> String {
    CniVersion::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
}

impl FromStr for CniVersion {
    type Err = UnsupportedVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnsupportedVersion(s.to_owned()))
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::CniVersion;

    #[test]
    fn the_shim_answers_errors_in_the_newest_version_too() {
        assert_eq!(plexus_shim::NEWEST_CNI_VERSION, CniVersion::LATEST.as_str());
    }
}
