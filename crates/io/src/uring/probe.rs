//! Is io_uring usable here, with everything the backend needs?
//!
//! The probe builds a tiny ring the way a shard does (setup flags, sparse
//! fixed files, a provided-buffer ring), arms a multishot `recvmsg` on an
//! unbound UDP socket (a kernel without multishot `recvmsg` refuses it at
//! once) and cancels it, waiting for both completions.

use std::fmt;
use std::io;
use std::net::UdpSocket;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::{RingMode, Uring, UringConfig};

/// Why io_uring cannot be used; `Display` gives the reason in a few words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Checks that io_uring works with every feature the backend uses; returns
/// the setup flags the kernel accepted.
///
/// The probe runs on a thread of its own: when a ring closes, the kernel
/// sends task work (a signal-like wake-up, which makes a blocking system
/// call with a timeout fail with EINTR) to every thread that used it, and
/// the caller's thread should not get one.
pub fn probe() -> Result<RingMode, Unavailable> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("uturn-io-uring-probe".into())
            .spawn_scoped(s, probe_here)
            .map_err(|e| Unavailable(format!("cannot start the probe thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(Unavailable("the probe panicked".into())))
    })
}

fn probe_here() -> Result<RingMode, Unavailable> {
    let cfg = UringConfig {
        sq_entries: 4,
        cq_entries: 8,
        buffers: 2,
        headroom: 48,
        capacity: 64,
        tailroom: 0,
        tx_slots: 1,
        reply_len: 64,
        stream_buffers: 0,
        stream_capacity: 0,
        files: 1,
        flags: RingMode::DeferTaskrun,
        batch_wait: Duration::ZERO,
        gso: false,
    };
    let mut ring = Uring::new(&cfg).map_err(explain)?;
    let sock: UdpSocket = Socket::new(
        Domain::IPV4,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )
    .map_err(|e| Unavailable(format!("cannot create a UDP socket for the probe: {e}")))?
    .into();
    let id = ring.ctl().add(sock, 0).map_err(explain)?;
    ring.wait(Duration::ZERO).map_err(explain)?;
    // A kernel without multishot recvmsg (before Linux 6.0) fails the
    // request at once with EINVAL.
    if ring.stats().rx_errors > 0 || !ring.ctl().files[id.0 as usize].armed {
        return Err(Unavailable(
            "multishot recvmsg with provided buffers refused (Linux 6.0 or newer needed)".into(),
        ));
    }
    if !ring.shutdown(Duration::from_secs(2)) {
        return Err(Unavailable(
            "cancelling a multishot recvmsg did not complete".into(),
        ));
    }
    let st = ring.stats();
    if st.rx_cancelled != 1 || st.cancel_errors != 0 || st.ring_errors != 0 {
        return Err(Unavailable(format!(
            "cancelling a multishot recvmsg gave unexpected completions ({st:?})"
        )));
    }
    Ok(ring.mode())
}

/// Checks that this kernel serves TCP natively on the ring: a multishot
/// accept (Linux 5.19), a multishot `recv` into a buffer group (6.0), a
/// send, and cancelling by fixed file (5.19). Call once `probe` has
/// succeeded. Uses a Unix socket pair and an autobound abstract Unix
/// listener: no network address is bound.
pub fn probe_streams() -> Result<(), Unavailable> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("uturn-io-uring-probe".into())
            .spawn_scoped(s, probe_streams_here)
            .map_err(|e| Unavailable(format!("cannot start the probe thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(Unavailable("the probe panicked".into())))
    })
}

fn probe_streams_here() -> Result<(), Unavailable> {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::ctl::{Owned, SlotKind};
    use super::StreamEvent;

    let cfg = UringConfig {
        sq_entries: 8,
        cq_entries: 16,
        buffers: 2,
        headroom: 48,
        capacity: 64,
        tailroom: 0,
        tx_slots: 1,
        reply_len: 64,
        stream_buffers: 2,
        stream_capacity: 64,
        files: 4,
        flags: RingMode::DeferTaskrun,
        batch_wait: Duration::ZERO,
        gso: false,
    };
    let local = |what: &str, e: io::Error| Unavailable(format!("{what} for the probe: {e}"));
    let mut ring = Uring::new(&cfg).map_err(explain)?;
    let (mut a, b) = UnixStream::pair().map_err(|e| local("a socket pair", e))?;
    b.set_nonblocking(true)
        .map_err(|e| local("a socket pair", e))?;
    let listener = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)
        .and_then(|l| {
            // An empty address: the kernel picks an abstract name.
            l.bind(&socket2::SockAddr::unix("")?)?;
            l.listen(1)?;
            Ok(l)
        })
        .map_err(|e| local("a Unix listener", e))?;
    let to = listener
        .local_addr()
        .map_err(|e| local("a Unix listener", e))?;
    let sid = ring
        .ctl
        .register(Owned::Fd(b.into()), SlotKind::Stream, 1)
        .map_err(explain)?;
    ring.ctl
        .register(Owned::Fd(listener.into()), SlotKind::Listener, 2)
        .map_err(explain)?;
    let client = Socket::new(Domain::UNIX, Type::STREAM, None)
        .and_then(|c| c.connect(&to).map(|()| c))
        .map_err(|e| local("a Unix client", e))?;
    a.write_all(b"probe")
        .map_err(|e| local("a socket pair", e))?;
    let (mut accepted, mut received, mut sent) = (false, false, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !(accepted && received && sent) && std::time::Instant::now() < deadline {
        ring.wait(Duration::from_millis(20)).map_err(explain)?;
        for i in 0..ring.stream_events() {
            match ring.stream_event(i) {
                Some(StreamEvent::Accepted { .. }) => accepted = true,
                Some(StreamEvent::Data(c)) => received |= &c.buf[48..48 + c.len] == b"probe",
                Some(StreamEvent::Sent { .. }) => sent = true,
                _ => {}
            }
        }
        if received && !sent {
            ring.stream_send(sid, |b| b.extend_from_slice(b"back"));
        }
    }
    drop(client);
    let mut back = [0u8; 4];
    let echoed = sent && a.read_exact(&mut back).is_ok() && &back == b"back";
    let st = ring.stats().clone();
    if !(accepted && received && echoed) || st.stream_errors > 0 {
        return Err(Unavailable(format!(
            "multishot accept or recv refused (accepted {accepted}, received {received}, \
             sent {echoed}; Linux 6.0 or newer needed)"
        )));
    }
    if !ring.shutdown(Duration::from_secs(2)) {
        return Err(Unavailable(
            "cancelling a multishot accept or recv did not complete".into(),
        ));
    }
    let st = ring.stats();
    if st.cancel_errors != 0 || st.ring_errors != 0 {
        return Err(Unavailable(format!(
            "cancelling stream requests gave unexpected completions ({st:?})"
        )));
    }
    Ok(())
}

/// The error, plus the likely cause of a refusal.
fn explain(e: io::Error) -> Unavailable {
    let hint = match e.kind() {
        io::ErrorKind::PermissionDenied => Some(
            match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim().to_string())
                .as_deref()
            {
                Ok("2") => "kernel.io_uring_disabled = 2",
                Ok("1") => {
                    "kernel.io_uring_disabled = 1 and this user is not in kernel.io_uring_group"
                }
                _ => "a seccomp filter or security policy refuses io_uring",
            },
        ),
        io::ErrorKind::Unsupported => {
            Some("the kernel lacks io_uring, or a seccomp filter hides it")
        }
        _ => None,
    };
    match hint {
        Some(h) => Unavailable(format!("{e}: {h}")),
        None => Unavailable(e.to_string()),
    }
}
