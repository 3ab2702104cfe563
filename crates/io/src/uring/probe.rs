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
