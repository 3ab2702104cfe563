//! Stateless DTLS cookies (RFC 6347 §4.2.1): an HMAC over the client's
//! address and the current period, keyed by a secret made at start-up. A
//! cookie proves that the client receives at the address it sends from;
//! checking one needs nothing stored per client. The period rotates every
//! `PERIOD_SECS`; a cookie is accepted in its own period and the next, so
//! it lives between one and two periods.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Bytes of a cookie (a truncated HMAC-SHA256).
pub const COOKIE_LEN: usize = 20;
/// How long one period lasts.
pub const PERIOD_SECS: u64 = 60;

/// The secret cookies are made with. Shared by every shard (cheap to
/// clone, immutable).
#[derive(Clone)]
pub struct CookieKey {
    secret: [u8; 32],
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    /// A key from the system's random source.
    pub fn random() -> Result<CookieKey, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret)?;
        Ok(CookieKey { secret })
    }

    /// A fixed key (tests and fuzzing).
    pub fn from_secret(secret: [u8; 32]) -> CookieKey {
        CookieKey { secret }
    }

    fn make(&self, from: SocketAddr, period: u64) -> [u8; COOKIE_LEN] {
        // A key of any length is accepted by HMAC.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        mac.update(&period.to_be_bytes());
        match from {
            SocketAddr::V4(a) => {
                mac.update(&[4]);
                mac.update(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                mac.update(&[6]);
                mac.update(&a.ip().octets());
            }
        }
        mac.update(&from.port().to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&tag[..COOKIE_LEN]);
        c
    }

    /// The cookie for `from` now (`unix`: seconds since the epoch).
    pub fn cookie(&self, from: SocketAddr, unix: u64) -> [u8; COOKIE_LEN] {
        self.make(from, unix / PERIOD_SECS)
    }

    /// Whether `cookie` was made for `from` in this period or the last.
    pub fn verify(&self, from: SocketAddr, cookie: &[u8], unix: u64) -> bool {
        if cookie.len() != COOKIE_LEN {
            return false;
        }
        let period = unix / PERIOD_SECS;
        let now: bool = self.make(from, period).ct_eq(cookie).into();
        let last: bool = period
            .checked_sub(1)
            .is_some_and(|p| self.make(from, p).ct_eq(cookie).into());
        now | last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_bound_to_the_address_the_key_and_the_time() {
        let k = CookieKey::from_secret([1; 32]);
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let c = k.cookie(a, 1000);
        assert!(k.verify(a, &c, 1000));
        assert!(k.verify(a, &c, 1000 + PERIOD_SECS), "the next period still");
        assert!(!k.verify(a, &c, 1000 + 2 * PERIOD_SECS), "expired");
        assert!(!k.verify("192.0.2.1:5001".parse().unwrap(), &c, 1000));
        assert!(!k.verify("[::1]:5000".parse().unwrap(), &c, 1000));
        assert!(!CookieKey::from_secret([2; 32]).verify(a, &c, 1000));
        assert!(!k.verify(a, &c[..19], 1000));
        assert!(!k.verify(a, &[], 1000));
    }
}
