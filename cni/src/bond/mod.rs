//! The `bond` delegate: a bond in the pod of links the pod already has (the VFs of earlier
//! attachments, `net1` and `net2`: with the allocator spreading them over two PFs, a
//! redundant pair), as the bond CNI plugin makes it, with its keys. The kernel work goes
//! through the call's kernel session, on its pod side (and its host side for links moved in
//! with `linksInContainer: false`); the logic's tests run it against the in-memory kernel,
//! since this machine's kernel has no bonding driver.

pub mod config;

use plexus_hw::kernel::{Kernel, KernelError, LinkInfo, LinkSettings, Side};
use plexus_hw::{IfName, MacAddr};
use serde_json::Value;

use self::config::BondConfig;
use crate::delegate::{InProcessPlugin, Request};
use crate::error::{Error, ErrorList};
use crate::ipam;
use crate::spec::result::{CniResult, Interface};
use crate::spec::{ConfigError, ErrorCode};

/// A failure of the `bond` delegate.
#[derive(Debug, thiserror::Error)]
pub enum BondError {
    /// The pod already has an interface of the bond's name.
    #[error("bond: the pod already has an interface {0}")]
    NameTaken(IfName),
    /// A link to enslave is not in the pod.
    #[error("bond: link {0} is not in the pod's namespace (an earlier attachment's interface?)")]
    NotInPod(IfName),
    /// A link to enslave is a port of something else.
    #[error("bond: link {0} is already enslaved")]
    Enslaved(IfName),
    /// CHECK: the bond is not there.
    #[error("bond: no bond {0} in the pod")]
    NoBond(IfName),
    /// CHECK: a link is not the bond's port.
    #[error("bond: link {link} is not a port of {bond}")]
    NotPort {
        /// The link.
        link: IfName,
        /// The bond.
        bond: IfName,
    },
    /// A kernel request.
    #[error("bond: {0}")]
    Kernel(#[from] KernelError),
}

impl crate::error::Failure for BondError {
    fn code(&self) -> u32 {
        let code: ErrorCode = ErrorCode::Plugin;
        code.into()
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
    /// ADD: the bond `request`'s interface, of the config's links.
    pub fn add_bond(request: &Request<'_>) -> Result<Value, Error> {
        let (kernel, invocation, raw) = (request.kernel, request.invocation, request.config);
        let ifname = &invocation.ifname;
        let config = BondConfig::parse(raw)?;
        let version = ipam::result_version(raw, "bond config")?;
        if kernel.link(Side::Pod, ifname).map_err(BondError::from)?.is_some() {
            return Err(BondError::NameTaken(ifname.clone()).into());
        }
        let mut moved = Vec::new();
        let added = Self::add_steps(request, &config, &mut moved).and_then(|mut result| {
            let bond = kernel.link(Side::Pod, ifname).map_err(BondError::from)?;
            result.interfaces = vec![Interface {
                name: ifname.to_string(),
                mac: bond.and_then(|b| b.mac).map(|m| m.to_string()).unwrap_or_default(),
                mtu: Some(config.mtu),
                sandbox: invocation.netns_str(),
                ..Default::default()
            }];
            for ip in &mut result.ips {
                ip.interface = Some(0);
            }
            Ok(result.to_value(version)?)
        });
        match added {
            Ok(value) => Ok(value),
            Err(err) => {
                // Undo: release the slaves, delete the bond, give moved links back.
                let mut errors = Self::release(kernel, ifname, &moved);
                // A slave set down and not yet enslaved is not released with the bond.
                for name in config.links.iter().filter(|n| !moved.contains(n)) {
                    if let Ok(Some(link)) = kernel.link(Side::Pod, name)
                        && !link.up
                    {
                        errors.keep(
                            kernel
                                .configure(Side::Pod, link.index, LinkSettings::UP)
                                .map_err(BondError::from),
                        );
                    }
                }
                errors.keep(ipam::release(raw, invocation));
                for e in errors.iter() {
                    tracing::warn!("undoing bond {ifname}: {e}");
                }
                Err(err)
            }
        }
    }

    fn add_steps(
        request: &Request<'_>,
        config: &BondConfig,
        moved: &mut Vec<IfName>,
    ) -> Result<CniResult, Error> {
        let (kernel, invocation, raw) = (request.kernel, request.invocation, request.config);
        let mut slaves: Vec<LinkInfo> = Vec::new();
        for name in &config.links {
            if !config.links_in_container {
                let index = kernel.link_index(Side::Host, name).map_err(BondError::from)?;
                kernel.move_link(Side::Host, index, None).map_err(BondError::from)?;
                moved.push(name.clone());
            }
            let link = kernel
                .link(Side::Pod, name)
                .map_err(BondError::from)?
                .ok_or_else(|| BondError::NotInPod(name.clone()))?;
            if link.controller.is_some() {
                return Err(BondError::Enslaved(name.clone()).into());
            }
            if let Some(mtu) = link.mtu.filter(|mtu| *mtu < config.mtu) {
                let message = format!("mtu: {} is above the MTU of link {name} ({mtu})", config.mtu);
                return Err(ConfigError::invalid("bond config", message).into());
            }
            slaves.push(link);
        }
        let bond =
            kernel.add_bond(Side::Pod, &invocation.ifname, &config.options).map_err(BondError::from)?;
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
            // The bonding driver refuses a port that is up (EPERM, "can not be enslaved while
            // up"): down, enslaved, up again.
            kernel
                .configure(Side::Pod, slave.index, LinkSettings { mac, ..LinkSettings::DOWN })
                .map_err(BondError::from)?;
            kernel.set_controller(Side::Pod, slave.index, Some(bond)).map_err(BondError::from)?;
            kernel.configure(Side::Pod, slave.index, LinkSettings::UP).map_err(BondError::from)?;
        }
        kernel.configure(Side::Pod, bond, LinkSettings::UP).map_err(BondError::from)?;
        let result = match ipam::Request::new(raw, invocation)? {
            Some(ipam_request) => {
                let result = ipam::add(&ipam_request)?;
                ipam::configure(kernel, Side::Pod, bond, &result)?;
                result
            }
            None => CniResult::default(),
        };
        Ok(result)
    }

    /// Releases the bond's slaves (no controller, up), deletes it, and gives links moved in
    /// back to the host; every error is returned, nothing stops early.
    fn release(kernel: &dyn Kernel, ifname: &IfName, moved: &[IfName]) -> ErrorList {
        let mut errors = ErrorList::new();
        let kernel_error = |e: KernelError| Error::from(BondError::from(e));
        match kernel.link(Side::Pod, ifname) {
            Ok(Some(bond)) => {
                match kernel.links(Side::Pod) {
                    Ok(all) => {
                        for slave in all.iter().filter(|l| l.controller == Some(bond.index)) {
                            errors.keep(
                                kernel.set_controller(Side::Pod, slave.index, None).map_err(kernel_error),
                            );
                            errors.keep(
                                kernel
                                    .configure(Side::Pod, slave.index, LinkSettings::UP)
                                    .map_err(kernel_error),
                            );
                        }
                    }
                    Err(e) => errors.push(kernel_error(e)),
                }
                errors.keep(kernel.del_link(Side::Pod, bond.index).map_err(kernel_error));
            }
            Ok(None) => {}
            Err(e) => errors.push(kernel_error(e)),
        }
        for name in moved {
            let given =
                kernel.link_index(Side::Pod, name).and_then(|index| kernel.move_link(Side::Pod, index, None));
            errors.keep(given.map_err(kernel_error));
        }
        errors
    }

    /// DEL: the bond released and deleted when the pod's namespace is still there (else it went
    /// with it), links moved in given back, addresses released; every failure is reported.
    pub fn del_bond(request: &Request<'_>) -> Result<(), Error> {
        let (kernel, invocation, raw) = (request.kernel, request.invocation, request.config);
        let config = BondConfig::parse(raw)?;
        let mut errors = ErrorList::new();
        if kernel.has_pod() {
            let moved: Vec<IfName> = if config.links_in_container {
                Vec::new()
            } else {
                config
                    .links
                    .iter()
                    .filter(|name| kernel.link(Side::Pod, name).ok().flatten().is_some())
                    .cloned()
                    .collect()
            };
            errors.append(Self::release(kernel, &invocation.ifname, &moved));
        }
        errors.keep(ipam::release(raw, invocation));
        errors.into_result()
    }

    /// CHECK: the bond is there with every link as its port.
    pub fn check_bond(request: &Request<'_>) -> Result<(), Error> {
        let (kernel, ifname) = (request.kernel, &request.invocation.ifname);
        let config = BondConfig::parse(request.config)?;
        let bond = kernel
            .link(Side::Pod, ifname)
            .map_err(BondError::from)?
            .ok_or_else(|| BondError::NoBond(ifname.clone()))?;
        let all = kernel.links(Side::Pod).map_err(BondError::from)?;
        for name in &config.links {
            if !all.iter().any(|l| l.name == name.as_str() && l.controller == Some(bond.index)) {
                return Err(BondError::NotPort { link: name.clone(), bond: ifname.clone() }.into());
            }
        }
        Ok(())
    }
}

impl InProcessPlugin for Bond {
    fn add(&self, request: &Request<'_>) -> Result<Value, Error> {
        crate::phases::timed("bond add", || Self::add_bond(request))
    }

    fn del(&self, request: &Request<'_>) -> Result<(), Error> {
        crate::phases::timed("bond del", || Self::del_bond(request))
    }

    fn check(&self, request: &Request<'_>) -> Result<(), Error> {
        Self::check_bond(request)
    }
}

#[cfg(test)]
mod tests;
