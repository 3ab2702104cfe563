//! Stateless nonces: the RFC 8489 §9.2 nonce cookie followed by an expiry and
//! a MAC over (expiry, client address and transport). Nothing is stored per client.
//!
//! Layout (45 bytes, all printable ASCII, so valid `qdtext`, RFC 8489 §14.10):
//!
//! ```text
//! "obMatJos2"                       nonce cookie (RFC 8489 §9.2)
//! base64(features, 3 bytes)         4 chars: the 24-bit STUN Security Feature set
//! base64url-nopad(expiry ‖ mac)     32 chars: expiry as u64 big-endian (unix
//!                                   seconds) and the first 16 bytes of
//!                                   HMAC-SHA256(key, expiry ‖ features ‖
//!                                   transport ‖ client)
//! ```
//!
//! The MAC binds the nonce to the client's IP address, port and transport
//! (UDP, TCP, TLS), so a nonce seen by one client is useless from another
//! address or over another transport, and the feature bits
//! cannot be altered (bid-down protection, RFC 8489 §9.2.1).

use std::net::SocketAddr;

use crate::Transport;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Longest nonce this module issues.
pub const MAX_NONCE_LEN: usize = 64;

/// RFC 8489 §9.2: every nonce starting with these 9 characters carries the
/// security feature set in the next 4.
pub const NONCE_COOKIE: &[u8; 9] = b"obMatJos2";

/// RFC 8489 §18.1 STUN Security Feature "Password algorithms", bit 0.
///
/// Bit 0 is taken as the *least* significant bit of the 24-bit set: the
/// reading of RFC 8489 erratum 6290 and the one consistent with the example
/// nonce of Appendix B.1 (`obMatJos2AAAC…`, i.e. 0x000002 = bit 1, "Username
/// anonymity", in a request that uses USERHASH). Our nonces are only ever
/// checked by us, so the choice affects only what a client reads from them.
pub const FEATURE_PASSWORD_ALGORITHMS: u32 = 1 << 0;

/// RFC 8489 §18.1 STUN Security Feature "Username anonymity", bit 1 (same
/// numbering): the server can map a USERHASH back to a user, so a client
/// that sees it sends USERHASH instead of USERNAME (RFC 8489 §9.2.4).
pub const FEATURE_USERNAME_ANONYMITY: u32 = 1 << 1;

/// The security features a server's nonces advertise.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// PASSWORD-ALGORITHMS is offered (SHA-256 as well as MD5).
    pub password_algorithms: bool,
    /// USERHASH is honoured: only where static users exist, since a REST
    /// username cannot be recovered from its hash.
    pub username_anonymity: bool,
}

impl Features {
    fn bits(self) -> u32 {
        let mut bits = 0;
        if self.password_algorithms {
            bits |= FEATURE_PASSWORD_ALGORITHMS;
        }
        if self.username_anonymity {
            bits |= FEATURE_USERNAME_ANONYMITY;
        }
        bits
    }
}

/// Length of every nonce issued here.
pub const NONCE_LEN: usize = NONCE_COOKIE.len() + FEATURES_B64 + BODY_B64;

const FEATURES_B64: usize = 4;
// Every nonce fits the caller's buffer (checked at compile time).
const _: () = assert!(NONCE_LEN <= MAX_NONCE_LEN);
const BODY_LEN: usize = 8 + MAC_LEN;
const BODY_B64: usize = 32;
const MAC_LEN: usize = 16;

/// Outcome of checking a nonce a client sent back.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, unexpired, bound to this client. `password_algorithms` is the
    /// security-feature bit the nonce advertised (RFC 8489 §9.2.4 bid-down check).
    Valid { password_algorithms: bool },
    /// Ours (the MAC verifies for this client) but expired: 438.
    Stale,
    /// Not a nonce we issued to this client address: malformed, forged, made
    /// with another key, or issued to another address (the MAC covers it).
    /// `Authenticator` answers it with 438 as well.
    Invalid,
}

pub struct Nonces {
    /// HMAC-SHA256 with the key already absorbed: each nonce clones it
    /// rather than hashing the key's inner and outer pads again (two of the
    /// five SHA-256 blocks a nonce would otherwise cost).
    keyed: Hmac<Sha256>,
    lifetime_secs: u64,
    features: Features,
}

impl Nonces {
    pub fn new(key: [u8; 32], lifetime_secs: u64, features: Features) -> Self {
        let keyed = match <Hmac<Sha256> as Mac>::new_from_slice(&key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        Nonces {
            keyed,
            lifetime_secs,
            features,
        }
    }

    /// Writes a fresh nonce for `client` on `transport` into `out`; returns
    /// its length.
    pub fn issue(
        &self,
        client: SocketAddr,
        transport: Transport,
        now_unix: u64,
        out: &mut [u8; MAX_NONCE_LEN],
    ) -> usize {
        let features = features_bytes(self.features.bits());
        let expiry = now_unix.saturating_add(self.lifetime_secs);
        let mut body = [0u8; BODY_LEN];
        body[..8].copy_from_slice(&expiry.to_be_bytes());
        body[8..].copy_from_slice(&self.mac(expiry, &features, client, transport));

        let (cookie, rest) = out.split_at_mut(NONCE_COOKIE.len());
        cookie.copy_from_slice(NONCE_COOKIE);
        let (feat, rest) = rest.split_at_mut(FEATURES_B64);
        let (body_out, _) = rest.split_at_mut(BODY_B64);
        // Fixed sizes: 3 bytes are 4 characters, 24 bytes are 32.
        let ok = matches!(STANDARD.encode_slice(features, feat), Ok(FEATURES_B64))
            && matches!(URL_SAFE_NO_PAD.encode_slice(body, body_out), Ok(BODY_B64));
        if ok {
            NONCE_LEN
        } else {
            0
        }
    }

    pub fn check(
        &self,
        nonce: &[u8],
        client: SocketAddr,
        transport: Transport,
        now_unix: u64,
    ) -> NonceCheck {
        let Some((expiry, features)) = self.verify(nonce, client, transport) else {
            return NonceCheck::Invalid;
        };
        if now_unix > expiry {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid {
            password_algorithms: features & FEATURE_PASSWORD_ALGORITHMS != 0,
        }
    }

    /// The expiry and feature set of a nonce whose MAC verifies for `client`
    /// on `transport`.
    fn verify(&self, nonce: &[u8], client: SocketAddr, transport: Transport) -> Option<(u64, u32)> {
        if nonce.len() != NONCE_LEN {
            return None;
        }
        let (cookie, rest) = nonce.split_at(NONCE_COOKIE.len());
        if cookie != NONCE_COOKIE {
            return None;
        }
        let (feat_b64, body_b64) = rest.split_at(FEATURES_B64);
        let mut features = [0u8; 3];
        if STANDARD.decode_slice(feat_b64, &mut features).ok()? != features.len() {
            return None;
        }
        let mut body = [0u8; BODY_LEN];
        if URL_SAFE_NO_PAD.decode_slice(body_b64, &mut body).ok()? != body.len() {
            return None;
        }
        let (expiry_bytes, mac) = body.split_at(8);
        let mut e = [0u8; 8];
        e.copy_from_slice(expiry_bytes);
        let expiry = u64::from_be_bytes(e);
        let expected = self.mac(expiry, &features, client, transport);
        if !bool::from(expected[..].ct_eq(mac)) {
            return None;
        }
        Some((expiry, features_value(features)))
    }

    fn mac(
        &self,
        expiry: u64,
        features: &[u8; 3],
        client: SocketAddr,
        transport: Transport,
    ) -> [u8; MAC_LEN] {
        let mut m = self.keyed.clone();
        m.update(&expiry.to_be_bytes());
        m.update(features);
        // The transport is part of the 5-tuple: a nonce issued over UDP is
        // no good over TCP or TLS from the same address, and the reverse.
        m.update(&[transport.index() as u8]);
        match client {
            SocketAddr::V4(a) => {
                m.update(&[4]);
                m.update(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                m.update(&[6]);
                m.update(&a.ip().octets());
            }
        }
        m.update(&client.port().to_be_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }
}

/// Whether `nonce` starts with the nonce cookie and its feature set has the
/// "Password algorithms" bit. Reads the bits without checking the MAC: use it
/// only on a nonce that `Nonces::check` found `Stale` (MAC verified).
pub fn cookie_advertises_password_algorithms(nonce: &[u8]) -> bool {
    let Some(rest) = nonce.strip_prefix(NONCE_COOKIE.as_slice()) else {
        return false;
    };
    let Some(feat_b64) = rest.get(..FEATURES_B64) else {
        return false;
    };
    let mut features = [0u8; 3];
    match STANDARD.decode_slice(feat_b64, &mut features) {
        Ok(3) => features_value(features) & FEATURE_PASSWORD_ALGORITHMS != 0,
        _ => false,
    }
}

fn features_bytes(v: u32) -> [u8; 3] {
    let b = v.to_be_bytes();
    [b[1], b[2], b[3]]
}

fn features_value(b: [u8; 3]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn issue(n: &Nonces, client: SocketAddr, now: u64) -> Vec<u8> {
        let mut buf = [0u8; MAX_NONCE_LEN];
        let len = n.issue(client, Transport::Udp, now, &mut buf);
        buf[..len].to_vec()
    }

    const KEY: [u8; 32] = [0x42; 32];
    const ALGORITHMS: Features = Features {
        password_algorithms: true,
        username_anonymity: false,
    };

    #[test]
    fn layout() {
        let n = Nonces::new(KEY, 600, ALGORITHMS);
        let nonce = issue(&n, addr("192.0.2.1:5000"), 1_700_000_000);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_eq!(NONCE_LEN, 45);
        assert_eq!(&nonce[..13], b"obMatJos2AAAB");
        assert!(nonce
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+/-_".contains(c)));
        // The feature set, base64 of 24 bits: bit 0 → "AAAB", bit 1 → "AAAC"
        // (RFC 8489 Appendix B.1's example nonce), both → "AAAD".
        for (features, cookie) in [
            (Features::default(), b"obMatJos2AAAA"),
            (
                Features {
                    password_algorithms: false,
                    username_anonymity: true,
                },
                b"obMatJos2AAAC",
            ),
            (
                Features {
                    password_algorithms: true,
                    username_anonymity: true,
                },
                b"obMatJos2AAAD",
            ),
        ] {
            let n = Nonces::new(KEY, 600, features);
            let nonce = issue(&n, addr("192.0.2.1:5000"), 1_700_000_000);
            assert_eq!(&nonce[..13], cookie, "{features:?}");
        }
    }

    #[test]
    fn valid_round_trip() {
        let c = addr("[2001:db8::1]:40000");
        for pa in [false, true] {
            let features = Features {
                password_algorithms: pa,
                username_anonymity: true,
            };
            let n = Nonces::new(KEY, 600, features);
            let nonce = issue(&n, c, 1000);
            assert_eq!(
                n.check(&nonce, c, Transport::Udp, 1000),
                NonceCheck::Valid {
                    password_algorithms: pa
                }
            );
            assert_eq!(
                n.check(&nonce, c, Transport::Udp, 1600),
                NonceCheck::Valid {
                    password_algorithms: pa
                }
            );
            assert_eq!(cookie_advertises_password_algorithms(&nonce), pa);
        }
    }

    #[test]
    fn expired_is_stale() {
        let c = addr("192.0.2.1:5000");
        let n = Nonces::new(KEY, 600, ALGORITHMS);
        let nonce = issue(&n, c, 1000);
        assert_eq!(n.check(&nonce, c, Transport::Udp, 1601), NonceCheck::Stale);
        assert_eq!(
            n.check(&nonce, c, Transport::Udp, u64::MAX),
            NonceCheck::Stale
        );
    }

    #[test]
    fn other_client_or_key_is_invalid() {
        let c = addr("192.0.2.1:5000");
        let n = Nonces::new(KEY, 600, ALGORITHMS);
        let nonce = issue(&n, c, 1000);
        assert_eq!(
            n.check(&nonce, addr("192.0.2.1:5001"), Transport::Udp, 1000),
            NonceCheck::Invalid
        );
        assert_eq!(
            n.check(&nonce, addr("192.0.2.2:5000"), Transport::Udp, 1000),
            NonceCheck::Invalid
        );
        assert_eq!(
            n.check(
                &nonce,
                addr("[::ffff:192.0.2.1]:5000"),
                Transport::Udp,
                1000
            ),
            NonceCheck::Invalid
        );
        let other = Nonces::new([0x43; 32], 600, ALGORITHMS);
        assert_eq!(
            other.check(&nonce, c, Transport::Udp, 1000),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn a_nonce_is_bound_to_its_transport() {
        let c = addr("192.0.2.1:5000");
        let n = Nonces::new(KEY, 600, ALGORITHMS);
        for issued in Transport::ALL {
            let mut buf = [0u8; MAX_NONCE_LEN];
            let len = n.issue(c, issued, 1000, &mut buf);
            for used in Transport::ALL {
                let want = if used == issued {
                    NonceCheck::Valid {
                        password_algorithms: true,
                    }
                } else {
                    NonceCheck::Invalid
                };
                assert_eq!(
                    n.check(&buf[..len], c, used, 1000),
                    want,
                    "{issued:?} → {used:?}"
                );
            }
        }
    }

    #[test]
    fn tampering_is_invalid() {
        let c = addr("192.0.2.1:5000");
        let n = Nonces::new(KEY, 600, ALGORITHMS);
        let nonce = issue(&n, c, 1000);
        // Every single-character change, including the feature bits (bid-down).
        for i in 0..nonce.len() {
            let mut t = nonce.clone();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(
                n.check(&t, c, Transport::Udp, 1000),
                NonceCheck::Invalid,
                "byte {i}"
            );
        }
        // Clearing the password-algorithms bit specifically.
        let mut t = nonce.clone();
        t[9..13].copy_from_slice(b"AAAA");
        assert_eq!(n.check(&t, c, Transport::Udp, 1000), NonceCheck::Invalid);
        // Extending the expiry.
        let mut body = [0u8; BODY_LEN];
        URL_SAFE_NO_PAD
            .decode_slice(&nonce[13..], &mut body)
            .expect("own nonce decodes");
        body[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        let mut t = nonce.clone();
        URL_SAFE_NO_PAD
            .encode_slice(body, &mut t[13..])
            .expect("fits");
        assert_eq!(n.check(&t, c, Transport::Udp, 1000), NonceCheck::Invalid);
    }

    #[test]
    fn garbage_is_invalid() {
        let n = Nonces::new(KEY, 600, ALGORITHMS);
        let c = addr("192.0.2.1:5000");
        let good = issue(&n, c, 1000);
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"obMatJos2".to_vec(),
            b"obMatJos2AAAB".to_vec(),
            vec![b'A'; NONCE_LEN],
            vec![0xff; NONCE_LEN],
            good[..NONCE_LEN - 1].to_vec(),
            [good.as_slice(), b"A"].concat(),
            b"f//499k954d6OL34oL9FSTvy64sA".to_vec(),
        ];
        let mut bad_b64 = good.clone();
        bad_b64[20] = b'=';
        cases.push(bad_b64);
        let mut lower_cookie = good.clone();
        lower_cookie[0] = b'O';
        cases.push(lower_cookie);
        for case in cases {
            assert_eq!(
                n.check(&case, c, Transport::Udp, 1000),
                NonceCheck::Invalid,
                "{case:?}"
            );
        }
    }

    #[test]
    fn cookie_bits_of_foreign_nonces() {
        assert!(!cookie_advertises_password_algorithms(b""));
        assert!(!cookie_advertises_password_algorithms(b"obMatJos2"));
        assert!(!cookie_advertises_password_algorithms(b"obMatJos2AAA"));
        assert!(!cookie_advertises_password_algorithms(b"obMatJos2AAAC"));
        assert!(cookie_advertises_password_algorithms(b"obMatJos2AAAD"));
        assert!(!cookie_advertises_password_algorithms(b"obMatJos2!!!!"));
    }

    #[test]
    fn lifetime_saturates() {
        let c = addr("192.0.2.1:5000");
        let n = Nonces::new(KEY, u64::MAX, ALGORITHMS);
        let nonce = issue(&n, c, 1000);
        assert_eq!(
            n.check(&nonce, c, Transport::Udp, u64::MAX),
            NonceCheck::Valid {
                password_algorithms: true
            }
        );
    }
}
