//! Per-source token buckets in a fixed-size table: bounded memory whatever
//! the number of sources.
//!
//! Each slot is a GCRA ("virtual scheduling") bucket: one 64-bit theoretical
//! arrival time, equivalent to a token bucket that refills at `per_second`
//! and holds at most `burst` tokens, with exact integer arithmetic. Sources
//! map to slots through SipHash-2-4 keyed with a random per-instance key, so
//! nobody outside can choose addresses that share a slot with a victim;
//! sources that do share a slot share its bucket.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::time::Instant;

/// Number of buckets (a power of two).
pub const SLOTS: usize = 4096;

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
    key: (u64, u64),
}

impl RateLimiter {
    /// `per_second` replies per source on average, `burst` at once. If either
    /// is 0 every reply is refused (fail closed).
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_key(per_second, burst, random_key())
    }

    fn with_key(per_second: u32, burst: u32, key: (u64, u64)) -> Self {
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
            key,
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
        let mut h = SipHasher24::new(self.key);
        match source {
            IpAddr::V4(v4) => {
                h.write_u8(4);
                h.write(&v4.octets());
            }
            IpAddr::V6(v6) => {
                // A v4-mapped source is the same host as its v4 form.
                if let Some(v4) = v6.to_ipv4_mapped() {
                    h.write_u8(4);
                    h.write(&v4.octets());
                } else {
                    h.write_u8(6);
                    h.write(&v6.octets());
                }
            }
        }
        (h.finish() as usize) & (SLOTS - 1)
    }
}

/// 128 random bits from the OS; if that fails, from the standard library's
/// randomly keyed hasher (itself seeded from the OS).
fn random_key() -> (u64, u64) {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_ok() {
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(&b[..8]);
        k1.copy_from_slice(&b[8..]);
        return (u64::from_le_bytes(k0), u64::from_le_bytes(k1));
    }
    let s = std::collections::hash_map::RandomState::new();
    (s.hash_one(0u8), s.hash_one(1u8))
}

/// SipHash-2-4 (Aumasson & Bernstein), a keyed PRF for short inputs.
struct SipHasher24 {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    len: usize,
}

impl SipHasher24 {
    fn new((k0, k1): (u64, u64)) -> Self {
        SipHasher24 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        Self::round(&mut self.v);
        Self::round(&mut self.v);
        self.v[0] ^= m;
    }
}

impl Hasher for SipHasher24 {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.tail |= u64::from(b) << (8 * self.ntail);
            self.ntail += 1;
            self.len += 1;
            if self.ntail == 8 {
                let m = self.tail;
                self.compress(m);
                self.tail = 0;
                self.ntail = 0;
            }
        }
    }

    fn finish(&self) -> u64 {
        let mut s = SipHasher24 {
            v: self.v,
            tail: 0,
            ntail: 0,
            len: 0,
        };
        let m = self.tail | ((self.len as u64 & 0xff) << 56);
        s.compress(m);
        s.v[2] ^= 0xff;
        for _ in 0..4 {
            Self::round(&mut s.v);
        }
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const KEY: (u64, u64) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);

    #[test]
    fn siphash_reference_vectors() {
        // From the SipHash paper / reference implementation: key 00..0f,
        // message 00..(n-1).
        let expect: [(usize, u64); 3] = [
            (0, 0x726f_db47_dd0e_0e31),
            (8, 0x93f5_f579_9a93_2462),
            (15, 0xa129_ca61_49be_45e5),
        ];
        for (n, want) in expect {
            let msg: Vec<u8> = (0..n as u8).collect();
            let mut h = SipHasher24::new(KEY);
            h.write(&msg);
            assert_eq!(h.finish(), want, "length {n}");
            // Split writes give the same result.
            let mut h = SipHasher24::new(KEY);
            let (a, b) = msg.split_at(n / 2);
            h.write(a);
            h.write(b);
            assert_eq!(h.finish(), want, "split length {n}");
        }
    }

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
        let mut r = RateLimiter::with_key(10, 3, KEY);
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
        let mut r = RateLimiter::with_key(1, 1, KEY);
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
        let mut r = RateLimiter::with_key(5, 2, KEY);
        let t0 = Instant::now();
        let src = v4(2);
        let allowed = (0..10_000)
            .filter(|ms| r.allow(src, t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(allowed, 2 + 50 - 1);
    }

    #[test]
    fn sources_in_different_slots_are_independent() {
        let mut r = RateLimiter::with_key(1, 2, KEY);
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
        let mut r = RateLimiter::with_key(1, 2, KEY);
        let a = v4(0x0101_0101);
        let b = (1..)
            .map(|n| v4(0x0101_0101 + n))
            .find(|b| r.slot(*b) == r.slot(a))
            .expect("4096 slots: a collision exists");
        let t0 = Instant::now();
        assert!(r.allow(a, t0));
        assert!(r.allow(b, t0));
        assert!(!r.allow(a, t0));
        assert!(!r.allow(b, t0));
    }

    #[test]
    fn mapped_v6_source_shares_v4_bucket() {
        let r = RateLimiter::with_key(1, 1, KEY);
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
        assert_ne!(a.key, b.key);
        assert_eq!(a.slots.len(), SLOTS);
    }

    #[test]
    fn zero_rate_or_burst_refuses() {
        let t0 = Instant::now();
        let mut r = RateLimiter::with_key(0, 5, KEY);
        assert!(!r.allow(v4(1), t0));
        let mut r = RateLimiter::with_key(5, 0, KEY);
        assert!(!r.allow(v4(1), t0));
    }

    #[test]
    fn clock_going_backwards_does_not_panic() {
        let mut r = RateLimiter::with_key(10, 1, KEY);
        let t0 = Instant::now() + Duration::from_secs(5);
        assert!(r.allow(v4(3), t0));
        assert!(!r.allow(v4(3), t0 - Duration::from_secs(5)));
    }

    #[test]
    fn high_rate_and_burst_do_not_overflow() {
        let mut r = RateLimiter::with_key(u32::MAX, u32::MAX, KEY);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(r.allow(v4(4), t0));
        }
    }
}
