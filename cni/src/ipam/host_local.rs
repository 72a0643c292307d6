//! The `host-local` IPAM, in-process, on the reference plugin's own store so that both can
//! allocate from one range: under `<dataDir>/<network>/`, one file per reserved address (named
//! by the address, holding `<containerID>\r\n<ifname>`), `last_reserved_ip.<set>` with the
//! last address handed out of range set `<set>` (allocation goes round-robin from there), and
//! `lock`, flocked for every change. The config keys are the plugin's: `ranges` (a list of
//! range sets, each a list of `{subnet, rangeStart, rangeEnd, gateway}`) or the older
//! `subnet`/`rangeStart`/`rangeEnd`/`gateway`, `routes`, `dataDir`, `resolvConf`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::IpamError;
use super::{Request, invalid, io_error};
use crate::error::{Error, ErrorList};
use crate::files;
use crate::keys::Keys;
use crate::spec::ConfigError;
use crate::spec::result::{CniResult, Dns, IpConfig, IpPrefix};

const LAST_RESERVED: &str = "last_reserved_ip.";
const LOCK: &str = "lock";
/// Between the container ID and the interface name in a reservation file, as the reference
/// plugin writes it.
const LINE_BREAK: &str = "\r\n";

/// One range of a range set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    subnet: IpPrefix,
    start: u128,
    end: u128,
    gateway: Option<IpAddr>,
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn addr(like: IpAddr, value: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

impl Range {
    fn parse(keys: &Keys<'_>, at: &str) -> Result<Self, ConfigError> {
        let text = keys.string("subnet")?.ok_or_else(|| invalid(&format!("{at}.subnet"), "missing"))?;
        let subnet: IpPrefix = text.parse().map_err(|e| invalid(&format!("{at}.subnet"), e))?;
        let width = if subnet.is_ipv4() { 32 } else { 128 };
        let host_bits = width - u32::from(subnet.len);
        if subnet.is_ipv4() && host_bits < 2 {
            return Err(invalid(&format!("{at}.subnet"), format!("{text} has too few addresses")));
        }
        let mask = if host_bits >= 128 { 0 } else { !0u128 << host_bits } & (u128::MAX >> (128 - width));
        let network = bits(subnet.addr) & mask;
        let last = network | !mask & (u128::MAX >> (128 - width));
        let subnet = IpPrefix { addr: addr(subnet.addr, network), len: subnet.len };
        let inside = |key: &str| -> Result<Option<u128>, ConfigError> {
            let Some(text) = keys.string(key)? else { return Ok(None) };
            let ip: IpAddr = text
                .parse()
                .map_err(|_| invalid(&format!("{at}.{key}"), format!("{text:?} is not an IP address")))?;
            let value = bits(ip);
            if ip.is_ipv4() != subnet.is_ipv4() || value < network || value > last {
                return Err(invalid(&format!("{at}.{key}"), format!("{text} is not in {subnet}")));
            }
            Ok(Some(value))
        };
        let start = inside("rangeStart")?.unwrap_or(network + 1);
        // IPv4's last address is the broadcast address.
        let end = inside("rangeEnd")?.unwrap_or(if subnet.is_ipv4() { last - 1 } else { last });
        if start > end {
            return Err(invalid(&format!("{at}.rangeStart"), "is after rangeEnd"));
        }
        let gateway = Some(addr(subnet.addr, inside("gateway")?.unwrap_or(network + 1)));
        Ok(Self { subnet, start, end, gateway })
    }

    fn contains(&self, value: u128, v4: bool) -> bool {
        v4 == self.subnet.is_ipv4() && (self.start..=self.end).contains(&value)
    }
}

/// The config, parsed.
#[derive(Debug, Clone)]
struct Config {
    sets: Vec<Vec<Range>>,
    dir: PathBuf,
}

fn parse(request: &Request<'_>) -> Result<Config, ConfigError> {
    let keys = Keys::new(request.ipam, "ipam");
    let mut sets = Vec::new();
    match keys.value("ranges") {
        Some(Value::Array(list)) => {
            for (i, set) in list.iter().enumerate() {
                let Value::Array(ranges) = set else {
                    return Err(invalid(&format!("ranges[{i}]"), "must be a list of ranges"));
                };
                let mut parsed = Vec::new();
                for (j, range) in ranges.iter().enumerate() {
                    let Value::Object(range) = range else {
                        return Err(invalid(&format!("ranges[{i}][{j}]"), "must be an object"));
                    };
                    parsed.push(Range::parse(&Keys::new(range, "ipam"), &format!("ranges[{i}][{j}]"))?);
                }
                if parsed.is_empty() {
                    return Err(invalid(&format!("ranges[{i}]"), "is empty"));
                }
                if parsed.windows(2).any(|w| w[0].subnet.is_ipv4() != w[1].subnet.is_ipv4()) {
                    return Err(invalid(&format!("ranges[{i}]"), "mixes IPv4 and IPv6"));
                }
                sets.push(parsed);
            }
        }
        Some(_) => return Err(invalid("ranges", "must be a list of range sets")),
        None if keys.value("subnet").is_some() => sets.push(vec![Range::parse(&keys, "ipam")?]),
        None => return Err(invalid("ranges", "missing (or subnet)")),
    }
    // As host-local does ("no IP ranges specified"): an ADD without an address is no ADD.
    if sets.is_empty() {
        return Err(invalid("ranges", "is empty: no IP ranges specified"));
    }
    let network = request.network_name()?;
    if network.is_empty() || network.contains('/') || network.starts_with('.') {
        return Err(invalid("name", format!("{network:?} cannot name a store directory")));
    }
    let data_dir = keys.string("dataDir")?.unwrap_or_else(|| crate::paths::HOST_LOCAL_DIR.to_owned());
    Ok(Config { sets, dir: Path::new(&data_dir).join(network) })
}

/// Checks the config as ADD would read it, touching no file (for the fuzz targets and
/// checks of a config).
pub fn check_config(request: &Request<'_>) -> Result<(), ConfigError> {
    parse(request).map(drop)
}

/// A reservation file's content for a container's interface.
fn owner(container_id: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", container_id.trim())
}

/// The store of one network, locked while this value lives.
struct Store {
    dir: PathBuf,
    _lock: files::Locked,
}

impl Store {
    fn open(dir: &Path) -> Result<Self, IpamError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(&format!("creating {}", dir.display()), e))?;
        let lock = dir.join(LOCK);
        let held = files::lock(&lock).map_err(|e| io_error(&format!("locking {}", lock.display()), e))?;
        Ok(Self { dir: dir.to_owned(), _lock: held })
    }

    /// Every reservation: address and owner text.
    fn reservations(&self) -> Result<Vec<(IpAddr, String)>, IpamError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| io_error(&format!("listing {}", self.dir.display()), e))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else { continue };
            // Gone between listing and reading: released meanwhile (not under our lock).
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                found.push((ip, text.trim().to_owned()));
            }
        }
        Ok(found)
    }

    /// Reserves `ip` for `owner`; false when it is taken.
    fn reserve(&self, ip: IpAddr, owner: &str, set: usize) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        // Whole or not at all: a reservation killed half-made would be an empty file that no
        // container owns, so no DEL would ever release it.
        match files::create_whole(&path, owner.as_bytes()) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => return Err(io_error(&format!("creating {}", path.display()), e)),
        }
        let last = self.dir.join(format!("{LAST_RESERVED}{set}"));
        std::fs::write(&last, ip.to_string())
            .map_err(|e| io_error(&format!("writing {}", last.display()), e))?;
        Ok(true)
    }

    fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        std::fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set}"))).ok()?.trim().parse().ok()
    }

    fn release(&self, ip: IpAddr) -> Result<(), IpamError> {
        let path = self.dir.join(ip.to_string());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&format!("removing {}", path.display()), e)),
        }
    }
}

/// Whether a reservation's text names this container's interface (or, as files written
/// before the reference plugin recorded interfaces, just the container).
fn owned_by(text: &str, container_id: &str, ifname: &str) -> bool {
    text == owner(container_id, ifname) || text == container_id.trim()
}

/// The next free address of range set `set`, round-robin from the last one handed out.
fn next_free(store: &Store, ranges: &[Range], set: usize, owner: &str) -> Result<Option<IpAddr>, IpamError> {
    let v4 = ranges[0].subnet.is_ipv4();
    // Start after the last reservation when it is still in the set; else at the first range.
    let (mut range, mut cur) = store
        .last_reserved(set)
        .and_then(|ip| {
            let value = bits(ip);
            ranges.iter().position(|r| r.contains(value, ip.is_ipv4())).map(|i| (i, Some(value)))
        })
        .unwrap_or_default();
    let total: u128 = ranges.iter().map(|r| r.end - r.start + 1).sum();
    let mut tried: u128 = 0;
    while tried < total {
        let next = match cur {
            Some(value) if value < ranges[range].end => value + 1,
            Some(_) => {
                range = (range + 1) % ranges.len();
                ranges[range].start
            }
            None => ranges[range].start,
        };
        cur = Some(next);
        tried += 1;
        let ip = addr(ranges[range].subnet.addr, next);
        if Some(ip) == ranges[range].gateway || !ranges[range].contains(next, v4) {
            continue;
        }
        if store.reserve(ip, owner, set)? {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

/// ADD: one address from every range set (the requested one where the pod asked for one).
pub fn add(request: &Request<'_>) -> Result<CniResult, Error> {
    let config = parse(request)?;
    let requested = request.requested_ips()?;
    for ip in &requested {
        if !config.sets.iter().flatten().any(|r| r.contains(bits(*ip), ip.is_ipv4())) {
            return Err(ConfigError::invalid(
                "host-local",
                format!("requested address {ip} is in no configured range"),
            )
            .into());
        }
    }
    let store = Store::open(&config.dir)?;
    let me = owner(&request.invocation.container_id, request.ifname());
    let existing = store.reservations()?;
    let mut result = CniResult::default();
    let mut reserved: Vec<IpAddr> = Vec::new();
    let outcome = (|| -> Result<(), Error> {
        for (set, ranges) in config.sets.iter().enumerate() {
            let in_set = |ip: &IpAddr| ranges.iter().any(|r| r.contains(bits(*ip), ip.is_ipv4()));
            if let Some((ip, _)) = existing.iter().find(|(ip, text)| {
                in_set(ip) && owned_by(text, &request.invocation.container_id, request.ifname())
            }) {
                return Err(IpamError::Unavailable(format!(
                    "host-local: {ip} is already allocated to {} {}: a duplicate allocation is not allowed",
                    request.invocation.container_id,
                    request.ifname()
                ))
                .into());
            }
            let ip = match requested.iter().find(|ip| in_set(ip)) {
                Some(ip) => {
                    if !store.reserve(*ip, &me, set)? {
                        return Err(IpamError::Unavailable(format!(
                            "host-local: requested address {ip} is not available in range set {set}"
                        ))
                        .into());
                    }
                    *ip
                }
                None => next_free(&store, ranges, set, &me)?.ok_or_else(|| {
                    let first = &ranges[0];
                    let last = &ranges[ranges.len() - 1];
                    IpamError::Exhausted(format!(
                        "host-local: no address available in range set {}-{}",
                        addr(first.subnet.addr, first.start),
                        addr(last.subnet.addr, last.end)
                    ))
                })?,
            };
            reserved.push(ip);
            let range = ranges.iter().find(|r| r.contains(bits(ip), ip.is_ipv4())).unwrap_or(&ranges[0]);
            result.ips.push(IpConfig {
                address: IpPrefix { addr: ip, len: range.subnet.len },
                gateway: range.gateway,
                interface: None,
            });
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        for ip in reserved {
            let _ = store.release(ip);
        }
        return Err(e);
    }
    result.routes = request.routes()?;
    result.dns = match Keys::new(request.ipam, "ipam").string("resolvConf")? {
        Some(path) => read_resolv_conf(Path::new(&path))?,
        None => Dns::default(),
    };
    Ok(result)
}

/// DEL: releases every address of the container's interface; nothing reserved is fine.
pub fn del(request: &Request<'_>) -> Result<(), Error> {
    let config = parse(request)?;
    if !config.dir.exists() {
        return Ok(());
    }
    let store = Store::open(&config.dir)?;
    files::sweep(&config.dir);
    // Every address of the interface is released, whatever one of them does.
    let mut errors = ErrorList::new();
    for (ip, text) in store.reservations()? {
        if owned_by(&text, &request.invocation.container_id, request.ifname()) {
            errors.keep(store.release(ip));
        }
    }
    errors.into_result()
}

/// CHECK: the container's interface still holds an address in every range set.
pub fn check(request: &Request<'_>) -> Result<(), Error> {
    let config = parse(request)?;
    let store = Store::open(&config.dir)?;
    let mine: Vec<IpAddr> = store
        .reservations()?
        .into_iter()
        .filter(|(_, text)| owned_by(text, &request.invocation.container_id, request.ifname()))
        .map(|(ip, _)| ip)
        .collect();
    for (set, ranges) in config.sets.iter().enumerate() {
        if !mine.iter().any(|ip| ranges.iter().any(|r| r.contains(bits(*ip), ip.is_ipv4()))) {
            return Err(IpamError::Unavailable(format!(
                "host-local: {} {} holds no address in range set {set}",
                request.invocation.container_id,
                request.ifname()
            ))
            .into());
        }
    }
    Ok(())
}

/// The DNS settings of a resolv.conf file, as the reference plugin reports them.
fn read_resolv_conf(path: &Path) -> Result<Dns, IpamError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io_error(&format!("reading resolvConf {}", path.display()), e))?;
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_owned)),
            Some("domain") => dns.domain = words.next().map(str::to_owned),
            Some("search") => dns.search.extend(words.map(str::to_owned)),
            Some("options") => dns.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    Ok(dns)
}
