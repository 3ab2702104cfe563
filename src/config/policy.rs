//! What the relay grants and to whom: the longest allocation lifetime, the
//! SOFTWARE it names itself with, the peers it relays to, the quotas and the
//! rate of unauthenticated replies (`max_lifetime_secs`, `software`,
//! `[peers]`, `[quotas]`, `[rate_limit]`). Reloadable.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::file::FileConfig;
use super::{
    check_text, invalid, pick, pick_list, ConfigError, RunArgs, Src, MAX_LIFETIME_LIMIT_SECS,
};
use crate::policy::Quotas;

pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 3600;
pub const DEFAULT_UNAUTH_PER_SECOND: u32 = 20;
pub const DEFAULT_UNAUTH_BURST: u32 = 40;

/// The relay's limits and peer lists.
#[derive(Clone, Debug)]
pub struct Policy {
    pub max_lifetime: Duration,
    pub software: Option<String>,
    pub allow_peers: Vec<IpNet>,
    pub deny_peers: Vec<IpNet>,
    pub quotas: Quotas,
    pub unauth_per_second: u32,
    pub unauth_burst: u32,
}

impl Policy {
    pub(super) fn build(args: &RunArgs, f: &FileConfig) -> Result<Policy, ConfigError> {
        let (max_lifetime, src) = pick(
            args.max_lifetime,
            "--max-lifetime",
            f.max_lifetime_secs,
            "max_lifetime_secs",
        )
        .unwrap_or((DEFAULT_MAX_LIFETIME_SECS, Src::File("max_lifetime_secs")));
        if max_lifetime == 0 || max_lifetime > MAX_LIFETIME_LIMIT_SECS {
            return Err(invalid(
                src.key(),
                format!("{max_lifetime} is not between 1 and {MAX_LIFETIME_LIMIT_SECS} seconds"),
            ));
        }
        if let Some(s) = &f.software {
            // RFC 8489 §14.14: SOFTWARE is fewer than 128 characters.
            check_text(s, 127, "software")?;
        }
        let peers = f.peers.as_ref();
        let allow_peers = parse_nets(pick_list(
            &args.allow_peer,
            "--allow-peer",
            peers.and_then(|p| p.allow.clone()),
            "peers.allow",
        ))?;
        let deny_peers = parse_nets(pick_list(
            &args.deny_peer,
            "--deny-peer",
            peers.and_then(|p| p.deny.clone()),
            "peers.deny",
        ))?;
        let r = f.rate_limit.as_ref();
        Ok(Policy {
            max_lifetime: Duration::from_secs(max_lifetime),
            software: f.software.clone(),
            allow_peers,
            deny_peers,
            quotas: quotas(f)?,
            unauth_per_second: at_least_one(
                r.and_then(|r| r.unauth_per_second),
                DEFAULT_UNAUTH_PER_SECOND,
                "rate_limit.unauth_per_second",
            )?,
            unauth_burst: at_least_one(
                r.and_then(|r| r.unauth_burst),
                DEFAULT_UNAUTH_BURST,
                "rate_limit.unauth_burst",
            )?,
        })
    }
}

/// The `[quotas]` table over the defaults.
fn quotas(f: &FileConfig) -> Result<Quotas, ConfigError> {
    let q = f.quotas.as_ref();
    let d = Quotas::default();
    Ok(Quotas {
        allocations_per_user: at_least_one(
            q.and_then(|q| q.allocations_per_user),
            d.allocations_per_user,
            "quotas.allocations_per_user",
        )?,
        total_allocations: at_least_one(
            q.and_then(|q| q.total_allocations),
            d.total_allocations,
            "quotas.total_allocations",
        )?,
        permissions_per_allocation: at_least_one(
            q.and_then(|q| q.permissions_per_allocation),
            d.permissions_per_allocation,
            "quotas.permissions_per_allocation",
        )?,
        channels_per_allocation: at_least_one(
            q.and_then(|q| q.channels_per_allocation),
            d.channels_per_allocation,
            "quotas.channels_per_allocation",
        )?,
        peer_connections_per_allocation: at_least_one(
            q.and_then(|q| q.peer_connections_per_allocation),
            d.peer_connections_per_allocation,
            "quotas.peer_connections_per_allocation",
        )?,
        pending_connections_per_allocation: at_least_one(
            q.and_then(|q| q.pending_connections_per_allocation),
            d.pending_connections_per_allocation,
            "quotas.pending_connections_per_allocation",
        )?,
    })
}

pub(super) fn parse_nets(list: Option<(Vec<String>, Src)>) -> Result<Vec<IpNet>, ConfigError> {
    let Some((list, src)) = list else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    invalid(
                        src.item(i),
                        format!("{s:?} is not an address or CIDR prefix (like 10.0.0.0/8)"),
                    )
                })
        })
        .collect()
}

fn at_least_one(v: Option<u32>, default: u32, key: &str) -> Result<u32, ConfigError> {
    match v {
        Some(0) => Err(invalid(key, "must be at least 1")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}
