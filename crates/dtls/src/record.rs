//! Just enough of the DTLS record layer (RFC 6347 §4.1) and of a
//! ClientHello (RFC 6347 §4.2.1, RFC 5246 §7.4.1.2) for the stateless
//! cookie exchange: find the cookie, answer with a HelloVerifyRequest, and
//! rewrite a hello without its cookie. Every read is checked: no input
//! panics, nothing is allocated while parsing.

use std::ops::Range;

/// DTLS record header: type, version, epoch, sequence number, length.
pub const RECORD_HEADER: usize = 13;
/// Handshake header: type, length, message_seq, fragment offset and length.
pub const HANDSHAKE_HEADER: usize = 12;
/// ContentType handshake.
pub const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const HELLO_VERIFY_REQUEST: u8 = 3;
/// RFC 6347 §4.2.1: HelloVerifyRequest's server_version is DTLS 1.0
/// whatever is negotiated later.
const DTLS_1_0: [u8; 2] = [0xfe, 0xff];
/// RFC 6347 §4.2.1: a cookie is at most 255 bytes (DTLS 1.2).
pub const MAX_COOKIE: usize = 255;

/// Why a datagram is not a ClientHello the front door can answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NotHello {
    /// Not a handshake record of epoch 0 holding a ClientHello.
    NotClientHello,
    /// A ClientHello split over several fragments: its cookie cannot be
    /// checked without keeping state, so it is dropped.
    Fragmented,
    /// Lengths that do not add up.
    Malformed,
}

/// A whole, unfragmented ClientHello at the start of a datagram, as
/// offsets into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// The record's sequence number (48 bits).
    pub record_seq: u64,
    pub message_seq: u16,
    /// client_version, random and session_id: the body before the cookie.
    pub before_cookie: Range<usize>,
    pub cookie: Range<usize>,
    /// cipher_suites onwards: the body after the cookie.
    pub after_cookie: Range<usize>,
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, &b| n << 8 | u64::from(b))
}

/// `len` bytes at `at` of `buf`, as a range, when they are there.
fn take(buf: &[u8], at: usize, len: usize) -> Option<Range<usize>> {
    let end = at.checked_add(len)?;
    (end <= buf.len()).then_some(at..end)
}

/// Reads the first record of `datagram` as a ClientHello.
pub fn client_hello(datagram: &[u8]) -> Result<ClientHello, NotHello> {
    use NotHello::*;
    let header = datagram.get(..RECORD_HEADER).ok_or(NotClientHello)?;
    // Epoch 0, a handshake record, a DTLS version (0xfeXX).
    if header[0] != CONTENT_HANDSHAKE || header[1] != 0xfe || header[3..5] != [0, 0] {
        return Err(NotClientHello);
    }
    let record_seq = be(&header[5..11]);
    let record_len = be(&header[11..13]) as usize;
    let record = take(datagram, RECORD_HEADER, record_len).ok_or(Malformed)?;
    let hs = &datagram[record.clone()];
    let h = hs.get(..HANDSHAKE_HEADER).ok_or(Malformed)?;
    if h[0] != CLIENT_HELLO {
        return Err(NotClientHello);
    }
    let length = be(&h[1..4]) as usize;
    let message_seq = be(&h[4..6]) as u16;
    let frag_offset = be(&h[6..9]) as usize;
    let frag_len = be(&h[9..12]) as usize;
    if frag_offset != 0 || frag_len != length {
        return Err(Fragmented);
    }
    let body_at = record.start + HANDSHAKE_HEADER;
    let body = take(datagram, body_at, length).ok_or(Malformed)?;
    if body.end > record.end {
        return Err(Malformed);
    }
    // client_version (2) and random (32), then session_id<0..32>.
    let sid_len_at = body.start + 34;
    let sid_len = usize::from(
        *datagram
            .get(sid_len_at)
            .filter(|_| sid_len_at < body.end)
            .ok_or(Malformed)?,
    );
    if sid_len > 32 {
        return Err(Malformed);
    }
    let cookie_len_at = sid_len_at + 1 + sid_len;
    let cookie_len = usize::from(
        *datagram
            .get(cookie_len_at)
            .filter(|_| cookie_len_at < body.end)
            .ok_or(Malformed)?,
    );
    let cookie = take(datagram, cookie_len_at + 1, cookie_len).ok_or(Malformed)?;
    if cookie.end > body.end {
        return Err(Malformed);
    }
    // At least the cipher suites' length and the compression methods'.
    if body.end - cookie.end < 4 {
        return Err(Malformed);
    }
    Ok(ClientHello {
        record_seq,
        message_seq,
        before_cookie: body.start..cookie_len_at,
        after_cookie: cookie.end..body.end,
        cookie,
    })
}

impl ClientHello {
    pub fn cookie<'a>(&self, datagram: &'a [u8]) -> &'a [u8] {
        datagram.get(self.cookie.clone()).unwrap_or_default()
    }
}

/// Writes a HelloVerifyRequest carrying `cookie` in answer to `hello` into
/// `out`; returns its length (None: `out` is too small or the cookie too
/// long). RFC 6347 §4.2.1: the record sequence number is the
/// ClientHello's, and so is message_seq (a stateless server has sent no
/// message before).
pub fn hello_verify_request(hello: &ClientHello, cookie: &[u8], out: &mut [u8]) -> Option<usize> {
    if cookie.len() > MAX_COOKIE {
        return None;
    }
    let body_len = 3 + cookie.len();
    let fragment = HANDSHAKE_HEADER + body_len;
    let total = RECORD_HEADER + fragment;
    let out = out.get_mut(..total)?;
    let seq = hello.record_seq.to_be_bytes();
    out[0] = CONTENT_HANDSHAKE;
    out[1..3].copy_from_slice(&DTLS_1_0);
    out[3..5].fill(0);
    out[5..11].copy_from_slice(&seq[2..8]);
    out[11..13].copy_from_slice(&(fragment as u16).to_be_bytes());
    let h = &mut out[RECORD_HEADER..];
    h[0] = HELLO_VERIFY_REQUEST;
    h[1..4].copy_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    h[4..6].copy_from_slice(&hello.message_seq.to_be_bytes());
    h[6..9].fill(0);
    h[9..12].copy_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    let b = &mut h[HANDSHAKE_HEADER..];
    b[0..2].copy_from_slice(&DTLS_1_0);
    b[2] = cookie.len() as u8;
    b[3..].copy_from_slice(cookie);
    Some(total)
}

/// The same ClientHello as it was first sent: message_seq 0, record
/// sequence number 0, no cookie. A new session is shown this first, so that
/// it stands where a server that had answered the first hello itself would
/// stand (see `session`). None when `hello` does not describe `datagram`.
pub fn without_cookie(hello: &ClientHello, datagram: &[u8]) -> Option<Vec<u8>> {
    let before = datagram.get(hello.before_cookie.clone())?;
    let after = datagram.get(hello.after_cookie.clone())?;
    let version = datagram.get(1..3)?;
    let body_len = before.len() + 1 + after.len();
    let fragment = HANDSHAKE_HEADER + body_len;
    let mut v = Vec::with_capacity(RECORD_HEADER + fragment);
    v.push(CONTENT_HANDSHAKE);
    v.extend_from_slice(version);
    v.extend_from_slice(&[0; 8]); // epoch 0, sequence number 0
    v.extend_from_slice(&u16::try_from(fragment).ok()?.to_be_bytes());
    v.push(CLIENT_HELLO);
    let len = u32::try_from(body_len).ok()?.to_be_bytes();
    v.extend_from_slice(&len[1..]);
    v.extend_from_slice(&[0, 0, 0, 0, 0]); // message_seq 0, offset 0
    v.extend_from_slice(&len[1..]);
    v.extend_from_slice(before);
    v.push(0); // no cookie
    v.extend_from_slice(after);
    Some(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ClientHello record with `cookie`, message_seq `mseq`,
    /// record sequence number `rseq`.
    pub(crate) fn hello(cookie: &[u8], mseq: u16, rseq: u8) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.push(cookie.len() as u8);
        body.extend_from_slice(cookie);
        body.extend_from_slice(&[0, 2, 0xc0, 0x2b, 1, 0]);
        let mut hs = vec![CLIENT_HELLO, 0, 0, body.len() as u8];
        hs.extend_from_slice(&mseq.to_be_bytes());
        hs.extend_from_slice(&[0, 0, 0, 0, 0, body.len() as u8]);
        hs.extend_from_slice(&body);
        let mut r = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, rseq, 0, hs.len() as u8];
        r.extend_from_slice(&hs);
        r
    }

    #[test]
    fn a_client_hello_is_read_and_answered() {
        let d = hello(&[], 0, 3);
        let h = client_hello(&d).unwrap();
        assert_eq!((h.record_seq, h.message_seq), (3, 0));
        assert!(h.cookie(&d).is_empty());
        let mut out = [0u8; 64];
        let n = hello_verify_request(&h, &[9; 20], &mut out).unwrap();
        assert_eq!(n, 13 + 12 + 3 + 20);
        assert_eq!(out[0], 22);
        assert_eq!(out[10], 3, "the hello's record sequence number");
        assert_eq!(out[13], HELLO_VERIFY_REQUEST);
        assert_eq!(&out[25..27], &DTLS_1_0);
        assert_eq!(out[27], 20);
        // Too small a buffer: nothing.
        assert!(hello_verify_request(&h, &[9; 20], &mut out[..40]).is_none());
    }

    #[test]
    fn the_cookie_is_found_and_taken_out() {
        let d = hello(&[5; 20], 1, 1);
        let h = client_hello(&d).unwrap();
        assert_eq!(h.cookie(&d), &[5; 20]);
        assert_eq!(h.message_seq, 1);
        let plain = without_cookie(&h, &d).unwrap();
        assert_eq!(plain, hello(&[], 0, 0));
    }

    #[test]
    fn anything_else_is_refused_without_a_panic() {
        let d = hello(&[5; 20], 1, 1);
        for n in 0..d.len() {
            assert!(client_hello(&d[..n]).is_err(), "{n} bytes");
        }
        let mut f = d.clone();
        f[13 + 9 + 2] ^= 1; // fragment length
        assert_eq!(client_hello(&f), Err(NotHello::Fragmented));
        let mut e = d.clone();
        e[4] = 1; // epoch 1
        assert_eq!(client_hello(&e), Err(NotHello::NotClientHello));
        let mut a = d;
        a[0] = 23;
        assert_eq!(client_hello(&a), Err(NotHello::NotClientHello));
        for b in 0..=255u8 {
            let _ = client_hello(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, b, 1, 0, 0]);
        }
    }
}
