//! Per-source token buckets in a fixed-size table: bounded memory whatever
//! the number of sources.
//!
//! Each slot is a GCRA ("virtual scheduling") bucket: one 64-bit theoretical
//! arrival time, equivalent to a token bucket that refills at `per_second`
//! and holds at most `burst` tokens, with exact integer arithmetic. Sources
//! map to slots through the standard library's SipHash, keyed at random for
//! each instance, so nobody outside can choose addresses that share a slot
//! with a victim; sources that do share a slot share its bucket.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::time::Instant;

/// Number of buckets (a power of two), 512 KiB per worker, touched only
/// where sources land. With 4 096, a flood from 5 000 sources at half the
/// per-source limit each still drained the buckets that two of them share,
/// and the legitimate clients that hashed there lost their 401s: allocation
/// flows fell from about 11 000/s to 750–940/s with timeouts; with 65 536
/// they stayed at 5 200–8 600/s (tuning/results/flood/).
pub const SLOTS: usize = 65_536;

const NANOS_PER_SEC: u64 = 1_000_000_000;

pub struct RateLimiter {
    per_second: u32,
    burst: u32,
    /// Nanoseconds between two tokens.
    interval: u64,
    /// How far ahead of `now` a slot's arrival time may run: (burst-1) intervals.
    tolerance: u64,
    /// Per slot, the theoretical arrival time of the next conforming reply, in
    /// nanoseconds since `base`; 0 means a full bucket.
    slots: Box<[u64]>,
    /// Clock origin, taken at the first call.
    base: Option<Instant>,
    /// Randomly keyed, per instance.
    hasher: RandomState,
}

impl RateLimiter {
    /// `per_second` replies per source on average, `burst` at once. If either
    /// is 0 every reply is refused (fail closed).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let interval = match per_second {
            0 => u64::MAX,
            n => (NANOS_PER_SEC / u64::from(n)).max(1),
        };
        RateLimiter {
            per_second,
            burst,
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.saturating_sub(1))),
            slots: vec![0u64; SLOTS].into_boxed_slice(),
            base: None,
            hasher: RandomState::new(),
        }
    }

    /// True when a reply to `source` may be sent now (and takes a token).
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.per_second == 0 || self.burst == 0 {
            return false;
        }
        let base = *self.base.get_or_insert(now);
        let t = u64::try_from(now.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX);
        let i = self.slot(source);
        let Some(tat) = self.slots.get_mut(i) else {
            return false;
        };
        // Conforming if the slot's arrival time is at most `tolerance` ahead
        // of now, i.e. at least one token is left.
        let start = (*tat).max(t);
        if start - t > self.tolerance {
            return false;
        }
        *tat = start.saturating_add(self.interval);
        true
    }

    fn slot(&self, source: IpAddr) -> usize {
        // One integer hashed in one write: 32 bits for IPv4, 128 for IPv6.
        let h = match source {
            IpAddr::V4(v4) => self.hasher.hash_one(u32::from(v4)),
            // A v4-mapped IPv6 source is the same host as its IPv4 form.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.hasher.hash_one(u32::from(v4)),
                None => self.hasher.hash_one(u128::from(v6)),
            },
        };
        (h as usize) & (SLOTS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    /// Two sources that land in different slots under `r`'s key.
    fn distinct_pair(r: &RateLimiter) -> (IpAddr, IpAddr) {
        let a = v4(0xc633_6401);
        let b = (2..)
            .map(|n| v4(0xc633_6400 + n))
            .find(|b| r.slot(*b) != r.slot(a))
            .expect("some address lands elsewhere");
        (a, b)
    }

    #[test]
    fn burst_then_refused_then_refill() {
        let mut r = RateLimiter::new(10, 3);
        let t0 = Instant::now();
        let src = v4(0x0808_0808);
        assert!(r.allow(src, t0));
        assert!(r.allow(src, t0));
        assert!(r.allow(src, t0));
        assert!(!r.allow(src, t0));
        assert!(!r.allow(src, t0 + Duration::from_millis(99)));
        // One token every 100 ms.
        assert!(r.allow(src, t0 + Duration::from_millis(100)));
        assert!(!r.allow(src, t0 + Duration::from_millis(150)));
        assert!(r.allow(src, t0 + Duration::from_millis(200)));
        // A long pause refills to the burst, no further.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(r.allow(src, later));
        }
        assert!(!r.allow(src, later));
    }

    #[test]
    fn refused_requests_do_not_consume() {
        let mut r = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        let src = v4(1);
        assert!(r.allow(src, t0));
        for ms in (0..1000).step_by(10) {
            assert!(!r.allow(src, t0 + Duration::from_millis(ms)));
        }
        assert!(r.allow(src, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn steady_rate_under_flood() {
        // Hammered every millisecond for 10 s: about burst + 10 × rate.
        let mut r = RateLimiter::new(5, 2);
        let t0 = Instant::now();
        let src = v4(2);
        let allowed = (0..10_000)
            .filter(|ms| r.allow(src, t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(allowed, 2 + 50 - 1);
    }

    #[test]
    fn sources_in_different_slots_are_independent() {
        let mut r = RateLimiter::new(1, 2);
        let (a, b) = distinct_pair(&r);
        let t0 = Instant::now();
        assert!(r.allow(a, t0));
        assert!(r.allow(a, t0));
        assert!(!r.allow(a, t0));
        assert!(r.allow(b, t0));
        assert!(r.allow(b, t0));
        assert!(!r.allow(b, t0));
    }

    #[test]
    fn colliding_sources_share_a_bucket() {
        let mut r = RateLimiter::new(1, 2);
        let a = v4(0x0101_0101);
        let b = (1..)
            .map(|n| v4(0x0101_0101 + n))
            .find(|b| r.slot(*b) == r.slot(a))
            .expect("a collision exists among 2^32 addresses");
        let t0 = Instant::now();
        assert!(r.allow(a, t0));
        assert!(r.allow(b, t0));
        assert!(!r.allow(a, t0));
        assert!(!r.allow(b, t0));
    }

    #[test]
    fn mapped_v6_source_shares_v4_bucket() {
        let r = RateLimiter::new(1, 1);
        let v4a = Ipv4Addr::new(203, 0, 113, 7);
        assert_eq!(
            r.slot(IpAddr::V4(v4a)),
            r.slot(IpAddr::V6(v4a.to_ipv6_mapped()))
        );
    }

    #[test]
    fn keys_differ_per_instance() {
        let a = RateLimiter::new(1, 1);
        let b = RateLimiter::new(1, 1);
        let slots = |r: &RateLimiter| (1..=64).map(|n| r.slot(v4(n))).collect::<Vec<_>>();
        assert_ne!(slots(&a), slots(&b), "two instances hash alike");
        assert_eq!(a.slots.len(), SLOTS);
    }

    #[test]
    fn zero_rate_or_burst_refuses() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(0, 5);
        assert!(!r.allow(v4(1), t0));
        let mut r = RateLimiter::new(5, 0);
        assert!(!r.allow(v4(1), t0));
    }

    #[test]
    fn clock_going_backwards_does_not_panic() {
        let mut r = RateLimiter::new(10, 1);
        let t0 = Instant::now() + Duration::from_secs(5);
        assert!(r.allow(v4(3), t0));
        assert!(!r.allow(v4(3), t0 - Duration::from_secs(5)));
    }

    #[test]
    fn high_rate_and_burst_do_not_overflow() {
        let mut r = RateLimiter::new(u32::MAX, u32::MAX);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(r.allow(v4(4), t0));
        }
    }
}
