//! What the state machine asks its caller to send: one [`Transmit`] per
//! datagram at most, in the caller's buffers, for both directions.

use std::net::SocketAddr;
use std::ops::Range;

use super::{ConnId, ListenerId, RelayToken};

/// A datagram to send: the one output of the state machine, for both
/// directions, with its bytes in the caller's buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The socket it leaves from.
    pub via: Via,
    pub to: SocketAddr,
    pub payload: Payload,
}

/// The socket a [`Transmit`] leaves from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// The UDP listener the client's datagrams arrive on (its 5-tuple).
    Listener(ListenerId),
    /// The client's TCP or TLS connection: the payload is one whole frame,
    /// ChannelData already padded.
    Stream(ConnId),
    /// The client's DTLS session: the payload is one whole message
    /// (ChannelData unpadded), to encrypt as one record.
    Dtls(ConnId),
    /// One of an allocation's relay sockets.
    Relay(RelayToken),
}

/// Where the bytes of a [`Transmit`] are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// This range of the receive buffer the datagram came in (headroom
    /// included): forwarded without a copy.
    Rx(Range<usize>),
    /// The first `n` bytes of the scratch area (an answer).
    Reply(usize),
}

/// What the control and fast paths decide for a client datagram, relative
/// to that datagram; `handle_client` turns it into a [`Transmit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Nothing to send (dropped and counted, or an indication consumed).
    Nothing,
    /// Send `scratch[..n]` back to the client through the same listener.
    Reply(usize),
    /// Send `pkt[payload]` to `peer` from the relay socket `relay`.
    ToPeer {
        relay: RelayToken,
        peer: SocketAddr,
        payload: Range<usize>,
    },
}
