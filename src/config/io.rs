//! The data plane's io backend and its batching (`io_backend`,
//! `io_batch_wait_usecs`, `io_gso`, `io_streams`, and the `xdp` keys).
//! Restart-only: each shard
//! sets up its driver once.

use std::time::Duration;

use super::file::FileConfig;
use super::xdp::Xdp;
use super::{invalid, pick, ConfigError, RunArgs, Src};

pub const DEFAULT_IO_BACKEND: &str = "auto";
pub const DEFAULT_IO_BATCH_WAIT_USECS: u64 = 0;
pub const DEFAULT_IO_GSO: bool = true;
pub const DEFAULT_IO_STREAMS: &str = "auto";
const MAX_IO_BATCH_WAIT_USECS: u64 = 10_000;

/// The `io_backend` setting.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IoBackendChoice {
    /// io_uring when the start-up probe finds it usable, else syscall.
    Auto,
    /// io_uring; start-up fails when it is unavailable.
    Uring,
    /// The portable epoll + recvmmsg/sendmmsg backend.
    Syscall,
}

impl IoBackendChoice {
    fn parse(s: &str) -> Option<IoBackendChoice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(IoBackendChoice::Auto),
            "uring" => Some(IoBackendChoice::Uring),
            "syscall" => Some(IoBackendChoice::Syscall),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IoBackendChoice::Auto => "auto",
            IoBackendChoice::Uring => "uring",
            IoBackendChoice::Syscall => "syscall",
        }
    }
}

/// The `io_streams` setting: how TCP and TLS are served on io_uring.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StreamIoChoice {
    /// On the ring when a start-up probe finds multishot accept and
    /// receive, else through epoll.
    Auto,
    /// On the ring; start-up fails when the kernel cannot.
    Native,
    /// Through an epoll instance polled from the ring.
    Epoll,
}

impl StreamIoChoice {
    fn parse(s: &str) -> Option<StreamIoChoice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(StreamIoChoice::Auto),
            "native" => Some(StreamIoChoice::Native),
            "epoll" => Some(StreamIoChoice::Epoll),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StreamIoChoice::Auto => "auto",
            StreamIoChoice::Native => "native",
            StreamIoChoice::Epoll => "epoll",
        }
    }
}

/// The io backend: kept as it is by a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Io {
    pub backend: IoBackendChoice,
    /// io_uring: how long a wait under load may hold datagrams to take
    /// several per wake-up (zero: wake for each).
    pub batch_wait: Duration,
    /// io_uring: send runs of same-size datagrams to one destination as
    /// one UDP GSO send.
    pub gso: bool,
    /// io_uring: TCP and TLS on the ring or through epoll.
    pub streams: StreamIoChoice,
    /// The XDP fast path.
    pub xdp: Xdp,
}

impl Io {
    pub(super) fn build(args: &RunArgs, f: &FileConfig) -> Result<Io, ConfigError> {
        let (backend_str, src) = pick(
            args.io_backend.clone(),
            "--io-backend",
            f.io_backend.clone(),
            "io_backend",
        )
        .unwrap_or_else(|| (DEFAULT_IO_BACKEND.to_string(), Src::File("io_backend")));
        let backend = IoBackendChoice::parse(&backend_str).ok_or_else(|| {
            invalid(
                src.key(),
                format!("{backend_str:?} is not one of uring, syscall, auto"),
            )
        })?;
        let (batch_us, src) = pick(
            args.io_batch_wait,
            "--io-batch-wait",
            f.io_batch_wait_usecs,
            "io_batch_wait_usecs",
        )
        .unwrap_or((
            DEFAULT_IO_BATCH_WAIT_USECS,
            Src::File("io_batch_wait_usecs"),
        ));
        if batch_us > MAX_IO_BATCH_WAIT_USECS {
            return Err(invalid(
                src.key(),
                format!("{batch_us} is more than {MAX_IO_BATCH_WAIT_USECS} microseconds"),
            ));
        }
        let (streams_str, src) = pick(
            args.io_streams.clone(),
            "--io-streams",
            f.io_streams.clone(),
            "io_streams",
        )
        .unwrap_or_else(|| (DEFAULT_IO_STREAMS.to_string(), Src::File("io_streams")));
        let streams = StreamIoChoice::parse(&streams_str).ok_or_else(|| {
            invalid(
                src.key(),
                format!("{streams_str:?} is not one of native, epoll, auto"),
            )
        })?;
        Ok(Io {
            backend,
            batch_wait: Duration::from_micros(batch_us),
            gso: args.io_gso.or(f.io_gso).unwrap_or(DEFAULT_IO_GSO),
            streams,
            xdp: Xdp::build(args, f)?,
        })
    }

    /// The keys whose value differs in `new`, named as in the file (every
    /// field is named in the pattern, so that a new one cannot be missed).
    pub fn changed_keys(&self, new: &Io) -> Vec<&'static str> {
        let Io {
            backend,
            batch_wait,
            gso,
            streams,
            xdp,
        } = self;
        let mut keys = Vec::new();
        if *backend != new.backend {
            keys.push("io_backend");
        }
        if *batch_wait != new.batch_wait {
            keys.push("io_batch_wait_usecs");
        }
        if *gso != new.gso {
            keys.push("io_gso");
        }
        if *streams != new.streams {
            keys.push("io_streams");
        }
        xdp.changed_keys(&new.xdp, &mut keys);
        keys
    }
}
