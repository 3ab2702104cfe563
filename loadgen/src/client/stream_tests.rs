//! The engine over TCP and TLS against scripted servers in this process:
//! responses cut in odd pieces and ChannelData between them, no
//! retransmission over a stream, and TLS with and without certificate checks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use uturn_stun::{attr, next_frame, Class, Framing, Message, MessageWriter, Method};

use super::{run_plan, Connector, Engine, FlowError, Step, TurnFlow};
use crate::creds::Auth;
use crate::flags::{Dial, Transport};

const RELAYED: &str = "127.0.0.1:50000";
const PLAN: [Step; 4] = [Step::Allocate, Step::Permission, Step::Bind, Step::Delete];

/// The scripted server's answer to `m`: 401 with REALM and NONCE to a
/// request without MESSAGE-INTEGRITY, success otherwise.
fn answer(m: &Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; 512];
    let tid = *m.transaction_id();
    let challenge = m.get(attr::MESSAGE_INTEGRITY).is_none();
    let class = if challenge {
        Class::Error
    } else {
        Class::Success
    };
    let mut w = MessageWriter::new(&mut out, m.method(), class, &tid).unwrap();
    if challenge {
        w.error_code(401, "Unauthorized").unwrap();
        w.raw(attr::REALM, b"r").unwrap();
        w.raw(attr::NONCE, b"n").unwrap();
    } else if m.method() == Method::Allocate {
        w.xor_address(attr::XOR_RELAYED_ADDRESS, RELAYED.parse().unwrap())
            .unwrap();
    }
    let n = w.finish();
    out.truncate(n);
    out
}

/// Serves one client on `io`: reads framed requests, and writes each
/// answer behind a padded ChannelData frame, in pieces of 7 bytes. Returns
/// the methods of the requests, in order.
fn serve(mut io: impl Read + Write, rounds: usize) -> Vec<Method> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut seen = Vec::new();
    while seen.len() < rounds {
        let len = match next_frame(&buf) {
            Framing::Complete { len, .. } => len,
            Framing::Incomplete { .. } => {
                let n = io.read(&mut chunk).unwrap();
                assert!(n > 0, "the client closed the connection");
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
            Framing::Invalid(e) => panic!("the client sent no TURN framing: {e:?}"),
        };
        let frame: Vec<u8> = buf.drain(..len).collect();
        let m = Message::parse(&frame).unwrap();
        seen.push(m.method());
        // 5 bytes of data, padded to 8 (RFC 8656 §12.5).
        let mut wire = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        wire.extend_from_slice(&answer(&m));
        for piece in wire.chunks(7) {
            io.write_all(piece).unwrap();
            io.flush().unwrap();
        }
    }
    seen
}

/// A TCP server thread for one client.
fn tcp_server(rounds: usize) -> (SocketAddr, JoinHandle<Vec<Method>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        serve(s, rounds)
    });
    (addr, t)
}

/// A self-signed certificate for "localhost": its DER, its key, and the
/// PEM in a file (for --tls-ca).
fn certificate(tag: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = std::env::temp_dir().join(format!(
        "uturn-loadgen-test-{}-{tag}.pem",
        std::process::id()
    ));
    std::fs::write(&pem, ck.cert.pem()).unwrap();
    let key = PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    (ck.cert.der().clone(), key.into(), pem)
}

/// A TLS server thread (rustls, ALPN stun.turn) for one client; it serves
/// `rounds` requests, or returns no methods if the handshake fails.
fn tls_server(rounds: usize, tag: &str) -> (SocketAddr, PathBuf, JoinHandle<Vec<Method>>) {
    let (cert, key, pem) = certificate(tag);
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"stun.turn".to_vec()];
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tls = StreamOwned::new(ServerConnection::new(Arc::new(config)).unwrap(), s);
        // A client that refuses the certificate ends the handshake.
        while tls.conn.is_handshaking() {
            if tls.conn.complete_io(&mut tls.sock).is_err() {
                return Vec::new();
            }
        }
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"stun.turn"[..]));
        serve(tls, rounds)
    });
    (addr, pem, t)
}

fn dial(server: SocketAddr, transport: Transport) -> Dial {
    Dial {
        server,
        transport,
        tls_ca: None,
        tls_sni: None,
    }
}

/// Runs `plan` for one client over `dial`; the engine and the flow's slot.
fn run_one(dial: &Dial, plan: &[Step]) -> (Engine, usize) {
    let conn = Connector::new(dial, 1).unwrap().open(0, 1 << 16).unwrap();
    let auth = Auth::Static {
        user: "u".into(),
        password: "p".into(),
    };
    let mut e = Engine::new().unwrap();
    let flow = TurnFlow::new(0, conn, "127.0.0.1:9".parse().unwrap(), &auth, None);
    let slot = e.insert(flow).unwrap();
    e.keep_data = true;
    let deadline = Instant::now() + Duration::from_secs(10);
    run_plan(&mut e, &[slot], plan, 1, deadline, |_| {}).unwrap();
    (e, slot)
}

const SEEN: [Method; 5] = [
    Method::Allocate,
    Method::Allocate,
    Method::CreatePermission,
    Method::ChannelBind,
    Method::Refresh,
];

#[test]
fn tcp_flow_with_responses_in_pieces_and_channel_data_between() {
    let (addr, t) = tcp_server(5);
    let (e, slot) = run_one(&dial(addr, Transport::Tcp), &PLAN);
    let f = e.flow(slot).unwrap();
    assert_eq!(f.error, None);
    assert_eq!(f.relayed, Some(RELAYED.parse().unwrap()));
    assert_eq!(t.join().unwrap(), SEEN);
    assert_eq!((e.stats.requests, e.stats.retransmits), (5, 0));
}

#[test]
fn tls_flow_without_verification() {
    let (addr, _pem, t) = tls_server(5, "noverify");
    let (e, slot) = run_one(&dial(addr, Transport::Tls), &PLAN);
    let f = e.flow(slot).unwrap();
    assert_eq!(f.error, None);
    assert_eq!(t.join().unwrap(), SEEN);
    let info = f.conn.tls_info().expect("handshake done");
    assert_eq!(info.alpn.as_deref(), Some("stun.turn"));
    assert_eq!(info.version, "TLSv1_3");
}

#[test]
fn tls_flow_verifies_the_certificate_with_a_ca() {
    let (addr, pem, t) = tls_server(5, "ca");
    let mut d = dial(addr, Transport::Tls);
    d.tls_ca = Some(pem.clone());
    d.tls_sni = Some("localhost".into());
    let (e, slot) = run_one(&d, &PLAN);
    assert_eq!(e.flow(slot).unwrap().error, None);
    assert_eq!(t.join().unwrap(), SEEN);
    let _ = std::fs::remove_file(pem);
}

#[test]
fn tls_flow_refuses_a_certificate_for_another_name() {
    let (addr, pem, t) = tls_server(5, "wrongname");
    let mut d = dial(addr, Transport::Tls);
    d.tls_ca = Some(pem.clone());
    d.tls_sni = Some("turn.example".into());
    let (e, slot) = run_one(&d, &[Step::Allocate]);
    match &e.flow(slot).unwrap().error {
        Some(FlowError::Io(why)) => assert!(why.contains("TLS"), "{why}"),
        other => panic!("not a TLS error: {other:?}"),
    }
    assert!(t.join().unwrap().is_empty());
    let _ = std::fs::remove_file(pem);
}

#[test]
fn a_stream_request_is_sent_once_and_times_out() {
    // Accepts, reads and never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got.len()
    });
    let started = Instant::now();
    let (e, slot) = run_one(&dial(addr, Transport::Tcp), &[Step::Allocate]);
    assert_eq!(
        e.flow(slot).unwrap().error,
        Some(FlowError::Timeout(Step::Allocate))
    );
    assert!(started.elapsed() >= super::STREAM_TIMEOUT);
    assert_eq!((e.stats.requests, e.stats.retransmits), (1, 0));
    drop(e);
    // One Allocate without credentials: a 20-byte header and REQUESTED-TRANSPORT.
    assert_eq!(t.join().unwrap(), 28);
}

#[test]
fn a_closed_connection_fails_the_request_at_once() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        drop(s);
    });
    let started = Instant::now();
    let (e, slot) = run_one(&dial(addr, Transport::Tcp), &[Step::Allocate]);
    assert!(
        matches!(e.flow(slot).unwrap().error, Some(FlowError::Io(_))),
        "{:?}",
        e.flow(slot).unwrap().error
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    t.join().unwrap();
}
