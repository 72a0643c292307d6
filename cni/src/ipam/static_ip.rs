//! The `static` IPAM, in-process, with the reference plugin's keys: `addresses` (each
//! `{address, gateway}`), `routes`, `dns`; addresses the pod asked for are added to them.

use serde_json::Value;

use super::{Request, invalid};
use crate::keys::Keys;
use crate::spec::ConfigError;
use crate::spec::result::{CniResult, Dns, IpConfig, IpPrefix};

/// ADD: the configured addresses, as given.
pub fn add(request: &Request<'_>) -> Result<CniResult, ConfigError> {
    let keys = Keys::new(request.ipam, "ipam");
    let mut result = CniResult::default();
    match keys.value("addresses") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, entry) in list.iter().enumerate() {
                let at = format!("addresses[{i}]");
                let Value::Object(entry) = entry else { return Err(invalid(&at, "must be an object")) };
                let entry = Keys::new(entry, "ipam");
                let text =
                    entry.string("address")?.ok_or_else(|| invalid(&format!("{at}.address"), "missing"))?;
                let address: IpPrefix = text.parse().map_err(|e| invalid(&format!("{at}.address"), e))?;
                let gateway = match entry.string("gateway")? {
                    None => None,
                    Some(gw) => Some(gw.parse().map_err(|_| {
                        invalid(&format!("{at}.gateway"), format!("{gw:?} is not an IP address"))
                    })?),
                };
                result.ips.push(IpConfig { address, gateway, interface: None });
            }
        }
        Some(_) => return Err(invalid("addresses", "must be a list")),
    }
    for address in request.requested()? {
        result.ips.push(IpConfig { address, gateway: None, interface: None });
    }
    if result.ips.is_empty() {
        return Err(invalid("addresses", "none given (ipam.addresses, runtimeConfig.ips or CNI_ARGS IP)"));
    }
    result.routes = request.routes()?;
    result.dns = match keys.value("dns") {
        None | Some(Value::Null) => Dns::default(),
        Some(dns) => serde_json::from_value(dns.clone()).map_err(|e| invalid("dns", e))?,
    };
    Ok(result)
}
