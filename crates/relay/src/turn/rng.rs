//! A small non-cryptographic generator (xorshift64*) for port choice and the
//! transaction ids of Data indications, seeded from the OS once per shard.
//! Nothing secret depends on it: nonces and tokens that must not be guessed
//! use the OS generator.

pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(crate) fn from_os() -> Rng {
        let mut b = [0u8; 8];
        // The OS generator does not fail on the kernels uturn runs on; if it
        // ever did, a fixed seed only makes port choice predictable, which
        // nothing relies on (and this crate reads no clock to do better).
        if getrandom::getrandom(&mut b).is_err() {
            b = 0x9E37_79B9_7F4A_7C15u64.to_le_bytes();
        }
        Rng::new(u64::from_le_bytes(b))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
