//! `dtls_front`: one datagram at a DTLS listener from an address without a
//! session, through the stateless front door (`uturn::dtls::Front`), which
//! is what anyone on the internet can reach before any state exists.
//!
//! Input: the datagram. Checked:
//!
//! * `classify` never panics, and keeps nothing (it takes `&self`);
//! * a HelloVerifyRequest is never longer than the datagram (no
//!   amplification), is a handshake record of type 3 that parses, and
//!   carries the cookie `CookieKey::cookie` makes for the address now;
//! * `Accept` only for a ClientHello whose cookie verifies for this address,
//!   with message_seq 0 or 1, and the same datagram from another address is
//!   never accepted;
//! * for an accepted hello, `record::without_cookie` gives a hello that
//!   parses, with no cookie and message_seq 0, that is itself answered with
//!   a HelloVerifyRequest.

use std::net::SocketAddr;

use uturn::dtls::front::Verdict;
use uturn::dtls::{record, CookieKey, Front};

/// The fuzzer's clock and key: fixed, so that seeds can carry valid cookies.
pub const UNIX: u64 = 1_000_000;
pub const SECRET: [u8; 32] = [7; 32];
pub const FROM: &str = "192.0.2.10:40000";

pub fn run(data: &[u8]) {
    let front = Front::new(CookieKey::from_secret(SECRET));
    let from: SocketAddr = FROM.parse().unwrap();
    let mut out = [0u8; 64];
    match front.classify(data, from, UNIX, &mut out) {
        Verdict::Drop(_) => {}
        Verdict::HelloVerify { n, .. } => {
            assert!(n <= data.len(), "{n}-byte answer to {} bytes", data.len());
            let hvr = &out[..n];
            assert_eq!((hvr[0], hvr[13]), (22, 3), "a HelloVerifyRequest record");
            let cookie = &hvr[28..];
            assert_eq!(cookie, front.key().cookie(from, UNIX));
        }
        Verdict::Accept(hello) => {
            assert!(front.key().verify(from, hello.cookie(data), UNIX));
            assert!(hello.message_seq <= 1);
            let other: SocketAddr = "192.0.2.11:40000".parse().unwrap();
            assert!(!matches!(
                front.classify(data, other, UNIX, &mut out),
                Verdict::Accept(_)
            ));
            let first = record::without_cookie(&hello, data).expect("rewritten");
            let again = record::client_hello(&first).expect("the rewritten hello parses");
            assert!(again.cookie(&first).is_empty());
            assert_eq!((again.message_seq, again.record_seq), (0, 0));
            assert!(matches!(
                front.classify(&first, from, UNIX, &mut out),
                Verdict::HelloVerify { .. }
            ));
        }
    }
}

/// A minimal DTLS 1.2 ClientHello record with `cookie` and message_seq `mseq`.
pub fn hello(cookie: &[u8], mseq: u16, suites: &[u8]) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0);
    body.push(cookie.len() as u8);
    body.extend_from_slice(cookie);
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(suites);
    body.extend_from_slice(&[1, 0]);
    let len = (body.len() as u32).to_be_bytes();
    let mut hs = vec![1, len[1], len[2], len[3]];
    hs.extend_from_slice(&mseq.to_be_bytes());
    hs.extend_from_slice(&[0, 0, 0, len[1], len[2], len[3]]);
    hs.extend_from_slice(&body);
    let mut r = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
    r.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    r.extend_from_slice(&hs);
    r
}

/// The seeds: hellos without a cookie, with a valid one, with a forged one,
/// fragmented, and application data from nobody.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let from: SocketAddr = FROM.parse().unwrap();
    let good = CookieKey::from_secret(SECRET).cookie(from, UNIX);
    let suites = [0xc0, 0x2b, 0xc0, 0x2f, 0xcc, 0xa9];
    let mut fragmented = hello(&[], 0, &suites);
    fragmented[13 + 11] = 1; // fragment length short of the message's
    let mut app = hello(&good, 1, &suites);
    app[0] = 23;
    vec![
        ("no-cookie".into(), hello(&[], 0, &suites)),
        ("valid-cookie".into(), hello(&good, 1, &suites)),
        ("valid-cookie-seq0".into(), hello(&good, 0, &suites)),
        ("forged-cookie".into(), hello(&[0xab; 20], 1, &suites)),
        ("fragmented".into(), fragmented),
        ("application-data".into(), app),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_reach_every_verdict() {
        let front = Front::new(CookieKey::from_secret(SECRET));
        let from: SocketAddr = FROM.parse().unwrap();
        let mut out = [0u8; 64];
        let mut kinds = Vec::new();
        for (_, s) in seeds() {
            run(&s);
            kinds.push(match front.classify(&s, from, UNIX, &mut out) {
                Verdict::Drop(_) => 0,
                Verdict::HelloVerify { .. } => 1,
                Verdict::Accept(_) => 2,
            });
        }
        for k in 0..3 {
            assert!(kinds.contains(&k), "{kinds:?}");
        }
    }
}
