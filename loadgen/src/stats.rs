//! Latency histograms and their summary, and a small PRNG for transaction ids.

use hdrhistogram::Histogram;

/// Latency percentiles. In `relay` the unit is microseconds; in `allocate`
/// and `churn` milliseconds (the field holding it says which).
#[derive(serde::Serialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    /// How many samples the percentiles are computed from.
    pub samples: u64,
}

/// A histogram of nanoseconds, 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `ns`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// The percentiles of a nanosecond histogram, divided by `unit_ns`
/// (1 000 for µs, 1 000 000 for ms).
pub fn percentiles(h: &Histogram<u64>, unit_ns: f64) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let q = |x: f64| h.value_at_quantile(x) as f64 / unit_ns;
    Percentiles {
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        p999: q(0.999),
        max: h.max() as f64 / unit_ns,
        mean: h.mean() / unit_ns,
        samples: h.len(),
    }
}

/// SplitMix64: enough randomness for transaction ids of a load generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock, the process id and `salt`.
    pub fn new(salt: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng(t ^ (u64::from(std::process::id()) << 32) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A fresh 96-bit transaction id.
    pub fn tid(&mut self) -> [u8; 12] {
        let a = self.next_u64().to_le_bytes();
        let b = self.next_u64().to_le_bytes();
        let mut t = [0u8; 12];
        t[..8].copy_from_slice(&a);
        t[8..].copy_from_slice(&b[..4]);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_microseconds() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            record(&mut h, us * 1000);
        }
        let p = percentiles(&h, 1000.0);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert_eq!(p.samples, 1000);
        assert_eq!(percentiles(&new_histogram(), 1.0), Percentiles::default());
    }

    #[test]
    fn tids_differ() {
        let mut r = Rng::new(1);
        assert_ne!(r.tid(), r.tid());
    }
}
