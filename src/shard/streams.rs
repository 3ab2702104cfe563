//! A shard's stream connections (TCP and TLS on the client leg).
//!
//! Three parts: `conn`, the connection logic itself, sans-IO (admission,
//! PROXY header, TLS, frames handed to the relay in place, the bounded send
//! queue, deadlines, metrics, the close); and two plumbings that carry its
//! bytes, each a thin loop over it:
//!
//! * `epoll`: the shard's TCP listeners and connections are watched by an
//!   epoll instance of their own (which the backend watches in turn: a
//!   nested epoll, or a poll from the io_uring), with non-blocking accept,
//!   read and write calls. The syscall backend's, and io_uring's when the
//!   kernel cannot do better.
//! * `ring`: the io_uring does it all: multishot accept on each listener,
//!   multishot receives into a buffer group of their own (frames are handed
//!   to the relay where they landed), one send in flight per connection
//!   from a buffer that stays put until it completes, and a close that waits
//!   for every request on the connection before its descriptor goes.
//!
//! A connection, its allocation and that allocation's relay socket all live
//! on the shard that accepted it. When the connection closes, for any
//! reason, its allocation is deleted (`Relay::connection_closed`).
//!
//! Limits: connections per node and per source (`ConnLedger`, shared), a
//! handshake deadline (TLS), a deadline for holding an allocation, and the
//! send queue per connection, beyond which frames to the client are dropped
//! and counted.

mod conn;
mod epoll;
mod ring;

pub(super) use conn::Remote;
pub(super) use epoll::EpollStreams;
pub(super) use ring::RingStreams;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::ServerConfig;

use crate::stream::ConnLedger;
use crate::turn::{RelaySockets, RelayToken, Transport};
use uturn_stun::framing::MAX_FRAME_LEN;

/// How often deadlines are checked.
const SWEEP: Duration = Duration::from_secs(1);

/// A stream listen socket and what its connections speak.
pub struct StreamListener {
    pub sock: TcpListener,
    pub tls: bool,
    /// Some: every connection starts with a PROXY v2 header, and only
    /// these source networks (the load balancers) may connect.
    pub proxy: Option<Arc<Vec<IpNet>>>,
}

/// Limits on one connection (restart-only).
#[derive(Clone, Debug)]
pub struct StreamLimits {
    /// A TLS connection must finish its handshake within this.
    pub handshake_timeout: Duration,
    /// A connection without an allocation is closed this long after it was
    /// accepted (or after its handshake, or after its allocation ended).
    pub auth_timeout: Duration,
    /// Bytes waiting for one client at most; beyond, frames are dropped.
    pub send_queue: usize,
    /// Connections on the node at most (what a shard must have room for).
    pub max_connections: usize,
    /// RFC 6062 pipes between plain TCP connections splice (`tcp.rs`).
    pub relay_splice: bool,
}

/// What a shard's stream side is built from.
pub struct StreamSpec {
    pub listeners: Vec<StreamListener>,
    pub limits: StreamLimits,
    pub ledger: Arc<ConnLedger>,
    /// The TLS configuration new connections start with (None: no TLS
    /// listener).
    pub tls: Option<Arc<ServerConfig>>,
}

impl StreamSpec {
    /// No stream listener.
    pub fn none() -> StreamSpec {
        StreamSpec {
            listeners: Vec::new(),
            limits: StreamLimits {
                handshake_timeout: Duration::from_secs(10),
                auth_timeout: Duration::from_secs(30),
                send_queue: MAX_FRAME_LEN,
                max_connections: 0,
                relay_splice: true,
            },
            ledger: Arc::new(ConnLedger::new(0, 0)),
            tls: None,
        }
    }
}

/// Why a connection closed (a metrics label each).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it (end of stream).
    ClientClosed,
    /// A read or write failed (reset, timeout of the kernel's own).
    Error,
    /// Bytes that are neither STUN nor ChannelData.
    InvalidFrame,
    /// A TLS alert, a bad record, a failed handshake.
    Tls,
    /// No valid PROXY v2 header where one was expected.
    Proxy,
    /// Over the per-source limit once the PROXY header named the source.
    SourceLimit,
    /// The TLS handshake took too long.
    HandshakeTimeout,
    /// No allocation in time.
    AuthTimeout,
    /// The server is stopping.
    Shutdown,
    /// A data connection (RFC 6062) sent more than `EARLY_DATA_LIMIT`
    /// bytes before its ConnectionBind answer went.
    EarlyData,
}

impl CloseReason {
    pub const ALL: [CloseReason; 10] = [
        CloseReason::ClientClosed,
        CloseReason::Error,
        CloseReason::InvalidFrame,
        CloseReason::Tls,
        CloseReason::Proxy,
        CloseReason::SourceLimit,
        CloseReason::HandshakeTimeout,
        CloseReason::AuthTimeout,
        CloseReason::Shutdown,
        CloseReason::EarlyData,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::Error => "error",
            CloseReason::InvalidFrame => "invalid_frame",
            CloseReason::Tls => "tls_error",
            CloseReason::Proxy => "proxy_header",
            CloseReason::SourceLimit => "limit_per_source",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::AuthTimeout => "auth_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::EarlyData => "data_before_bind_answer",
        }
    }
}

/// A shard's stream counters; `[0]` is TCP, `[1]` TLS.
#[derive(Clone, Debug, Default)]
pub struct StreamStats {
    pub accepted: [u64; 2],
    /// Refused at accept: over the node's limit, over the source's limit.
    pub refused_total: [u64; 2],
    pub refused_per_source: [u64; 2],
    /// Refused at accept on a PROXY listener: not from a trusted network.
    pub refused_untrusted: [u64; 2],
    /// Closed, by transport and `CloseReason` (in `CloseReason::ALL` order).
    pub closed: [[u64; CloseReason::ALL.len()]; 2],
    /// Open now.
    pub open: [u64; 2],
    pub tls_handshakes_ok: u64,
    pub tls_handshakes_failed: u64,
    /// Frames to clients dropped because their send queue was full.
    pub tx_queue_full: u64,
    /// Connections that became RFC 6062 data connections (bound by
    /// ConnectionBind and handed to the TCP relay).
    pub data_connections: [u64; 2],
    /// Frames from stream clients forwarded to peers, and those a relay
    /// socket refused.
    pub to_peer_sent: u64,
    pub to_peer_failed: u64,
}

/// The peer side a stream frame may need: the relay sockets (for the
/// relay's Allocate) and a way to send from one of them.
pub(super) trait PeerSockets: RelaySockets {
    /// Sends `bytes` to `to` from the relay socket of `token`. False when
    /// it could not (unknown socket, full buffer, error).
    fn send_to_peer(&mut self, token: RelayToken, to: SocketAddr, bytes: &[u8]) -> bool;
}

/// The transport label of stats index `t`.
pub fn transport_of(t: usize) -> Transport {
    if t == 0 {
        Transport::Tcp
    } else {
        Transport::Tls
    }
}
