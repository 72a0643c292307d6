//! The `bond` delegate: a bond in the pod of links the pod already has (the VFs of earlier
//! attachments, `net1` and `net2`: with the allocator spreading them over two PFs, a
//! redundant pair), as the bond CNI plugin makes it, with its keys. The kernel work goes
//! through [`PodLinks`], real over netlink in the pod's namespace, and in-memory in the tests
//! of the logic (this kernel has no bonding driver).

pub mod config;

use plexus_hw::bond::BondOptions;
use plexus_hw::netlink::{LinkInfo, Netlink};
use plexus_hw::netns::Netns;
use plexus_hw::{IfName, MacAddr};
use serde_json::Value;

use self::config::BondConfig;
use crate::delegate::InProcessPlugin;
use crate::ipam;
use crate::multus::cluster::Cluster;
use crate::spec::result::{CniResult, Interface};
use crate::spec::version::CniVersion;
use crate::spec::{CniError, Command, ErrorCode, Invocation};

/// The link operations a bond needs, in the pod's namespace.
pub trait PodLinks {
    /// The link named `name`.
    fn link(&self, name: &str) -> Result<Option<LinkInfo>, CniError>;
    /// Every link.
    fn links(&self) -> Result<Vec<LinkInfo>, CniError>;
    /// Moves host link `name` into the pod (for `linksInContainer: false`).
    fn take_from_host(&self, name: &str) -> Result<(), CniError>;
    /// Moves link `name` back to the host.
    fn give_back(&self, name: &str) -> Result<(), CniError>;
    /// Makes the bond, down; its index.
    fn add_bond(&self, name: &str, options: &BondOptions) -> Result<u32, CniError>;
    /// Sets or clears the link's controller.
    fn set_controller(&self, index: u32, controller: Option<u32>) -> Result<(), CniError>;
    /// Up or down, and a MAC when given.
    fn set_state(&self, index: u32, up: bool, mac: Option<MacAddr>) -> Result<(), CniError>;
    /// Deletes the link.
    fn del_link(&self, index: u32) -> Result<(), CniError>;
    /// Puts an IPAM result on the link.
    fn configure(&self, index: u32, result: &CniResult) -> Result<(), CniError>;
}

fn failed(e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Plugin, format!("bond: {e}"))
}

fn if_name(name: &str) -> Result<IfName, CniError> {
    name.parse().map_err(|e| CniError::new(ErrorCode::InvalidNetworkConfig, format!("bond: {name:?}: {e}")))
}

/// [`PodLinks`] over netlink: sockets opened inside the pod's (and the host's) namespace, on a
/// runtime of the call's own.
pub struct NetlinkPodLinks {
    runtime: tokio::runtime::Runtime,
    pod: Netlink,
    pod_ns: Netns,
    host: Netlink,
}

impl NetlinkPodLinks {
    /// For the pod namespace at `netns`.
    pub fn open(netns: &str) -> Result<Self, CniError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(failed)?;
        let pod_ns = Netns::open(netns).map_err(failed)?;
        let (pod, host) = runtime
            .block_on(async {
                let pod = Netlink::connect(Some(&pod_ns)).await?;
                let host = Netlink::connect(None).await?;
                Ok::<_, plexus_hw::netlink::NetlinkError>((pod, host))
            })
            .map_err(failed)?;
        Ok(Self { runtime, pod, pod_ns, host })
    }
}

impl std::fmt::Debug for NetlinkPodLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkPodLinks").field("pod", &self.pod_ns.path()).finish()
    }
}

impl PodLinks for NetlinkPodLinks {
    fn link(&self, name: &str) -> Result<Option<LinkInfo>, CniError> {
        let name = if_name(name)?;
        self.runtime.block_on(self.pod.link(&name)).map_err(failed)
    }

    fn links(&self) -> Result<Vec<LinkInfo>, CniError> {
        self.runtime.block_on(self.pod.links()).map_err(failed)
    }

    fn take_from_host(&self, name: &str) -> Result<(), CniError> {
        let name = if_name(name)?;
        self.runtime
            .block_on(async {
                let index = self.host.link_index(&name).await?;
                self.host.move_to(index, &self.pod_ns, None).await
            })
            .map_err(failed)
    }

    fn give_back(&self, name: &str) -> Result<(), CniError> {
        let name = if_name(name)?;
        let host = Netns::current().map_err(failed)?;
        self.runtime
            .block_on(async {
                let index = self.pod.link_index(&name).await?;
                self.pod.move_to(index, &host, None).await
            })
            .map_err(failed)
    }

    fn add_bond(&self, name: &str, options: &BondOptions) -> Result<u32, CniError> {
        let name = if_name(name)?;
        self.runtime.block_on(self.pod.add_bond(&name, options)).map_err(failed)
    }

    fn set_controller(&self, index: u32, controller: Option<u32>) -> Result<(), CniError> {
        self.runtime.block_on(self.pod.set_controller(index, controller)).map_err(failed)
    }

    fn set_state(&self, index: u32, up: bool, mac: Option<MacAddr>) -> Result<(), CniError> {
        self.runtime.block_on(self.pod.configure(index, mac, None, up)).map_err(failed)
    }

    fn del_link(&self, index: u32) -> Result<(), CniError> {
        self.runtime.block_on(self.pod.del_link(index)).map_err(failed)
    }

    fn configure(&self, index: u32, result: &CniResult) -> Result<(), CniError> {
        self.runtime.block_on(ipam::configure(&self.pod, index, result))
    }
}

/// A locally administered MAC for slave `n` of bond `bond_index`: distinct per slave.
fn distinct_mac(bond_index: u32, n: usize) -> MacAddr {
    let [a, b, c, d] = bond_index.to_be_bytes();
    MacAddr([0x02, a ^ 0xb0, b, c, d, u8::try_from(n % 256).unwrap_or(0)])
}

/// The delegate.
#[derive(Debug, Default)]
pub struct Bond;

impl Bond {
    /// ADD with `links` as the pod's namespace.
    pub fn add_with(
        links: &dyn PodLinks,
        invocation: &Invocation,
        ifname: &str,
        raw: &Value,
    ) -> Result<Value, CniError> {
        let config = BondConfig::parse(raw)?;
        let version = CniVersion::of_config(raw)?;
        if links.link(ifname)?.is_some() {
            return Err(failed(format!("the pod already has an interface {ifname}")));
        }
        let mut moved = Vec::new();
        let result = Self::add_steps(links, &config, invocation, ifname, raw, &mut moved);
        match result {
            Ok(result) => {
                let bond = links.link(ifname)?;
                let mut result = result;
                result.interfaces = vec![Interface {
                    name: ifname.to_owned(),
                    mac: bond.and_then(|b| b.mac).map(|m| m.to_string()).unwrap_or_default(),
                    mtu: Some(config.mtu),
                    sandbox: invocation.netns.clone(),
                    ..Default::default()
                }];
                for ip in &mut result.ips {
                    ip.interface = Some(0);
                }
                Ok(result.to_value(version))
            }
            Err(err) => {
                // Undo: release the slaves, delete the bond, give moved links back.
                let mut errors = Self::release(links, ifname, &moved);
                // A slave set down and not yet enslaved is not released with the bond.
                for name in config.links.iter().filter(|n| !moved.contains(n)) {
                    if let Ok(Some(link)) = links.link(name)
                        && !link.up
                    {
                        errors.extend(links.set_state(link.index, true, None).err());
                    }
                }
                for e in errors {
                    tracing::warn!("undoing bond {ifname}: {e}");
                }
                if let Ok(Some(request)) = ipam::Request::new(raw, invocation, ifname) {
                    let _ = ipam::del(&request);
                }
                Err(err)
            }
        }
    }

    fn add_steps(
        links: &dyn PodLinks,
        config: &BondConfig,
        invocation: &Invocation,
        ifname: &str,
        raw: &Value,
        moved: &mut Vec<String>,
    ) -> Result<CniResult, CniError> {
        let mut slaves = Vec::new();
        for name in &config.links {
            if !config.links_in_container {
                links.take_from_host(name)?;
                moved.push(name.clone());
            }
            let link = links.link(name)?.ok_or_else(|| {
                failed(format!(
                    "link {name} is not in the pod's namespace (an earlier attachment's interface?)"
                ))
            })?;
            if link.controller.is_some() {
                return Err(failed(format!("link {name} is already enslaved")));
            }
            if link.mtu.is_some_and(|mtu| mtu < config.mtu) {
                return Err(CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    format!(
                        "bond config: mtu: {} is above the MTU of link {name} ({})",
                        config.mtu,
                        link.mtu.unwrap_or(0)
                    ),
                ));
            }
            slaves.push(link);
        }
        let bond = links.add_bond(ifname, &config.options)?;
        let mut macs = std::collections::BTreeSet::new();
        for (n, slave) in slaves.iter().enumerate() {
            // Slaves with one MAC confuse the driver's port selection: the later ones get
            // their own.
            let mac = match slave.mac {
                Some(mac) if !macs.insert(mac) => {
                    let fresh = distinct_mac(bond, n);
                    macs.insert(fresh);
                    Some(fresh)
                }
                _ => None,
            };
            links.set_state(slave.index, false, mac)?;
            links.set_controller(slave.index, Some(bond))?;
            links.set_state(slave.index, true, None)?;
        }
        links.set_state(bond, true, None)?;
        let result = match ipam::Request::new(raw, invocation, ifname)? {
            Some(request) => {
                let result = ipam::add(&request)?;
                links.configure(bond, &result)?;
                result
            }
            None => CniResult::default(),
        };
        Ok(result)
    }

    /// Releases the bond's slaves (no controller, up), deletes it, and gives links moved in
    /// back to the host; every error is returned, nothing stops early.
    fn release(links: &dyn PodLinks, ifname: &str, moved: &[String]) -> Vec<CniError> {
        let mut errors = Vec::new();
        match links.link(ifname) {
            Ok(Some(bond)) => {
                match links.links() {
                    Ok(all) => {
                        for slave in all.iter().filter(|l| l.controller == Some(bond.index)) {
                            errors.extend(links.set_controller(slave.index, None).err());
                            errors.extend(links.set_state(slave.index, true, None).err());
                        }
                    }
                    Err(e) => errors.push(e),
                }
                errors.extend(links.del_link(bond.index).err());
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        for name in moved {
            errors.extend(links.give_back(name).err());
        }
        errors
    }

    /// DEL with `links` as the pod's namespace (`None`: the namespace is gone, and the bond
    /// with it).
    pub fn del_with(
        links: Option<&dyn PodLinks>,
        invocation: &Invocation,
        ifname: &str,
        raw: &Value,
    ) -> Result<(), CniError> {
        let config = BondConfig::parse(raw)?;
        let mut errors = Vec::new();
        if let Some(links) = links {
            let moved: Vec<String> = if config.links_in_container {
                Vec::new()
            } else {
                config
                    .links
                    .iter()
                    .filter(|name| links.link(name).ok().flatten().is_some())
                    .cloned()
                    .collect()
            };
            errors = Self::release(links, ifname, &moved);
        }
        match ipam::Request::new(raw, invocation, ifname) {
            Ok(Some(request)) => errors.extend(ipam::del(&request).err()),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.remove(0)) }
    }
}

impl InProcessPlugin for Bond {
    fn call(
        &self,
        command: Command,
        invocation: &Invocation,
        ifname: &str,
        config: &Value,
        _cluster: Option<&dyn Cluster>,
    ) -> Result<Option<Value>, CniError> {
        match command {
            Command::Add => {
                let links = NetlinkPodLinks::open(&invocation.netns)?;
                crate::phases::timed("bond add", || Self::add_with(&links, invocation, ifname, config))
                    .map(Some)
            }
            Command::Del => {
                let links = (!invocation.netns.is_empty()
                    && std::path::Path::new(&invocation.netns).exists())
                .then(|| NetlinkPodLinks::open(&invocation.netns))
                .transpose()?;
                let links = links.as_ref().map(|l| l as &dyn PodLinks);
                crate::phases::timed("bond del", || Self::del_with(links, invocation, ifname, config))
                    .map(|()| None)
            }
            Command::Check => {
                let links = NetlinkPodLinks::open(&invocation.netns)?;
                let bond =
                    links.link(ifname)?.ok_or_else(|| failed(format!("no bond {ifname} in the pod")))?;
                let config = BondConfig::parse(config)?;
                let all = links.links()?;
                for name in &config.links {
                    if !all.iter().any(|l| &l.name == name && l.controller == Some(bond.index)) {
                        return Err(failed(format!("link {name} is not a port of {ifname}")));
                    }
                }
                Ok(None)
            }
            Command::Status | Command::Gc | Command::Version => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
