//! The attachment itself: ADD gives the pod a VF, configured; DEL puts back everything the
//! VF was before; CHECK compares the VF with what ADD made.
//!
//! Every kernel request goes over netlink sockets opened inside the namespace they act on
//! (see [`plexus_hw::netlink`]); the PF side of the VF goes through the
//! [`VfControl`] seam, real or simulated. The record ([`super::record`]) is written before
//! anything changes, so a failed ADD, a DEL and a crash all restore from the same facts, with
//! the same code.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_hw::discover::{VfLocation, locate_vf};
use plexus_hw::netlink::{LinkInfo, Netlink, NetlinkError};
use plexus_hw::netns::Netns;
use plexus_hw::vf::{VfControl, VfError, VfState};
use plexus_hw::{IfName, PciAddress, SysfsRoot};
use serde_json::Value;

use super::config::SriovConfig;
use super::record::{DEFAULT_DATA_DIR, NetdevState, Record, Records};
use crate::ipam;
use crate::spec::result::{CniResult, Interface};
use crate::spec::version::CniVersion;
use crate::spec::{CniError, ErrorCode, Invocation};

/// The environment variable naming the sysfs root (a simulated node's root in tests and the
/// demo); `/sys` when unset.
pub const SYSFS_ROOT_ENV: &str = "PLEXUS_SYSFS_ROOT";

/// How long DEL waits for the kernel to hand a VF netdev back to the host after the pod's
/// namespace is gone (the kernel does it from a work queue, not at once).
const RETURN_WAIT: Duration = Duration::from_secs(2);

/// The time each phase of one call took, in order.
#[derive(Debug, Clone, Default)]
pub struct Phases {
    last: Option<Instant>,
    /// Phase name and duration.
    pub spans: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn start() -> Self {
        Self { last: Some(Instant::now()), spans: Vec::new() }
    }

    /// Ends phase `name` now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        if let Some(last) = self.last {
            self.spans.push((name, now - last));
        }
        self.last = Some(now);
    }

    /// The time of phase `name`, zero when it did not run.
    pub fn get(&self, name: &str) -> Duration {
        self.spans.iter().filter(|(n, _)| *n == name).map(|(_, d)| *d).sum()
    }
}

fn plugin_error(message: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Plugin, format!("sriov: {message}"))
}

fn netlink(e: NetlinkError) -> CniError {
    plugin_error(e)
}

fn vf_error(e: VfError) -> CniError {
    plugin_error(e)
}

/// Netlink connections of one call: the host namespace (where PFs and idle VF netdevs live)
/// and, while it exists, the pod's.
struct Links {
    runtime: tokio::runtime::Runtime,
    host: Netns,
    host_nl: Netlink,
    pod: Option<(Netns, Netlink)>,
}

impl Links {
    fn open(control: &dyn VfControl, pod: Option<&str>) -> Result<Self, CniError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| plugin_error(format!("starting a netlink runtime: {e}")))?;
        let netns_error = |e: plexus_hw::netns::NetnsError| plugin_error(e);
        let host = match control.netns() {
            Some(path) => Netns::open(path),
            None => Netns::current(),
        }
        .map_err(netns_error)?;
        let host_nl = runtime.block_on(Netlink::connect(control.netns().map(|_| &host))).map_err(netlink)?;
        let pod = match pod {
            Some(path) => {
                let netns = Netns::open(path).map_err(netns_error)?;
                let nl = runtime.block_on(Netlink::connect(Some(&netns))).map_err(netlink)?;
                Some((netns, nl))
            }
            None => None,
        };
        Ok(Self { runtime, host, host_nl, pod })
    }

    fn run<T>(&self, f: impl Future<Output = Result<T, NetlinkError>>) -> Result<T, CniError> {
        self.runtime.block_on(f).map_err(netlink)
    }

    fn pod(&self) -> Result<&(Netns, Netlink), CniError> {
        self.pod.as_ref().ok_or_else(|| plugin_error("the pod's network namespace is gone"))
    }
}

/// The built-in `sriov` delegate.
#[derive(Clone)]
pub struct Sriov {
    sysfs: SysfsRoot,
    control: Arc<dyn VfControl>,
}

impl std::fmt::Debug for Sriov {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sriov")
            .field("sysfs", &self.sysfs.path())
            .field("netns", &self.control.netns())
            .finish()
    }
}

fn data_dir(raw: &Value) -> std::path::PathBuf {
    crate::files::data_dir(raw, DEFAULT_DATA_DIR)
}

impl Sriov {
    /// The delegate for the node whose sysfs is at `sysfs`, with VF control `control`.
    pub fn new(sysfs: SysfsRoot, control: Arc<dyn VfControl>) -> Self {
        Self { sysfs, control }
    }

    /// The delegate for the node `PLEXUS_SYSFS_ROOT` names (a simulated node's root selects
    /// the simulated VF control), else the real one at `/sys`.
    pub fn from_env() -> Result<Self, CniError> {
        let sysfs = match std::env::var_os(SYSFS_ROOT_ENV) {
            Some(root) if !root.is_empty() => SysfsRoot::new(root),
            _ => SysfsRoot::default(),
        };
        let control = plexus_hw::vf::control_for(&sysfs).map_err(vf_error)?;
        Ok(Self::new(sysfs, control))
    }

    fn locate(&self, vf: PciAddress) -> Result<Option<VfLocation>, CniError> {
        locate_vf(&self.sysfs, vf).map_err(|e| plugin_error(format!("VF {vf}: {e}")))
    }

    /// ADD: returns the result as JSON of the config's `cniVersion`.
    pub fn add(&self, invocation: &Invocation, ifname: &str, raw: &Value) -> Result<Value, CniError> {
        self.add_timed(invocation, ifname, raw).0
    }

    /// ADD, with the time of each phase: `lookup`, `record`, `vf`, `move`, `link`, `ipam`,
    /// `addresses`, `result`.
    pub fn add_timed(
        &self,
        invocation: &Invocation,
        ifname: &str,
        raw: &Value,
    ) -> (Result<Value, CniError>, Phases) {
        let mut phases = Phases::start();
        let result = self.add_inner(invocation, ifname, raw, &mut phases);
        (result, phases)
    }

    fn add_inner(
        &self,
        invocation: &Invocation,
        ifname: &str,
        raw: &Value,
        phases: &mut Phases,
    ) -> Result<Value, CniError> {
        let config = SriovConfig::parse(raw)?;
        let version = CniVersion::of_config(raw)?;
        let pod_name: IfName = ifname
            .parse()
            .map_err(|e| CniError::new(ErrorCode::InvalidEnvironment, format!("CNI_IFNAME: {e}")))?;
        let vf = config.device_id;
        let location = self.locate(vf)?.ok_or_else(|| {
            plugin_error(format!("no PCI device {vf} under {}", self.sysfs.path().display()))
        })?;
        let pf = location.pf_netdev.clone().ok_or_else(|| {
            plugin_error(format!("VF {vf}: its PF {} has no netdev to configure VFs through", location.pf))
        })?;
        let records = Records::new(config.data_dir.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        let _lock = records.lock(vf)?;
        if let Some(old) = records.load(vf)? {
            if old.container_id == invocation.container_id && old.ifname == ifname {
                return Err(plugin_error(format!(
                    "VF {vf} is already attached to this container as {ifname}"
                )));
            }
            if Netns::is_alive(Path::new(&old.netns)) {
                return Err(plugin_error(format!(
                    "VF {vf} is in use by container {} (netns {}, interface {})",
                    old.container_id, old.netns, old.ifname
                )));
            }
            // Its pod died without a DEL: put the VF back before giving it out again.
            tracing::warn!(vf = %vf, container = %old.container_id, "restoring a VF left by a pod whose namespace is gone");
            let links = Links::open(&*self.control, None)?;
            self.restore(&links, &old, &location)?;
            records.remove(vf)?;
        }
        let links = Links::open(&*self.control, Some(&invocation.netns))?;
        let netdev = if location.is_dpdk() {
            None
        } else {
            let name = self.control.host_netdev(&self.sysfs, &location).map_err(vf_error)?.ok_or_else(|| {
                plugin_error(format!(
                    "VF {vf} has no netdev in the host namespace (driver {}): attached elsewhere, or not a netdev driver",
                    location.driver.as_deref().unwrap_or("none")
                ))
            })?;
            let info = links
                .run(links.host_nl.link(&name))?
                .ok_or_else(|| plugin_error(format!("VF {vf}: its netdev {name} vanished")))?;
            Some((name, info))
        };
        phases.mark("lookup");

        let prior = self.control.vf(&pf, location.index).map_err(vf_error)?;
        let record = Record {
            container_id: invocation.container_id.clone(),
            netns: invocation.netns.clone(),
            ifname: ifname.to_owned(),
            vf,
            pf: pf.clone(),
            index: location.index,
            applied: prior.with(&config.change),
            prior,
            prior_netdev: netdev.as_ref().map(|(name, info)| NetdevState {
                name: name.clone(),
                mac: info.mac,
                mtu: info.mtu,
                up: info.up,
            }),
            pod_mac: config.mac,
            pod_mtu: config.mtu,
        };
        records.save(&record)?;
        phases.mark("record");

        match self.attach(
            &links,
            &record,
            &config,
            netdev.as_ref().map(|(_, info)| info),
            &pod_name,
            invocation,
            raw,
            phases,
        ) {
            Ok(mut result) => {
                result.interfaces[0].sandbox = invocation.netns.clone();
                let value = result.to_value(version);
                phases.mark("result");
                Ok(value)
            }
            Err(error) => {
                if let Err(undo) = self.restore(&links, &record, &location) {
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
    #[allow(clippy::too_many_arguments)]
    fn attach(
        &self,
        links: &Links,
        record: &Record,
        config: &SriovConfig,
        netdev: Option<&LinkInfo>,
        pod_name: &IfName,
        invocation: &Invocation,
        raw: &Value,
        phases: &mut Phases,
    ) -> Result<CniResult, CniError> {
        if config.change != Default::default() {
            self.control.set(&record.pf, record.index, &config.change).map_err(vf_error)?;
        }
        phases.mark("vf");

        let mut interface = Interface {
            name: pod_name.to_string(),
            pci_id: Some(record.vf.to_string()),
            ..Interface::default()
        };
        let mut pod_index = None;
        if let Some(info) = netdev {
            let (pod, pod_nl) = links.pod()?;
            let index = self.move_into_pod(links, info, pod, pod_nl, pod_name)?;
            phases.mark("move");
            links.run(pod_nl.configure(index, config.mac, config.mtu, true))?;
            interface.mac = config.mac.or(info.mac).map(|m| m.to_string()).unwrap_or_default();
            interface.mtu = config.mtu.or(info.mtu);
            pod_index = Some(index);
            phases.mark("link");
        } else if record.applied.mac.0 != [0; 6] {
            interface.mac = record.applied.mac.to_string();
        }

        let mut result = CniResult::default();
        if let Some(request) = ipam::Request::new(raw, invocation, &record.ifname)? {
            result = ipam::add(&request)?;
            phases.mark("ipam");
            for ip in &mut result.ips {
                ip.interface = Some(0);
            }
            if let (Some(index), Some((_, pod_nl))) = (pod_index, &links.pod)
                && let Err(e) = links.runtime.block_on(ipam::configure(pod_nl, index, &result))
            {
                if let Err(undo) = ipam::del(&request) {
                    tracing::error!("releasing addresses after a failed ADD: {undo}");
                }
                return Err(e);
            }
            phases.mark("addresses");
        }
        result.interfaces = vec![interface];
        Ok(result)
    }

    /// Moves the VF netdev into the pod and renames it there, in one request; returns its
    /// index in the pod.
    fn move_into_pod(
        &self,
        links: &Links,
        info: &LinkInfo,
        pod: &Netns,
        pod_nl: &Netlink,
        pod_name: &IfName,
    ) -> Result<u32, CniError> {
        // An altname is a name too: one equal to the wanted name (left by udev or by an earlier
        // rename) makes the rename fail with EEXIST, and the kernel applies the move before the
        // rename, so the request fails half done. Drop it first.
        if info.alt_names.iter().any(|a| a == pod_name.as_str()) {
            links.run(links.host_nl.del_alt_name(info.index, pod_name.as_str()))?;
        }
        let moved = links.run(links.host_nl.move_to(info.index, pod, Some(pod_name)));
        if let Err(error) = moved {
            // Half done: moved, not renamed (a name or altname in the pod took the wanted
            // name). Whatever is there is for DEL's restore, which looks under both names.
            return Err(error.context(format!("moving VF netdev {} into the pod as {pod_name}", info.name)));
        }
        links
            .run(pod_nl.link(pod_name))?
            .map(|l| l.index)
            .ok_or_else(|| plugin_error(format!("{pod_name} is not in the pod after the move")))
    }

    /// Puts the VF back as `record` says it was: the netdev into the host under its old name
    /// with its MAC, MTU and state, then every PF-side setting. Keeps going past a failure
    /// and returns the first.
    fn restore(&self, links: &Links, record: &Record, location: &VfLocation) -> Result<(), CniError> {
        let mut first = None;
        if let Some(prior) = &record.prior_netdev
            && let Err(e) = self.return_netdev(links, record, prior, location)
        {
            first = Some(e);
        }
        if let Err(e) = self.control.set(&record.pf, record.index, &record.prior.as_change()) {
            first.get_or_insert(vf_error(e));
        }
        first.map_or(Ok(()), Err)
    }

    fn return_netdev(
        &self,
        links: &Links,
        record: &Record,
        prior: &NetdevState,
        location: &VfLocation,
    ) -> Result<(), CniError> {
        let pod_alive = Netns::is_alive(Path::new(&record.netns));
        if pod_alive {
            let pod = Netns::open(&record.netns).map_err(plugin_error)?;
            let pod_nl = links.run(Netlink::connect(Some(&pod)))?;
            // Under the pod name; or under the host name when an ADD's move half failed.
            let pod_name: Option<IfName> = record.ifname.parse().ok();
            for name in pod_name.iter().chain(std::iter::once(&prior.name)) {
                if let Some(link) = links.run(pod_nl.link(name))? {
                    if links.run(pod_nl.move_to(link.index, &links.host, Some(&prior.name))).is_err() {
                        // The old name is taken in the host: move it as it is; renamed below.
                        links.run(pod_nl.move_to(link.index, &links.host, None))?;
                    }
                    break;
                }
            }
        }
        let deadline = Instant::now() + RETURN_WAIT;
        let name = loop {
            if let Some(name) = self.control.host_netdev(&self.sysfs, location).map_err(vf_error)? {
                break name;
            }
            if pod_alive || Instant::now() >= deadline {
                return Err(plugin_error(format!(
                    "VF {}: its netdev is neither in the pod ({} {}) nor in the host namespace",
                    record.vf, record.netns, record.ifname
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let info = links
            .run(links.host_nl.link(&name))?
            .ok_or_else(|| plugin_error(format!("VF {}: netdev {name} vanished", record.vf)))?;
        if name != prior.name {
            let host_nl = &links.host_nl;
            if let Some(holder) = links.run(host_nl.link(&prior.name))?
                && holder.index == info.index
            {
                // Its own altname blocks the name (the kernel resolves names through altnames).
                links.run(host_nl.del_alt_name(info.index, prior.name.as_str()))?;
            }
            links.run(host_nl.rename(info.index, &prior.name))?;
        }
        links.run(links.host_nl.configure(info.index, prior.mac, prior.mtu, prior.up))
    }

    /// DEL: releases the addresses and restores the VF. Nothing attached is fine (DEL twice,
    /// or after a failed ADD); a VF that vanished is forgotten.
    pub fn del(&self, invocation: &Invocation, ifname: &str, raw: &Value) -> Result<(), CniError> {
        self.del_timed(invocation, ifname, raw).0
    }

    /// DEL, with the time of each phase: `ipam`, `lookup`, `restore`, `record`.
    pub fn del_timed(
        &self,
        invocation: &Invocation,
        ifname: &str,
        raw: &Value,
    ) -> (Result<(), CniError>, Phases) {
        let mut phases = Phases::start();
        let result = self.del_inner(invocation, ifname, raw, &mut phases);
        (result, phases)
    }

    fn del_inner(
        &self,
        invocation: &Invocation,
        ifname: &str,
        raw: &Value,
        phases: &mut Phases,
    ) -> Result<(), CniError> {
        let mut first: Option<CniError> = None;
        match ipam::Request::new(raw, invocation, ifname) {
            Ok(Some(request)) => {
                if let Err(e) = ipam::del(&request) {
                    first = Some(e);
                }
            }
            Ok(None) => {}
            Err(e) => first = Some(e),
        }
        phases.mark("ipam");
        let records = Records::new(data_dir(raw));
        // The config's deviceID, or (a config that lost it) the record of this interface.
        let vf = match SriovConfig::parse(raw) {
            Ok(config) => Some(config.device_id),
            Err(_) => records.find(&invocation.container_id, ifname),
        };
        if let Some(vf) = vf {
            let _lock = records.lock(vf)?;
            match records.load(vf)? {
                // Attached for someone else since: not ours to touch.
                Some(record) if record.container_id != invocation.container_id || record.ifname != ifname => {
                }
                Some(record) => {
                    let location = self.locate(vf)?;
                    phases.mark("lookup");
                    match location {
                        None => tracing::warn!(vf = %vf, "the VF is gone: nothing to restore"),
                        Some(location) => {
                            let links = Links::open(&*self.control, None)?;
                            self.restore(&links, &record, &location)?;
                        }
                    }
                    phases.mark("restore");
                    records.remove(vf)?;
                    phases.mark("record");
                }
                None => {}
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// CHECK: the VF's PF-side settings, its netdev in the pod and its addresses are what
    /// ADD made.
    pub fn check(&self, invocation: &Invocation, ifname: &str, raw: &Value) -> Result<(), CniError> {
        let config = SriovConfig::parse(raw)?;
        let vf = config.device_id;
        let records = Records::new(config.data_dir.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        let _lock = records.lock(vf)?;
        let record = records
            .load(vf)?
            .filter(|r| r.container_id == invocation.container_id && r.ifname == ifname)
            .ok_or_else(|| plugin_error(format!("VF {vf} is not attached to this container as {ifname}")))?;
        let now: VfState = self.control.vf(&record.pf, record.index).map_err(vf_error)?;
        if now != record.applied {
            return Err(plugin_error(format!(
                "VF {vf} settings changed: expected {:?}, found {:?}",
                record.applied, now
            )));
        }
        if record.prior_netdev.is_some() {
            let links = Links::open(&*self.control, Some(&invocation.netns))?;
            let (_, pod_nl) = links.pod()?;
            let name: IfName = ifname
                .parse()
                .map_err(|e| CniError::new(ErrorCode::InvalidEnvironment, format!("CNI_IFNAME: {e}")))?;
            let link = links
                .run(pod_nl.link(&name))?
                .ok_or_else(|| plugin_error(format!("{ifname} is not in the pod's namespace")))?;
            if let Some(mac) = record.pod_mac
                && link.mac != Some(mac)
            {
                return Err(plugin_error(format!(
                    "{ifname}: MAC is {:?}, expected {mac}",
                    link.mac.map(|m| m.to_string())
                )));
            }
            if let Some(mtu) = record.pod_mtu
                && link.mtu != Some(mtu)
            {
                return Err(plugin_error(format!("{ifname}: MTU is {:?}, expected {mtu}", link.mtu)));
            }
            if !link.up {
                return Err(plugin_error(format!("{ifname} is down")));
            }
            let present: Vec<(IpAddr, u8)> = links.run(pod_nl.addresses(link.index))?;
            if let Some(previous) = raw.get("prevResult") {
                let previous = CniResult::from_value(previous)?;
                let ours = previous.interfaces.iter().position(|i| i.name == ifname && !i.sandbox.is_empty());
                for ip in previous.ips.iter().filter(|ip| ip.interface.is_some() && ip.interface == ours) {
                    if !present.contains(&(ip.address.addr, ip.address.len)) {
                        return Err(plugin_error(format!("{ifname} lacks its address {}", ip.address)));
                    }
                }
            }
        }
        if let Some(request) = ipam::Request::new(raw, invocation, ifname)? {
            ipam::check(&request)?;
        }
        Ok(())
    }
}
