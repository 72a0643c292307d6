//! What the pod is told after an ADD: the `k8s.v1.cni.cncf.io/network-status` annotation, one
//! entry per attachment (its interface, addresses, MAC, MTU, DNS, default-route gateways and
//! device-info), and an `AddedInterface` Event per attachment, as Multus writes them.

use super::cache::CacheEntry;
use super::cluster::{Cluster, NetworkStatus, Pod};
use super::devices::{Devices, device_info_for_cni, written_device_info};
use super::plan::Attachment;
use crate::error::Error;
use crate::spec::CniResult;

/// What an ADD tells the pod: its network-status, and its `AddedInterface` Event messages.
#[derive(Debug, Default)]
pub struct Report {
    /// One entry per attachment.
    pub statuses: Vec<NetworkStatus>,
    /// Exactly as Multus writes them (tools parse them): `Add <ifname> [<address/prefix> ...]
    /// from <network>`, every address of the attachment's result, space-separated as Go
    /// prints a list; none for an attachment whose result has neither interfaces nor
    /// addresses (Multus skips those too).
    pub events: Vec<String>,
}

/// The report of `plan`, from the results in `entry` (each read once).
pub fn report_of(
    plan: &[Attachment],
    entry: &CacheEntry,
    devices: Option<&dyn Devices>,
) -> Result<Report, Error> {
    let mut report = Report::default();
    for (att, cached) in plan.iter().zip(&entry.attachments).filter(|(att, _)| !att.auxiliary) {
        let result = match &cached.result {
            Some(value) => CniResult::from_value(value)?,
            None => CniResult::default(),
        };
        if !result.interfaces.is_empty() || !result.ips.is_empty() {
            let ips: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
            report.events.push(format!("Add {} [{}] from {}", att.ifname, ips.join(" "), att.name));
        }
        let ours = |i: &&crate::spec::result::Interface| !i.sandbox.is_empty();
        let index = result
            .interfaces
            .iter()
            .position(|i| i.name == att.ifname.as_str() && ours(&i))
            .or_else(|| result.interfaces.iter().position(|i| ours(&i)));
        let interface = index.map(|i| &result.interfaces[i]);
        let ips = result
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == index)
            .map(|ip| ip.address.addr.to_string())
            .collect();
        let gateway =
            att.default_route().map(|gws| gws.iter().map(ToString::to_string).collect()).unwrap_or_default();
        let device_info = devices.and_then(|devices| match &att.device {
            Some((resource, id)) => device_info_for_cni(
                devices.devinfo_dir(),
                resource,
                id,
                &entry.container_id,
                att.ifname.as_str(),
            ),
            None => written_device_info(devices.devinfo_dir(), &entry.container_id, att.ifname.as_str()),
        });
        report.statuses.push(NetworkStatus {
            name: att.name.clone(),
            interface: Some(att.ifname.to_string()),
            ips,
            mac: interface.map(|i| i.mac.clone()).filter(|m| !m.is_empty()),
            mtu: interface.and_then(|i| i.mtu),
            default: att.cluster_network,
            dns: result.dns.clone(),
            gateway,
            device_info,
        });
    }
    Ok(report)
}

/// Writes the report's statuses on `pod` and records its `AddedInterface` Events.
pub fn report(cluster: &dyn Cluster, pod: &Pod, report: &Report) -> Result<(), Error> {
    crate::phases::timed("status", || cluster.set_network_status(pod, &report.statuses))?;
    for message in &report.events {
        cluster.event(pod, "AddedInterface", message, false);
    }
    Ok(())
}
