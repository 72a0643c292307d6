//! CHECK: the VF's PF-side settings, its netdev in the pod (name, MAC, MTU, up) and its
//! addresses are what ADD made.

use std::net::IpAddr;

use plexus_hw::kernel::Side;
use plexus_hw::vf::VfState;

use super::config::SriovConfig;
use super::record::Records;
use super::{Sriov, SriovError};
use crate::delegate::Request;
use crate::error::Error;
use crate::ipam;
use crate::spec::CniResult;

impl Sriov {
    /// CHECK of the attachment `request` names.
    pub fn check_attachment(&self, request: &Request<'_>) -> Result<(), Error> {
        let (invocation, kernel, raw) = (request.invocation, request.kernel, request.config);
        let ifname = &invocation.ifname;
        let config = SriovConfig::parse(raw)?;
        let vf = config.device_id;
        let records = Records::new(super::data_dir(raw));
        let _lock = records.lock(vf)?;
        let record = records
            .load(vf)?
            .filter(|r| r.container_id == invocation.container_id && r.ifname == *ifname)
            .ok_or_else(|| SriovError::NotAttached { vf, ifname: ifname.clone() })?;
        let changed = |message: String| Error::from(SriovError::Changed(message));
        let now: VfState = self.node.vfs().vf(kernel, &record.pf, record.index).map_err(SriovError::from)?;
        if now != record.applied {
            return Err(changed(format!(
                "VF {vf} settings changed: expected {:?}, found {now:?}",
                record.applied
            )));
        }
        if record.prior_netdev.is_some() {
            let link = kernel
                .link(Side::Pod, ifname)
                .map_err(SriovError::from)?
                .ok_or_else(|| changed(format!("{ifname} is not in the pod's namespace")))?;
            if let Some(mac) = record.pod_mac
                && link.mac != Some(mac)
            {
                let found = link.mac.map(|m| m.to_string());
                return Err(changed(format!("{ifname}: MAC is {found:?}, expected {mac}")));
            }
            if let Some(mtu) = record.pod_mtu
                && link.mtu != Some(mtu)
            {
                return Err(changed(format!("{ifname}: MTU is {:?}, expected {mtu}", link.mtu)));
            }
            if !link.up {
                return Err(changed(format!("{ifname} is down")));
            }
            let present: Vec<(IpAddr, u8)> =
                kernel.addresses(Side::Pod, link.index).map_err(SriovError::from)?;
            if let Some(previous) = raw.get("prevResult") {
                let previous = CniResult::from_value(previous)?;
                let ours = previous
                    .interfaces
                    .iter()
                    .position(|i| i.name == ifname.as_str() && !i.sandbox.is_empty());
                for ip in previous.ips.iter().filter(|ip| ip.interface.is_some() && ip.interface == ours) {
                    if !present.contains(&(ip.address.addr, ip.address.len)) {
                        return Err(changed(format!("{ifname} lacks its address {}", ip.address)));
                    }
                }
            }
        }
        if let Some(request) = ipam::Request::new(raw, invocation)? {
            ipam::check(&request)?;
        }
        Ok(())
    }
}
