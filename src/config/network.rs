//! Where uturn listens and relays from, and how many workers share the
//! relay ports (`listen`, `relay_ips`, `relay_ports`, `workers`). Restart-only:
//! every value here is a socket or a thread.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

use super::file::FileConfig;
use super::{invalid, pick, pick_list, socket_addrs, ConfigError, RunArgs, Src};
use crate::turn::TurnConfig;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3478";
pub const DEFAULT_RELAY_PORTS: &str = "49152-65535";
const MAX_WORKERS: usize = 1024;

/// The sockets and threads: kept as they are by a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub listen: Vec<SocketAddr>,
    pub relay_v4: Option<Ipv4Addr>,
    pub relay_v6: Option<Ipv6Addr>,
    pub relay_ports: RangeInclusive<u16>,
    pub workers: usize,
}

impl Network {
    pub(super) fn build(args: &RunArgs, f: &FileConfig) -> Result<Network, ConfigError> {
        let listen = listen_addresses(args, f)?;
        let (relay_v4, relay_v6) = relay_addresses(args, f.relay_ips.clone(), &listen)?;
        let (ports_str, ports_src) = pick(
            args.relay_ports.clone(),
            "--relay-ports",
            f.relay_ports.clone(),
            "relay_ports",
        )
        .unwrap_or_else(|| (DEFAULT_RELAY_PORTS.to_string(), Src::File("relay_ports")));
        let relay_ports = parse_port_range(&ports_str).ok_or_else(|| {
            invalid(
                ports_src.key(),
                format!("{ports_str:?} is not LOW-HIGH with 1 ≤ LOW ≤ HIGH ≤ 65535"),
            )
        })?;
        let workers = workers(args, f)?;
        let port_count = usize::from(*relay_ports.end()) - usize::from(*relay_ports.start()) + 1;
        if port_count < workers {
            return Err(invalid(
                ports_src.key(),
                format!("{ports_str:?} has {port_count} ports, fewer than the {workers} workers that share it"),
            ));
        }
        Ok(Network {
            listen,
            relay_v4,
            relay_v6,
            relay_ports,
            workers,
        })
    }

    /// Relay addresses, IPv4 first.
    pub fn relay_ips(&self) -> Vec<IpAddr> {
        self.relay_v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.relay_v6.map(IpAddr::V6))
            .collect()
    }

    /// The state machine's restart-only settings for the shard that owns
    /// `ports`.
    pub fn turn_config(&self, ports: RangeInclusive<u16>) -> TurnConfig {
        TurnConfig {
            relay_v4: self.relay_v4,
            relay_v6: self.relay_v6,
            ports,
        }
    }

    /// The keys whose value differs in `new`, named as in the file. Every
    /// field is named in the pattern below, so that a new one cannot be
    /// left out.
    pub fn changed_keys(&self, new: &Network) -> Vec<&'static str> {
        let Network {
            listen,
            relay_v4,
            relay_v6,
            relay_ports,
            workers,
        } = self;
        let mut keys = Vec::new();
        if *listen != new.listen {
            keys.push("listen");
        }
        if (relay_v4, relay_v6) != (&new.relay_v4, &new.relay_v6) {
            keys.push("relay_ips");
        }
        if *relay_ports != new.relay_ports {
            keys.push("relay_ports");
        }
        if *workers != new.workers {
            keys.push("workers");
        }
        keys
    }
}

fn listen_addresses(args: &RunArgs, f: &FileConfig) -> Result<Vec<SocketAddr>, ConfigError> {
    let (strs, src) = pick_list(&args.listen, "--listen", f.listen.clone(), "listen")
        .unwrap_or_else(|| (vec![DEFAULT_LISTEN.to_string()], Src::File("listen")));
    if strs.is_empty() {
        return Err(invalid(src.key(), "at least one address is required"));
    }
    socket_addrs(&strs, src)
}

fn workers(args: &RunArgs, f: &FileConfig) -> Result<usize, ConfigError> {
    let (workers, src) = match pick(
        args.workers.map(|w| w as u64),
        "--workers",
        f.workers,
        "workers",
    ) {
        Some(v) => v,
        None => (
            std::thread::available_parallelism().map_or(1, |n| n.get()) as u64,
            Src::File("workers"),
        ),
    };
    if workers == 0 || workers > MAX_WORKERS as u64 {
        return Err(invalid(
            src.key(),
            format!("{workers} is not between 1 and {MAX_WORKERS}"),
        ));
    }
    Ok(workers as usize)
}

/// Relay addresses from `relay_ips`, or else from specific listen addresses.
fn relay_addresses(
    args: &RunArgs,
    file: Option<Vec<String>>,
    listen: &[SocketAddr],
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), ConfigError> {
    let (mut v4, mut v6) = (None, None);
    match pick_list(&args.relay_ip, "--relay-ip", file, "relay_ips") {
        Some((ips, src)) if !ips.is_empty() => {
            for (i, s) in ips.iter().enumerate() {
                let ip: IpAddr = s
                    .trim()
                    .parse()
                    .map_err(|_| invalid(src.item(i), format!("{s:?} is not an IP address")))?;
                if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST)
                {
                    return Err(invalid(
                        src.item(i),
                        format!("{ip} cannot be a relay address"),
                    ));
                }
                let dup = match ip {
                    IpAddr::V4(a) => v4.replace(a).is_some(),
                    IpAddr::V6(a) => v6.replace(a).is_some(),
                };
                if dup {
                    return Err(invalid(
                        src.item(i),
                        "at most one relay address per address family",
                    ));
                }
            }
        }
        _ => {
            for a in listen {
                if a.ip().is_unspecified() {
                    return Err(invalid(
                        "relay_ips",
                        format!(
                            "listen address {a} is a wildcard, so the relay address cannot be derived from it; \
                             set relay_ips (or --relay-ip) to the address clients should be given"
                        ),
                    ));
                }
                match a.ip() {
                    IpAddr::V4(ip) => {
                        v4.get_or_insert(ip);
                    }
                    IpAddr::V6(ip) => {
                        v6.get_or_insert(ip);
                    }
                }
            }
        }
    }
    Ok((v4, v6))
}

/// "LOW-HIGH" with 1 ≤ LOW ≤ HIGH ≤ 65535.
fn parse_port_range(s: &str) -> Option<RangeInclusive<u16>> {
    let (lo, hi) = s.trim().split_once('-')?;
    let lo: u16 = lo.trim().parse().ok()?;
    let hi: u16 = hi.trim().parse().ok()?;
    (lo >= 1 && lo <= hi).then_some(lo..=hi)
}

/// Splits `range` into `n` contiguous slices whose sizes differ by at most one.
pub fn port_slices(range: &RangeInclusive<u16>, n: usize) -> Option<Vec<RangeInclusive<u16>>> {
    let total = usize::from(*range.end()).checked_sub(usize::from(*range.start()))? + 1;
    if n == 0 || total < n {
        return None;
    }
    let (base, extra) = (total / n, total % n);
    let mut start = usize::from(*range.start());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let len = base + usize::from(i < extra);
        out.push(start as u16..=(start + len - 1) as u16);
        start += len;
    }
    Some(out)
}
