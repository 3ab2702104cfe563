//! Creating a ring: its geometry ([`UringConfig`]) and the setup flags,
//! tried best first and fewer when the kernel refuses them ([`RingMode`]).

use std::io;
use std::time::Duration;

use io_uring::IoUring;

use super::{MAX_NAME_LEN, MIN_NAME_LEN, RECVMSG_OUT_LEN};

/// Sizes of one ring and its buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringConfig {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries (at least `sq_entries`).
    pub cq_entries: u32,
    /// Provided receive buffers: a power of two, at most 32768.
    pub buffers: u16,
    /// Offset of the payload in each buffer (header + name area); between
    /// 16 + 28 and 16 + 128.
    pub headroom: usize,
    /// Largest datagram received whole.
    pub capacity: usize,
    /// Bytes kept free after the largest datagram.
    pub tailroom: usize,
    /// Sends in flight at most (each with a reply area).
    pub tx_slots: u32,
    /// Bytes of each reply area.
    pub reply_len: usize,
    /// Provided buffers for stream (TCP) receives, a buffer group of their
    /// own: zero for none (no stream socket may then be registered), else a
    /// power of two up to 32768.
    pub stream_buffers: u16,
    /// Stream bytes each of those buffers takes, after `headroom` free
    /// bytes and before `tailroom` more.
    pub stream_capacity: usize,
    /// Slots of the fixed-file table.
    pub files: u32,
    /// The setup flags tried first; fewer are tried when the kernel
    /// refuses them. `DeferTaskrun` in production.
    pub flags: RingMode,
    /// Send runs of same-size datagrams from one socket to one destination
    /// as one `sendmsg` with UDP_SEGMENT (GSO).
    pub gso: bool,
    /// Batched waits: after a turn that received two or more datagrams,
    /// the next wait asks for `MAX_BATCH_WAIT` completions but returns
    /// after this long at the latest. Zero waits for one.
    pub batch_wait: Duration,
}

/// The most completions a batched wait asks for.
pub const MAX_BATCH_WAIT: usize = 32;

impl UringConfig {
    /// Bytes from one buffer to the next.
    pub fn stride(&self) -> usize {
        (self.headroom + self.capacity + self.tailroom).next_multiple_of(64)
    }

    /// Bytes from one stream buffer to the next.
    pub fn stream_stride(&self) -> usize {
        (self.headroom + self.stream_capacity + self.tailroom).next_multiple_of(64)
    }

    pub(super) fn check(&self) -> io::Result<()> {
        let name = self.headroom.checked_sub(RECVMSG_OUT_LEN);
        let streams_ok = self.stream_buffers == 0
            || (self.stream_capacity > 0 && self.stream_capacity <= u32::MAX as usize);
        let ok = name.is_some_and(|n| (MIN_NAME_LEN..=MAX_NAME_LEN).contains(&n))
            && streams_ok
            && self.capacity > 0
            && self.headroom + self.capacity <= u32::MAX as usize
            && self.files > 0
            && self.sq_entries > 0;
        if ok {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring buffer layout out of range",
            ))
        }
    }
}

/// The setup flags the kernel accepted, best first.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RingMode {
    /// SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL (Linux 6.1).
    DeferTaskrun,
    /// COOP_TASKRUN | SUBMIT_ALL (Linux 5.19).
    CoopTaskrun,
    /// No setup flags.
    Plain,
}

impl RingMode {
    pub fn name(self) -> &'static str {
        match self {
            RingMode::DeferTaskrun => "single_issuer+defer_taskrun+submit_all",
            RingMode::CoopTaskrun => "coop_taskrun+submit_all",
            RingMode::Plain => "no setup flags",
        }
    }
}

pub(super) fn with_context(what: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Creates a ring with the best setup flags the kernel accepts.
pub(super) fn build_ring(cfg: &UringConfig) -> io::Result<(IoUring, RingMode)> {
    let mut refused = None;
    let tiers = [
        RingMode::DeferTaskrun,
        RingMode::CoopTaskrun,
        RingMode::Plain,
    ];
    let first = tiers.iter().position(|&m| m == cfg.flags).unwrap_or(0);
    for mode in tiers.into_iter().skip(first) {
        let mut b = IoUring::builder();
        b.setup_cqsize(cfg.cq_entries.max(cfg.sq_entries))
            .setup_clamp();
        match mode {
            RingMode::DeferTaskrun => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_submit_all();
            }
            RingMode::CoopTaskrun => {
                b.setup_coop_taskrun().setup_submit_all();
            }
            RingMode::Plain => {}
        }
        match b.build(cfg.sq_entries) {
            Ok(ring) => {
                tracing::debug!(flags = mode.name(), "io_uring created");
                return Ok((ring, mode));
            }
            // EINVAL: flags this kernel does not know; try fewer.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(flags = mode.name(), error = %e, "io_uring setup flags refused");
                refused = Some(e);
            }
            Err(e) => return Err(with_context("io_uring_setup")(e)),
        }
    }
    Err(with_context("io_uring_setup")(refused.unwrap_or_else(
        || io::Error::from(io::ErrorKind::Unsupported),
    )))
}
