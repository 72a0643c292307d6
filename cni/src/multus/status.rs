//! What the pod is told after an ADD: the `k8s.v1.cni.cncf.io/network-status` annotation, one
//! entry per attachment (its interface, addresses, MAC, MTU, DNS, default-route gateways and
//! device-info), and an `AddedInterface` Event per attachment, as Multus writes them.

use super::cache::CacheEntry;
use super::cluster::{Cluster, NetworkStatus, Pod};
use super::devices::{Devices, device_info_for_cni, written_device_info};
use super::plan::Attachment;
use crate::error::Error;
use crate::spec::CniResult;

/// The network-status of each attachment of `plan`, from the results in `entry`.
pub fn statuses(
    plan: &[Attachment],
    entry: &CacheEntry,
    devices: Option<&dyn Devices>,
) -> Result<Vec<NetworkStatus>, Error> {
    let mut statuses = Vec::new();
    for (att, cached) in plan.iter().zip(&entry.attachments).filter(|(att, _)| !att.auxiliary) {
        let result = match &cached.result {
            Some(value) => CniResult::from_value(value)?,
            None => CniResult::default(),
        };
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
        statuses.push(NetworkStatus {
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
    Ok(statuses)
}

/// The `AddedInterface` Event messages of an ADD, exactly as Multus writes them (tools parse
/// them): `Add <ifname> [<address/prefix> ...] from <network>`, every address of the
/// attachment's result, space-separated as Go prints a list; none for an attachment whose
/// result has neither interfaces nor addresses (Multus skips those too).
pub fn added_interface_events(plan: &[Attachment], entry: &CacheEntry) -> Result<Vec<String>, Error> {
    let mut messages = Vec::new();
    for (att, cached) in plan.iter().zip(&entry.attachments).filter(|(att, _)| !att.auxiliary) {
        let Some(value) = &cached.result else { continue };
        let result = CniResult::from_value(value)?;
        if result.interfaces.is_empty() && result.ips.is_empty() {
            continue;
        }
        let ips: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
        messages.push(format!("Add {} [{}] from {}", att.ifname, ips.join(" "), att.name));
    }
    Ok(messages)
}

/// Writes `statuses` on `pod` and records the `AddedInterface` Events `events`.
pub fn report(
    cluster: &dyn Cluster,
    pod: &Pod,
    statuses: &[NetworkStatus],
    events: &[String],
) -> Result<(), Error> {
    crate::phases::timed("status", || cluster.set_network_status(pod, statuses))?;
    for message in events {
        cluster.event(pod, "AddedInterface", message, false);
    }
    Ok(())
}
