//! How many stream connections the node holds, in total and per source,
//! shared by every shard (a client's connections land on different shards
//! by hash, so a per-source limit must be counted in one place). Touched
//! once when a connection is accepted and once when it closes, never on
//! the data path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Why a new connection was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The node holds `max_connections` already.
    Total,
    /// This source holds `max_connections_per_source` already.
    PerSource,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "limit_total",
            Refused::PerSource => "limit_per_source",
        }
    }
}

/// The open connections of a node.
#[derive(Debug)]
pub struct ConnLedger {
    total: AtomicUsize,
    max_total: usize,
    max_per_source: u32,
    per_source: Mutex<HashMap<IpAddr, u32>>,
}

/// The key a source is counted under: an IPv4 address, or an IPv6 /64 (the
/// least a single subscriber is given, so that one host cannot take a new
/// address per connection to escape its limit).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
}

impl ConnLedger {
    pub fn new(max_total: usize, max_per_source: u32) -> ConnLedger {
        ConnLedger {
            total: AtomicUsize::new(0),
            max_total,
            max_per_source,
            per_source: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `ip`, or says why it may not be.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refused> {
        self.admit_total()?;
        self.admit_source(ip).inspect_err(|_| self.release_total())
    }

    /// A connection admitted with `admit` has closed.
    pub fn release(&self, ip: IpAddr) {
        self.release_source(ip);
        self.release_total();
    }

    /// Counts a new connection towards the node's total only (its source
    /// is not known yet: it comes in a PROXY header).
    pub fn admit_total(&self) -> Result<(), Refused> {
        let total = self.total.fetch_add(1, Ordering::Relaxed);
        if total >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Total);
        }
        Ok(())
    }

    /// Counts a connection admitted with `admit_total` towards `ip`'s limit.
    pub fn admit_source(&self, ip: IpAddr) -> Result<(), Refused> {
        let mut map = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(source_key(ip)).or_insert(0);
        if *n >= self.max_per_source {
            if *n == 0 {
                map.remove(&source_key(ip));
            }
            return Err(Refused::PerSource);
        }
        *n += 1;
        Ok(())
    }

    pub fn release_total(&self) {
        // Never below zero, whatever a caller does.
        let _ = self
            .total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub fn release_source(&self, ip: IpAddr) {
        let mut map = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        let key = source_key(ip);
        if let Some(n) = map.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&key);
            }
        }
    }

    /// Connections open on the node.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limits_hold_in_total_and_per_source() {
        let l = ConnLedger::new(3, 2);
        l.admit(ip("192.0.2.1")).unwrap();
        l.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(l.admit(ip("192.0.2.1")), Err(Refused::PerSource));
        l.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(l.admit(ip("192.0.2.3")), Err(Refused::Total));
        assert_eq!(l.open(), 3);
        l.release(ip("192.0.2.1"));
        l.admit(ip("192.0.2.1")).unwrap();
        for _ in 0..2 {
            l.release(ip("192.0.2.1"));
        }
        l.release(ip("192.0.2.2"));
        assert_eq!(l.open(), 0);
        assert!(l.per_source.lock().unwrap().is_empty(), "no entry kept");
        // Releasing what was never admitted changes nothing.
        l.release(ip("192.0.2.9"));
        assert_eq!(l.open(), 0);
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let l = ConnLedger::new(100, 1);
        l.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(l.admit(ip("2001:db8:1:2::ffff")), Err(Refused::PerSource));
        l.admit(ip("2001:db8:1:3::1")).unwrap();
        // A mapped address counts as its IPv4 one.
        l.admit(ip("198.51.100.1")).unwrap();
        assert_eq!(l.admit(ip("::ffff:198.51.100.1")), Err(Refused::PerSource));
    }
}
