//! The front door of a DTLS listener, for datagrams from an address that
//! has no session yet. It keeps nothing: it reads the datagram, and either
//! answers with a HelloVerifyRequest (written into the caller's buffer),
//! lets a ClientHello with a valid cookie through to make a session, or
//! drops it. So no amount of ClientHellos, spoofed or not, costs the server
//! memory before the client has shown it receives at its address
//! (RFC 6347 §4.2.1; coturn once made its per-client state first).
//!
//! The answer is never larger than what came in: a HelloVerifyRequest
//! (48 bytes with our cookie) is shorter than any ClientHello that parses
//! (at least 13 + 12 + 38 + 4 bytes plus the suites), so the front door
//! cannot be used to amplify.

use std::net::SocketAddr;

use crate::cookie::CookieKey;
use crate::record::{self, ClientHello, NotHello};

/// Why a datagram got no session and no answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not a ClientHello (an application record or alert from a client
    /// whose session has gone, a stray packet).
    NotClientHello,
    /// A fragmented or malformed ClientHello.
    Malformed,
    /// A ClientHello whose cookie is not one we made for this address
    /// lately, and that is also no shorter than our answer would be:
    /// answered with a HelloVerifyRequest instead (see `Verdict`).
    BadCookie,
}

/// What to do with a datagram from an address without a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Drop it.
    Drop(Dropped),
    /// Send the first `n` bytes of the caller's buffer back (a
    /// HelloVerifyRequest). `stale`: the hello carried a cookie that did not
    /// verify (expired, or made for another address).
    HelloVerify { n: usize, stale: bool },
    /// A ClientHello with a valid cookie: a session may be made for it.
    Accept(ClientHello),
}

/// The stateless front door; one per node, shared by every shard.
#[derive(Clone, Debug)]
pub struct Front {
    key: CookieKey,
}

impl Front {
    pub fn new(key: CookieKey) -> Front {
        Front { key }
    }

    /// Classifies `datagram` from `from` at `unix` (seconds); a
    /// HelloVerifyRequest is written into `out` (64 bytes suffice).
    pub fn classify(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        unix: u64,
        out: &mut [u8],
    ) -> Verdict {
        let hello = match record::client_hello(datagram) {
            Ok(h) => h,
            Err(NotHello::NotClientHello) => return Verdict::Drop(Dropped::NotClientHello),
            Err(NotHello::Fragmented | NotHello::Malformed) => {
                return Verdict::Drop(Dropped::Malformed)
            }
        };
        let cookie = hello.cookie(datagram);
        if !cookie.is_empty() && self.key.verify(from, cookie, unix) {
            // RFC 6347 §4.2.2: the hello that answers a HelloVerifyRequest
            // has message_seq 1 (0 from a client that starts over with a
            // cookie it kept); a session takes up from either.
            if hello.message_seq > 1 {
                return Verdict::Drop(Dropped::Malformed);
            }
            return Verdict::Accept(hello);
        }
        let fresh = self.key.cookie(from, unix);
        match record::hello_verify_request(&hello, &fresh, out) {
            Some(n) if n <= datagram.len() => Verdict::HelloVerify {
                n,
                stale: !cookie.is_empty(),
            },
            _ => Verdict::Drop(Dropped::BadCookie),
        }
    }

    /// The cookie a session made for `from` must accept (the one the
    /// client's hello carried was checked already).
    pub fn key(&self) -> &CookieKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::hello;

    #[test]
    fn a_hello_without_a_cookie_is_answered_and_one_with_it_accepted() {
        let f = Front::new(CookieKey::from_secret([3; 32]));
        let from: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        let mut out = [0u8; 64];
        let Verdict::HelloVerify { n, stale: false } =
            f.classify(&hello(&[], 0, 0), from, 500, &mut out)
        else {
            panic!("no HelloVerifyRequest")
        };
        let cookie = out[28..n].to_vec();
        assert_eq!(cookie, f.key().cookie(from, 500));
        let again = hello(&cookie, 1, 1);
        assert!(
            matches!(f.classify(&again, from, 530, &mut out), Verdict::Accept(h) if h.message_seq == 1)
        );
        // Another address, or much later: a new HelloVerifyRequest.
        let other: SocketAddr = "198.51.100.8:4000".parse().unwrap();
        assert!(matches!(
            f.classify(&again, other, 530, &mut out),
            Verdict::HelloVerify { stale: true, .. }
        ));
        assert!(matches!(
            f.classify(&again, from, 500 + 300, &mut out),
            Verdict::HelloVerify { stale: true, .. }
        ));
        // A message_seq past 1 with a good cookie is not a hello we answered.
        assert_eq!(
            f.classify(&hello(&cookie, 2, 1), from, 530, &mut out),
            Verdict::Drop(Dropped::Malformed)
        );
        // Application data from nobody: dropped.
        let mut app = again.clone();
        app[0] = 23;
        assert_eq!(
            f.classify(&app, from, 530, &mut out),
            Verdict::Drop(Dropped::NotClientHello)
        );
    }

    #[test]
    fn the_answer_is_never_longer_than_the_hello() {
        let f = Front::new(CookieKey::from_secret([3; 32]));
        let from: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        let mut out = [0u8; 64];
        let d = hello(&[], 0, 0);
        if let Verdict::HelloVerify { n, .. } = f.classify(&d, from, 0, &mut out) {
            assert!(n <= d.len());
        } else {
            panic!("not answered");
        }
    }
}
