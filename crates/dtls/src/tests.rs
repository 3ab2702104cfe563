//! A real OpenSSL DTLS client against the front door and a session, in
//! memory.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use openssl::ssl::{SslContextBuilder, SslMethod, SslStream, SslVerifyMode};

use crate::front::{Front, Verdict};
use crate::{CookieKey, DtlsContext, Session};

#[derive(Default)]
struct ClientPipe {
    inbound: VecDeque<Vec<u8>>,
    outbound: Vec<Vec<u8>>,
}

impl Read for ClientPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let d = self
            .inbound
            .pop_front()
            .ok_or(io::Error::from(io::ErrorKind::WouldBlock))?;
        buf[..d.len()].copy_from_slice(&d);
        Ok(d.len())
    }
}

impl Write for ClientPipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) fn context() -> DtlsContext {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    DtlsContext::new(&[c.cert.der().to_vec()], &c.key_pair.serialize_der()).unwrap()
}

fn client() -> SslStream<ClientPipe> {
    let mut b = SslContextBuilder::new(SslMethod::dtls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let mut ssl = openssl::ssl::Ssl::new(&b.build()).unwrap();
    ssl.set_connect_state();
    ssl.set_mtu(1200).unwrap();
    SslStream::new(ssl, ClientPipe::default()).unwrap()
}

/// Runs the handshake through the front door; returns the session and the
/// number of HelloVerifyRequests the front door sent.
fn handshake(
    front: &Front,
    ctx: &DtlsContext,
    from: SocketAddr,
    c: &mut SslStream<ClientPipe>,
) -> (Session, usize) {
    let mut session: Option<Session> = None;
    let mut hvr = 0;
    for _ in 0..20 {
        let done = c.do_handshake().is_ok();
        let sent = std::mem::take(&mut c.get_mut().outbound);
        for d in sent {
            match &mut session {
                Some(s) => {
                    s.handle(&d).unwrap();
                }
                None => {
                    let mut out = [0u8; 64];
                    match front.classify(&d, from, 1000, &mut out) {
                        Verdict::HelloVerify { n, .. } => {
                            hvr += 1;
                            c.get_mut().inbound.push_back(out[..n].to_vec());
                        }
                        Verdict::Accept(h) => {
                            let cookie = front.key().cookie(from, 1000);
                            session = Some(
                                Session::accept(ctx, &h, &d, cookie)
                                    .map_err(|e| e.0)
                                    .unwrap(),
                            );
                        }
                        Verdict::Drop(why) => panic!("dropped: {why:?}"),
                    }
                }
            }
        }
        if let Some(s) = &mut session {
            while let Some(d) = s.poll_transmit() {
                c.get_mut().inbound.push_back(d);
            }
            if done && s.is_open() {
                return (session.unwrap(), hvr);
            }
        }
    }
    panic!("no handshake");
}

#[test]
fn an_openssl_client_connects_through_the_cookie_exchange_and_talks() {
    let front = Front::new(CookieKey::from_secret([9; 32]));
    let ctx = context();
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut c = client();
    let (mut s, hvr) = handshake(&front, &ctx, from, &mut c);
    assert_eq!(hvr, 1, "one HelloVerifyRequest, from the front door");
    // Client → server: one record each.
    c.ssl_write(b"\x00\x01hello").unwrap();
    for d in std::mem::take(&mut c.get_mut().outbound) {
        s.handle(&d).unwrap();
    }
    let mut buf = [0u8; 2048];
    assert_eq!(s.recv(&mut buf).unwrap(), Some(7));
    assert_eq!(&buf[..7], b"\x00\x01hello");
    assert_eq!(s.recv(&mut buf).unwrap(), None);
    // Server → client.
    s.send(b"\x40\x00\x00\x02hi").unwrap();
    while let Some(d) = s.poll_transmit() {
        c.get_mut().inbound.push_back(d);
    }
    let n = c.ssl_read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"\x40\x00\x00\x02hi");
    // close_notify from the client ends the session.
    let _ = c.shutdown();
    for d in std::mem::take(&mut c.get_mut().outbound) {
        s.handle(&d).unwrap();
    }
    assert!(matches!(s.recv(&mut buf), Err(crate::SessionError::Closed)));
}

#[test]
fn a_hello_with_a_cookie_for_another_address_makes_no_session() {
    let front = Front::new(CookieKey::from_secret([9; 32]));
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut c = client();
    let _ = c.do_handshake();
    let first = c.get_mut().outbound.remove(0);
    let mut out = [0u8; 64];
    let Verdict::HelloVerify { n, .. } = front.classify(&first, from, 1000, &mut out) else {
        panic!()
    };
    c.get_mut().inbound.push_back(out[..n].to_vec());
    let _ = c.do_handshake();
    let second = c.get_mut().outbound.remove(0);
    assert!(matches!(
        front.classify(&second, from, 1000, &mut out),
        Verdict::Accept(_)
    ));
    // The same hello replayed from another source gets a new cookie only.
    let spoofed: SocketAddr = "127.0.0.2:40000".parse().unwrap();
    assert!(matches!(
        front.classify(&second, spoofed, 1000, &mut out),
        Verdict::HelloVerify { stale: true, .. }
    ));
}
