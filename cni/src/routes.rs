//! The pod's default route, when a selection element asks for `default-route`: the default
//! routes other attachments made are deleted, and one via the requested gateway is added on the
//! chosen attachment's interface, inside the pod's namespace, through the call's kernel session.

use std::net::IpAddr;

use plexus_hw::IfName;
use plexus_hw::kernel::{Kernel, KernelError, Side};
use plexus_hw::netlink::IpFamily;

/// A route change the kernel refused.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {error}")]
pub struct RouteError {
    /// The change (`deleting the default route of net1`).
    pub what: String,
    /// The kernel's answer.
    pub error: KernelError,
}

impl crate::error::Failure for RouteError {
    fn code(&self) -> u32 {
        crate::spec::error::ErrorCode::Io.into()
    }
}

/// Gives the pod's default route of `gateway`'s family to interface `via`: deletes that
/// family's default routes leaving through each of `interfaces`, then adds one via `gateway`
/// through `via`.
pub fn set_default_route(
    kernel: &dyn Kernel,
    interfaces: &[&IfName],
    via: &IfName,
    gateway: IpAddr,
) -> Result<(), RouteError> {
    let failed = |what: String| move |error| RouteError { what, error };
    let family = IpFamily::of(gateway);
    for ifname in interfaces {
        let index = kernel.link_index(Side::Pod, ifname).map_err(failed(format!("in the pod: {ifname}")))?;
        kernel
            .del_default_routes(Side::Pod, index, family)
            .map_err(failed(format!("deleting the default route of {ifname}")))?;
    }
    let index = kernel.link_index(Side::Pod, via).map_err(failed(format!("in the pod: {via}")))?;
    kernel
        .add_default_route(Side::Pod, index, gateway)
        .map_err(failed(format!("adding the default route via {gateway} on {via}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use plexus_sim::kernel::FakeKernel;

    #[test]
    fn the_chosen_interface_keeps_the_only_default_route_of_its_family() {
        let kernel = FakeKernel::new();
        let names: Vec<IfName> = ["eth0", "net1"].iter().map(|n| n.parse().unwrap()).collect();
        for (i, name) in names.iter().enumerate() {
            let index =
                kernel.add_device(Side::Pod, name.as_str(), "0000:20:02.0".parse().unwrap(), None, true);
            let subnet: IpAddr = format!("10.{i}.0.2").parse().unwrap();
            kernel.add_address(Side::Pod, index, (subnet, 24)).unwrap();
            kernel.add_default_route(Side::Pod, index, format!("10.{i}.0.1").parse().unwrap()).unwrap();
        }
        let interfaces: Vec<&IfName> = names.iter().collect();
        set_default_route(&kernel, &interfaces, &names[1], "10.1.0.1".parse().unwrap()).unwrap();
        let routes = |name: &str| kernel.find(Side::Pod, name).unwrap().routes;
        assert!(routes("eth0").iter().all(|(_, len, _)| *len != 0), "{:?}", routes("eth0"));
        assert_eq!(routes("net1"), [("0.0.0.0".parse().unwrap(), 0, Some("10.1.0.1".parse().unwrap()))]);
        let err =
            set_default_route(&kernel, &interfaces, &"net9".parse().unwrap(), "10.1.0.1".parse().unwrap())
                .unwrap_err();
        assert!(err.to_string().contains("net9"), "{err}");
    }
}
