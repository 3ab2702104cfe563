//! A shard's slice of the relay port range: which ports are taken, and a
//! randomised choice of the next one (RFC 8656 §7.2 asks for unpredictable
//! relayed ports).

use super::rng::Rng;

/// Whether the allocation asked for an even port, and whether the next port
/// must be kept free too (EVEN-PORT with the R bit, RFC 8656 §14.6).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Parity {
    Any,
    Even,
    EvenPair,
}

pub(crate) struct PortPool {
    lo: u16,
    hi: u16,
    used: Vec<u64>,
}

impl PortPool {
    pub(crate) fn new(lo: u16, hi: u16) -> PortPool {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        let n = usize::from(hi - lo) + 1;
        PortPool {
            lo,
            hi,
            used: vec![0; n.div_ceil(64)],
        }
    }

    fn index(&self, port: u16) -> Option<usize> {
        (self.lo..=self.hi)
            .contains(&port)
            .then(|| usize::from(port - self.lo))
    }

    pub(crate) fn is_free(&self, port: u16) -> bool {
        match self.index(port) {
            Some(i) => self.used[i / 64] & (1 << (i % 64)) == 0,
            None => false,
        }
    }

    pub(crate) fn mark(&mut self, port: u16) {
        if let Some(i) = self.index(port) {
            self.used[i / 64] |= 1 << (i % 64);
        }
    }

    pub(crate) fn release(&mut self, port: u16) {
        if let Some(i) = self.index(port) {
            self.used[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Picks a free port satisfying `parity`, starting at a random place and
    /// walking the slice once. Marks nothing: the caller marks what it binds.
    pub(crate) fn pick(&self, rng: &mut Rng, parity: Parity) -> Option<u16> {
        let span = u32::from(self.hi - self.lo) + 1;
        let start = (rng.next_u64() % u64::from(span)) as u32;
        for step in 0..span {
            let port = self.lo + ((start + step) % span) as u16;
            let ok = match parity {
                Parity::Any => self.is_free(port),
                Parity::Even => port % 2 == 0 && self.is_free(port),
                Parity::EvenPair => {
                    port % 2 == 0 && self.is_free(port) && port < self.hi && self.is_free(port + 1)
                }
            };
            if ok {
                return Some(port);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_within_range_and_respects_marks() {
        let mut rng = Rng::new(7);
        let mut pool = PortPool::new(50000, 50003);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let p = pool.pick(&mut rng, Parity::Any).expect("a port is free");
            assert!((50000..=50003).contains(&p));
            pool.mark(p);
            seen.push(p);
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![50000, 50001, 50002, 50003]);
        assert_eq!(pool.pick(&mut rng, Parity::Any), None);
        pool.release(50002);
        assert_eq!(pool.pick(&mut rng, Parity::Any), Some(50002));
    }

    #[test]
    fn even_and_pairs() {
        let mut rng = Rng::new(1);
        let mut pool = PortPool::new(40001, 40004);
        for _ in 0..20 {
            assert_eq!(pool.pick(&mut rng, Parity::Even).map(|p| p % 2), Some(0));
        }
        pool.mark(40003);
        // 40002 has its neighbour taken; 40004 has no neighbour in range.
        assert_eq!(pool.pick(&mut rng, Parity::EvenPair), None);
        pool.release(40003);
        assert_eq!(pool.pick(&mut rng, Parity::EvenPair), Some(40002));
    }
}
