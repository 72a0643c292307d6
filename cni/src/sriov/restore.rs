//! DEL, and the restore it shares with the undo of a failed ADD: the VF netdev back into the
//! host under its old name with its MAC, MTU and state, then every PF-side setting, all from
//! the record. Every step is tried and every failure reported.

use std::path::Path;
use std::time::{Duration, Instant};

use plexus_hw::discover::VfLocation;
use plexus_hw::kernel::{Kernel, LinkSettings, Side};

use super::config::SriovConfig;
use super::record::{NetdevState, Record, Records};
use super::{Phases, Sriov, SriovError};
use crate::delegate::Request;
use crate::error::{Error, ErrorList};
use crate::ipam;
use crate::plugin_log::PluginLog;

/// How long a restore waits for the kernel to hand a VF netdev back to the host after the pod's
/// namespace is gone (the kernel does it from a work queue, not at once).
const RETURN_WAIT: Duration = Duration::from_secs(2);

/// Where the VF's netdev may be, for a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSide {
    /// In the call's pod namespace (the session's pod side), when that still exists.
    Call,
    /// Not in any pod the call can reach: its namespace is gone, and the kernel hands the
    /// netdev back to the host.
    Gone,
}

impl Sriov {
    /// Puts the VF back as `record` says it was; keeps going past a failure and returns them
    /// all.
    pub(super) fn restore(
        &self,
        kernel: &dyn Kernel,
        record: &Record,
        location: &VfLocation,
        pod: PodSide,
    ) -> ErrorList {
        let mut errors = ErrorList::new();
        if let Some(prior) = &record.prior_netdev {
            errors.keep(self.return_netdev(kernel, record, prior, location, pod));
        }
        let restored = self.node.vfs().set(kernel, &record.pf, record.index, &record.prior.as_change());
        errors.keep(restored.map_err(SriovError::from));
        errors
    }

    fn return_netdev(
        &self,
        kernel: &dyn Kernel,
        record: &Record,
        prior: &NetdevState,
        location: &VfLocation,
        pod: PodSide,
    ) -> Result<(), SriovError> {
        let in_pod = pod == PodSide::Call && kernel.has_pod();
        // Found by what the kernel says it is, never by name: the pod may have a link of its
        // own under the name the VF was to have, or the VF's host name (a move that failed
        // its rename leaves the VF there under its host name).
        let vfs = self.node.vfs();
        if in_pod
            && let Some(link) = vfs.pod_netdev(kernel, location, prior.index)?
            && let Err(error) = kernel.move_link(Side::Pod, link.index, Some(&prior.name))
            // The kernel moves under the link's pod name when the host has none such, and
            // renames after: a failure may come with the link moved (renamed below). Still in
            // the pod, it is moved as it is.
            && let Some(still) = vfs.pod_netdev(kernel, location, prior.index)?
        {
            kernel.move_link(Side::Pod, still.index, None).map_err(|_| error)?;
        }
        let deadline = Instant::now() + RETURN_WAIT;
        let name = loop {
            // Where sysfs shows the netdev now (its name changed with the move).
            let fresh = self.locate(record.vf)?.unwrap_or_else(|| location.clone());
            if let Some(name) = self.node.vfs().host_netdev(kernel, &fresh)? {
                break name;
            }
            if in_pod || Instant::now() >= deadline {
                return Err(SriovError::Lost {
                    vf: record.vf,
                    netns: record.netns.clone(),
                    ifname: record.ifname.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let info = kernel
            .link(Side::Host, &name)?
            .ok_or_else(|| SriovError::Vanished { vf: record.vf, netdev: name.clone() })?;
        if name != prior.name {
            if let Some(holder) = kernel.link(Side::Host, &prior.name)?
                && holder.index == info.index
            {
                // Its own altname blocks the name (the kernel resolves names through altnames).
                kernel.del_alt_name(Side::Host, info.index, prior.name.as_str())?;
            }
            kernel.rename(Side::Host, info.index, &prior.name)?;
        }
        Ok(kernel.configure(
            Side::Host,
            info.index,
            LinkSettings { mac: prior.mac, mtu: prior.mtu, up: prior.up },
        )?)
    }

    /// DEL, with the time of each phase: `ipam`, `lookup`, `restore`, `record`. Releases the
    /// addresses and restores the VF. Nothing attached is fine (DEL twice, or after a failed
    /// ADD); a VF that vanished is forgotten. Every failure is reported; the record stays until
    /// the VF is restored.
    pub fn del_timed(&self, request: &Request<'_>) -> (Result<(), Error>, Phases) {
        let mut phases = Phases::start();
        let log = PluginLog::new(request.config, "sriov-cni", request.invocation);
        log.info("DEL");
        let result = self.del_inner(request, &mut phases).into_result();
        match &result {
            Ok(()) => log.info("DEL done"),
            Err(error) => log.error(format_args!("DEL failed: {error}")),
        }
        (result, phases)
    }

    fn del_inner(&self, request: &Request<'_>, phases: &mut Phases) -> ErrorList {
        let (invocation, raw) = (request.invocation, request.config);
        let mut errors = ErrorList::new();
        let records = Records::new(super::data_dir(raw));
        // The config's deviceID, or (a config that lost it) the record of this interface.
        let vf = match SriovConfig::parse(raw) {
            Ok(config) => Some(config.device_id),
            Err(_) => records.find(&invocation.container_id, &invocation.ifname),
        };
        // The VF's lock before anything: an ADD of the VF still running (its binary killed on
        // a timeout) reserves its addresses under that lock, and must finish before they are
        // released.
        let lock = match vf.map(|vf| records.lock(vf)).transpose() {
            Ok(lock) => lock,
            Err(e) => {
                errors.push(e);
                return errors;
            }
        };
        errors.keep(ipam::release(raw, invocation));
        phases.mark("ipam");
        let (Some(vf), Some(_lock)) = (vf, lock) else { return errors };
        records.sweep();
        let record = match records.load(vf) {
            Ok(Some(record)) => record,
            Ok(None) => return errors,
            Err(e) => {
                errors.push(e);
                return errors;
            }
        };
        // Attached for someone else since: not ours to touch.
        if record.container_id != invocation.container_id || record.ifname != invocation.ifname {
            return errors;
        }
        let location = match self.locate(vf) {
            Ok(location) => location,
            Err(e) => {
                errors.push(e);
                return errors;
            }
        };
        phases.mark("lookup");
        let mut restored = ErrorList::new();
        match location {
            None => tracing::warn!(vf = %vf, "the VF is gone: nothing to restore"),
            Some(location) => {
                // The VF can be reached in the pod only through the namespace the call names.
                let pod = match invocation.netns.as_deref() {
                    Some(netns) if netns == Path::new(&record.netns) => PodSide::Call,
                    _ => PodSide::Gone,
                };
                restored = self.restore(request.kernel, &record, &location, pod);
            }
        }
        phases.mark("restore");
        if restored.is_empty() {
            errors.keep(records.remove(vf));
        }
        errors.append(restored);
        phases.mark("record");
        errors
    }
}
