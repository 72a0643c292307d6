//! The built-in `sriov` delegate: a hardware VF into the pod, configured, and restored exactly.
//!
//! - [`config`]: the SR-IOV CNI plugin's config keys.
//! - [`record`]: what an attachment changed, on disk, per VF.
//! - [`attach`]: ADD, DEL and CHECK.

pub mod attach;
pub mod config;
pub mod record;

pub use attach::{Phases, SYSFS_ROOT_ENV, Sriov};

use serde_json::Value;

use crate::delegate::InProcessPlugin;
use crate::spec::{CniError, Command, ErrorCode, Invocation};

impl InProcessPlugin for Sriov {
    fn call(
        &self,
        command: Command,
        invocation: &Invocation,
        ifname: &str,
        config: &Value,
        _cluster: Option<&dyn crate::multus::cluster::Cluster>,
    ) -> Result<Option<Value>, CniError> {
        let report = |phases: Phases| {
            for (name, took) in phases.spans {
                crate::phases::record(format!("sriov {name}"), took);
            }
        };
        match command {
            Command::Add => {
                let (result, phases) = self.add_timed(invocation, ifname, config);
                report(phases);
                result.map(Some)
            }
            Command::Del => {
                let (result, phases) = self.del_timed(invocation, ifname, config);
                report(phases);
                result.map(|()| None)
            }
            Command::Check => self.check(invocation, ifname, config).map(|()| None),
            other => Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("sriov: {} is not a delegate command", other.as_str()),
            )),
        }
    }
}
