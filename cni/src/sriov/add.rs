//! ADD: the VF's prior state recorded, its PF-side settings applied, its netdev moved into the
//! pod and renamed in one request, configured, addressed. A failed step undoes every earlier
//! one from the record ([`super::restore`]).

use plexus_hw::IfName;
use plexus_hw::discover::VfLocation;
use plexus_hw::kernel::{Kernel, LinkInfo, LinkSettings, Side};
use plexus_hw::netns::Netns;
use serde_json::Value;

use super::config::SriovConfig;
use super::record::{NetdevState, Record, Records};
use super::restore::PodSide;
use super::{Phases, Sriov, SriovError};
use crate::delegate::Request;
use crate::error::Error;
use crate::ipam;
use crate::plugin_log::PluginLog;
use crate::spec::result::{CniResult, Interface};

impl Sriov {
    /// ADD, with the time of each phase: `lookup`, `record`, `vf`, `move`, `link`, `ipam`,
    /// `addresses`, `result`. Returns the result as JSON of the config's `cniVersion`.
    pub fn add_timed(&self, request: &Request<'_>) -> (Result<Value, Error>, Phases) {
        let mut phases = Phases::start();
        let log = PluginLog::new(request.config, "sriov-cni", request.invocation);
        log.info("ADD");
        let result = self.add_inner(request, &mut phases, &log);
        match &result {
            Ok(value) => log.info(format_args!("ADD done: {value}")),
            Err(error) => log.error(format_args!("ADD failed: {error}")),
        }
        (result, phases)
    }

    fn add_inner(&self, request: &Request<'_>, phases: &mut Phases, log: &PluginLog) -> Result<Value, Error> {
        let (invocation, kernel, raw) = (request.invocation, request.kernel, request.config);
        let config = SriovConfig::parse(raw)?;
        let version = ipam::result_version(raw, "sriov config")?;
        let vf = config.device_id;
        let sysfs = self.node.sysfs().path().to_owned();
        let location = self.locate(vf)?.ok_or(SriovError::NoDevice { vf, sysfs })?;
        let pf = location.pf_netdev.clone().ok_or(SriovError::NoPfNetdev { vf, pf: location.pf })?;
        log.debug(format_args!(
            "VF {vf}: index {} of PF {pf}, driver {}, netdev {}",
            location.index,
            location.driver.as_deref().unwrap_or("none"),
            location.netdev.as_ref().map_or("none", |n| n.as_str())
        ));
        let records = Records::new(config.data_dir.clone().unwrap_or_else(|| super::data_dir(raw)));
        let _lock = records.lock(vf)?;
        if let Some(old) = records.load(vf)? {
            if old.container_id == invocation.container_id && old.ifname == invocation.ifname {
                return Err(SriovError::AlreadyAttached { vf, ifname: invocation.ifname.clone() }.into());
            }
            if Netns::is_alive(std::path::Path::new(&old.netns)) {
                return Err(SriovError::InUse {
                    vf,
                    container: old.container_id,
                    netns: old.netns,
                    ifname: old.ifname,
                }
                .into());
            }
            // Its pod died without a DEL: put the VF back before giving it out again.
            tracing::warn!(vf = %vf, container = %old.container_id, "restoring a VF left by a pod whose namespace is gone");
            self.restore(kernel, &old, &location, PodSide::Gone).into_result()?;
            records.remove(vf)?;
        }
        let netdev = if location.is_dpdk() {
            None
        } else {
            let name = self.node.vfs().host_netdev(kernel, &location).map_err(SriovError::from)?.ok_or_else(
                || SriovError::NoHostNetdev {
                    vf,
                    driver: location.driver.clone().unwrap_or_else(|| "none".into()),
                },
            )?;
            let info = kernel
                .link(Side::Host, &name)
                .map_err(SriovError::from)?
                .ok_or_else(|| SriovError::Vanished { vf, netdev: name.clone() })?;
            // Checked before anything changes: a name the pod has (its `lo`, its own `eth0`)
            // would fail the rename after the kernel moved the VF.
            if kernel.link(Side::Pod, &invocation.ifname).map_err(SriovError::from)?.is_some() {
                return Err(SriovError::NameTaken {
                    ifname: invocation.ifname.clone(),
                    netns: invocation.netns_str(),
                }
                .into());
            }
            Some((name, info))
        };
        phases.mark("lookup");

        let prior = self.node.vfs().vf(kernel, &pf, location.index).map_err(SriovError::from)?;
        let record = Record {
            container_id: invocation.container_id.clone(),
            netns: invocation.netns_str(),
            ifname: invocation.ifname.clone(),
            vf,
            pf: pf.clone(),
            index: location.index,
            applied: prior.with(&config.change),
            prior,
            prior_netdev: netdev.as_ref().map(|(name, info)| NetdevState {
                name: name.clone(),
                index: Some(info.index),
                mac: info.mac,
                mtu: info.mtu,
                up: info.up,
            }),
            pod_mac: config.mac,
            pod_mtu: config.mtu,
        };
        records.save(&record)?;
        phases.mark("record");

        let netdev = netdev.as_ref().map(|(_, info)| info);
        let attached =
            self.attach(request, &record, &location, &config, netdev, phases).and_then(|mut result| {
                result.interfaces[0].sandbox = invocation.netns_str();
                // Only an IPAM that gave no address fails here (see `ipam::result_version`).
                result.to_value(version).map_err(|e| {
                    if let Err(undo) = ipam::release(request.config, invocation) {
                        tracing::warn!(vf = %vf, "releasing the addresses of a failed ADD: {undo}");
                    }
                    Error::from(e)
                })
            });
        match attached {
            Ok(value) => {
                phases.mark("result");
                Ok(value)
            }
            Err(error) => {
                let undone = self.restore(kernel, &record, &location, PodSide::Call).into_result();
                if let Err(undo) = undone {
                    tracing::error!(vf = %vf, "undoing a failed ADD: {undo}");
                    return Err(error.context(format!(
                        "and undoing it failed ({undo}); the record {} is kept for DEL",
                        records.dir().display()
                    )));
                }
                records.remove(vf)?;
                Err(error)
            }
        }
    }

    /// The steps after the record: VF settings, the netdev into the pod, IPAM. A failure
    /// returns before the next step; IPAM is released here when a later step fails.
    fn attach(
        &self,
        request: &Request<'_>,
        record: &Record,
        location: &VfLocation,
        config: &SriovConfig,
        netdev: Option<&LinkInfo>,
        phases: &mut Phases,
    ) -> Result<CniResult, Error> {
        let kernel = request.kernel;
        if config.change != Default::default() {
            self.node
                .vfs()
                .set(kernel, &record.pf, record.index, &config.change)
                .map_err(SriovError::from)?;
        }
        phases.mark("vf");

        let mut interface = Interface {
            name: record.ifname.to_string(),
            pci_id: Some(record.vf.to_string()),
            ..Interface::default()
        };
        let mut pod_index = None;
        if let Some(info) = netdev {
            let index = self.move_into_pod(kernel, info, location, &record.ifname)?;
            phases.mark("move");
            let settings = LinkSettings { mac: config.mac, mtu: config.mtu, up: true };
            kernel.configure(Side::Pod, index, settings).map_err(SriovError::from)?;
            interface.mac = config.mac.or(info.mac).map(|m| m.to_string()).unwrap_or_default();
            interface.mtu = config.mtu.or(info.mtu);
            pod_index = Some(index);
            phases.mark("link");
        } else if record.applied.mac.0 != [0; 6] {
            interface.mac = record.applied.mac.to_string();
        }

        let mut result = CniResult::default();
        if let Some(ipam_request) = ipam::Request::new(request.config, request.invocation)? {
            result = ipam::add(&ipam_request)?;
            phases.mark("ipam");
            for ip in &mut result.ips {
                ip.interface = Some(0);
            }
            if let Some(index) = pod_index
                && let Err(e) = ipam::configure(kernel, Side::Pod, index, &result)
            {
                if let Err(undo) = ipam::del(&ipam_request) {
                    tracing::error!("releasing addresses after a failed ADD: {undo}");
                }
                return Err(e.into());
            }
            phases.mark("addresses");
        }
        result.interfaces = vec![interface];
        Ok(result)
    }
}

impl Sriov {
    /// Moves the VF netdev into the pod and renames it there, in one request; returns its index
    /// in the pod, where it is found by what the kernel says it is.
    fn move_into_pod(
        &self,
        kernel: &dyn Kernel,
        info: &LinkInfo,
        location: &VfLocation,
        pod_name: &IfName,
    ) -> Result<u32, Error> {
        // An altname is a name too: one equal to the wanted name (left by udev or by an earlier
        // rename) makes the rename fail with EEXIST after the move. Drop it first.
        if info.alt_names.iter().any(|a| a == pod_name.as_str()) {
            kernel.del_alt_name(Side::Host, info.index, pod_name.as_str()).map_err(SriovError::from)?;
        }
        if let Err(error) = kernel.move_link(Side::Host, info.index, Some(pod_name)) {
            // The kernel moves first and renames after: a link of that name made in the pod
            // meanwhile fails the rename with the VF already in the pod. The restore finds it
            // there by what it is.
            let context = format!("moving VF netdev {} into the pod as {pod_name}", info.name);
            return Err(Error::from(SriovError::from(error)).context(context));
        }
        let moved =
            self.node.vfs().pod_netdev(kernel, location, Some(info.index)).map_err(SriovError::from)?;
        match moved {
            Some(link) if link.name == pod_name.as_str() => Ok(link.index),
            _ => Err(SriovError::NotMoved { vf: location.address, ifname: pod_name.clone() }.into()),
        }
    }
}
