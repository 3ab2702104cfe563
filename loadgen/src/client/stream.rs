//! A client's TCP or TLS connection to the server: STUN and ChannelData
//! messages back to back (RFC 8489 §6.2.2), split with `uturn_stun::next_frame`.
//!
//! The socket is non-blocking. Reading takes one `read` of up to
//! [`READ_LEN`] bytes into the caller's [`Scratch`], behind the incomplete
//! frame the connection kept from last time; every whole frame is handed
//! back in one slice and the new incomplete tail is kept again, so a
//! connection holds at most one partial frame between reads. Over TLS the
//! ciphertext is read the same way and fed to rustls, and the plaintext
//! takes the place of the bytes read.
//!
//! Writing never blocks either. Over TCP the bytes the kernel does not take
//! wait in the connection (`unsent`) and go first next time; over TLS
//! rustls keeps the records the kernel did not take. The relay scenario's
//! senders use [`Stream::send_burst`], which refuses a burst while anything
//! still waits, like a full UDP socket refuses datagrams.
//!
//! A connection is shared by a sender thread (writes) and a receiver thread
//! (reads) in the relay scenario: `tx` (the TLS session and the unsent
//! bytes) and `rx` (the incomplete frame) are separate locks, taken in the
//! order rx, tx, and never held while a frame is handled.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustls::ClientConnection;
use uturn_stun::framing::MAX_FRAME_LEN;
use uturn_stun::{next_frame, FrameKind, Framing, InvalidStream};

use super::tls::TlsInfo;

/// Bytes asked of the kernel per `read`.
pub const READ_LEN: usize = 64 * 1024;

/// Why a connection cannot be used any more.
#[derive(Debug)]
pub enum StreamError {
    /// The server closed the connection.
    Closed,
    /// A socket error.
    Io(io::Error),
    /// The TLS session failed (handshake or record layer).
    Tls(rustls::Error),
    /// The bytes are not STUN or ChannelData frames.
    Framing(InvalidStream),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Closed => write!(f, "the server closed the connection"),
            StreamError::Io(e) => write!(f, "socket error: {e}"),
            StreamError::Tls(e) => write!(f, "TLS error: {e}"),
            StreamError::Framing(e) => write!(f, "the stream is not TURN framing ({e:?})"),
        }
    }
}

/// A reader's buffers, shared by all the connections one thread reads;
/// allocated once.
pub struct Scratch {
    /// Ciphertext just read (TLS only).
    cipher: Vec<u8>,
    /// The connection's incomplete frame, then the bytes (or plaintext)
    /// read: room for the longest incomplete frame and a whole read.
    plain: Vec<u8>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            cipher: vec![0; READ_LEN],
            plain: vec![0; MAX_FRAME_LEN + READ_LEN + TLS_SLACK],
        }
    }
}

/// Plaintext of a TLS record begun in an earlier read may come out with
/// this one: room for one more record (and a little).
const TLS_SLACK: usize = 20 * 1024;

/// What goes out.
struct Tx {
    /// The TLS session (it keeps the records the socket did not take).
    tls: Option<ClientConnection>,
    /// TCP: bytes the socket did not take yet, sent before anything new.
    unsent: Vec<u8>,
}

/// One client's connection to the server.
pub struct Stream {
    sock: TcpStream,
    tls: bool,
    tx: Mutex<Tx>,
    /// The incomplete frame at the end of what was read so far.
    rx: Mutex<Vec<u8>>,
}

/// A lock whose holder panicked still guards consistent bytes here: every
/// update is a whole `extend` or `drain`.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Would-block and interrupted: try again later.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl Stream {
    /// A connection over `sock` (non-blocking, connected or connecting),
    /// TLS when `tls` is given (its ClientHello goes out with the first flush).
    pub fn new(sock: TcpStream, tls: Option<ClientConnection>) -> Stream {
        Stream {
            sock,
            tls: tls.is_some(),
            tx: Mutex::new(Tx {
                tls,
                unsent: Vec::new(),
            }),
            rx: Mutex::new(Vec::new()),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Caps the kernel's send buffer of the connection at about `bytes`
    /// (the kernel doubles the value and keeps a minimum), turning off its
    /// autotuning.
    pub fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        socket2::SockRef::from(&self.sock).set_send_buffer_size(bytes)
    }

    /// The negotiated TLS version, cipher suite and ALPN, once the
    /// handshake is done.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        lock(&self.tx).tls.as_ref().and_then(TlsInfo::of)
    }

    /// Adds `bytes` (whole frames) behind anything still waiting and sends
    /// what the socket takes. `Ok(false)`: some bytes wait for [`flush`](Self::flush).
    pub fn queue(&self, bytes: &[u8]) -> io::Result<bool> {
        let mut guard = lock(&self.tx);
        let tx = &mut *guard;
        match tx.tls.as_mut() {
            // Before the handshake is done rustls keeps the plaintext and
            // sends it when it can.
            Some(tls) => tls.writer().write_all(bytes)?,
            None if tx.unsent.is_empty() => {
                let n = write_some(&self.sock, bytes)?;
                tx.unsent.extend_from_slice(&bytes[n..]);
            }
            None => tx.unsent.extend_from_slice(bytes),
        }
        flush_tx(&self.sock, tx)
    }

    /// Sends what waits. `Ok(true)`: nothing waits any more.
    pub fn flush(&self) -> io::Result<bool> {
        flush_tx(&self.sock, &mut lock(&self.tx))
    }

    /// The relay's send path: `frames` is whole frames of `frame_len` bytes
    /// each. If bytes of an earlier burst still wait after a flush, the
    /// burst is refused (0). Otherwise over TCP the frames the kernel takes
    /// count, the rest of a frame it took in part waits in the connection
    /// and the frames it did not touch are dropped; over TLS the burst is
    /// encrypted whole and every frame counts (rustls keeps what the kernel
    /// did not take). Returns the frames taken.
    pub fn send_burst(&self, frames: &[u8], frame_len: usize) -> io::Result<usize> {
        let mut tx = lock(&self.tx);
        if !flush_tx(&self.sock, &mut tx)? {
            return Ok(0);
        }
        let count = frames.len() / frame_len.max(1);
        match tx.tls.as_mut() {
            Some(tls) => {
                tls.writer().write_all(frames)?;
                flush_tx(&self.sock, &mut tx)?;
                Ok(count)
            }
            None => {
                let n = write_some(&self.sock, frames)?;
                let taken = n.div_ceil(frame_len.max(1));
                tx.unsent
                    .extend_from_slice(&frames[n..(taken * frame_len).min(frames.len())]);
                Ok(taken)
            }
        }
    }

    /// Reads once from the socket; returns the whole frames read (possibly
    /// none), back to back, in `scratch`. The frame the read ended inside
    /// is kept for next time.
    pub fn read<'s>(&self, scratch: &'s mut Scratch) -> Result<&'s [u8], StreamError> {
        let mut tail = lock(&self.rx);
        let kept = tail.len();
        scratch.plain[..kept].copy_from_slice(&tail);
        let end = if self.tls {
            let n = read_some(&self.sock, &mut scratch.cipher)?;
            if n == 0 {
                return Ok(&[]);
            }
            let mut tx = lock(&self.tx);
            let Some(tls) = tx.tls.as_mut() else {
                return Err(StreamError::Io(io::Error::other("no TLS session")));
            };
            let (end, closed) = decrypt(tls, &scratch.cipher[..n], &mut scratch.plain, kept)?;
            if closed && end == kept {
                return Err(StreamError::Closed);
            }
            end
        } else {
            kept + read_some(&self.sock, &mut scratch.plain[kept..kept + READ_LEN])?
        };
        let plain = &scratch.plain[..end];
        let whole = whole_frames(plain).map_err(StreamError::Framing)?;
        tail.clear();
        tail.extend_from_slice(&plain[whole..]);
        Ok(&scratch.plain[..whole])
    }

    /// Best effort on the way out: a TLS close_notify, sent if the socket
    /// takes it now.
    pub fn close(&self) {
        let mut tx = lock(&self.tx);
        if let Some(tls) = tx.tls.as_mut() {
            tls.send_close_notify();
            let _ = flush_tx(&self.sock, &mut tx);
        }
    }
}

/// One `read`: the bytes read, 0 when there is nothing now.
fn read_some(sock: &TcpStream, buf: &mut [u8]) -> Result<usize, StreamError> {
    match (&*sock).read(buf) {
        Ok(0) => Err(StreamError::Closed),
        Ok(n) => Ok(n),
        Err(e) if transient(&e) => Ok(0),
        Err(e) => Err(StreamError::Io(e)),
    }
}

/// Feeds `cipher` to the session and writes the plaintext into `plain`
/// from `end` on (growing it if ever needed); returns the new end and
/// whether the server sent close_notify.
fn decrypt(
    tls: &mut ClientConnection,
    mut cipher: &[u8],
    plain: &mut Vec<u8>,
    mut end: usize,
) -> Result<(usize, bool), StreamError> {
    while !cipher.is_empty() {
        // rustls takes a slice in steps of 4 KiB or more.
        tls.read_tls(&mut cipher).map_err(StreamError::Io)?;
        tls.process_new_packets().map_err(StreamError::Tls)?;
        loop {
            if plain.len() - end < TLS_SLACK {
                plain.resize(plain.len() + READ_LEN, 0);
            }
            match tls.reader().read(&mut plain[end..]) {
                Ok(0) => return Ok((end, true)),
                Ok(k) => end += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(StreamError::Io(e)),
            }
        }
    }
    Ok((end, false))
}

/// Writes what the socket takes now; 0 when it takes nothing.
fn write_some(sock: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    if bytes.is_empty() {
        return Ok(0);
    }
    match (&*sock).write(bytes) {
        Ok(n) => Ok(n),
        Err(e) if transient(&e) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Sends what waits in `tx`; true when nothing waits any more.
fn flush_tx(sock: &TcpStream, tx: &mut Tx) -> io::Result<bool> {
    match tx.tls.as_mut() {
        Some(tls) => {
            while tls.wants_write() {
                match tls.write_tls(&mut &*sock) {
                    Ok(_) => {}
                    Err(e) if transient(&e) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            Ok(true)
        }
        None => {
            let n = write_some(sock, &tx.unsent)?;
            tx.unsent.drain(..n);
            Ok(tx.unsent.is_empty())
        }
    }
}

/// The length of the longest prefix of `buf` made of whole frames.
pub fn whole_frames(buf: &[u8]) -> Result<usize, InvalidStream> {
    let mut at = 0;
    loop {
        match next_frame(&buf[at..]) {
            Framing::Complete { len, .. } => at += len,
            Framing::Incomplete { .. } => return Ok(at),
            Framing::Invalid(e) => return Err(e),
        }
    }
}

/// The frames of `buf`, which holds whole frames back to back (as
/// [`Stream::read`] returns them).
pub fn frames(mut buf: &[u8]) -> impl Iterator<Item = (FrameKind, &[u8])> {
    std::iter::from_fn(move || match next_frame(buf) {
        Framing::Complete { kind, len } => {
            let (frame, rest) = buf.split_at_checked(len)?;
            buf = rest;
            Some((kind, frame))
        }
        Framing::Incomplete { .. } | Framing::Invalid(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    /// A connected pair: our non-blocking stream and the server's end.
    fn pair() -> (Stream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_nonblocking(true).unwrap();
        let (s, _) = l.accept().unwrap();
        (Stream::new(c, None), s)
    }

    /// Reads until `want` bytes of whole frames came back (bounded).
    fn read_all(s: &Stream, want: usize) -> Vec<u8> {
        let mut scratch = Scratch::new();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < deadline {
            got.extend_from_slice(s.read(&mut scratch).unwrap());
        }
        got
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let (s, mut server) = pair();
        // A ChannelData frame (5 bytes of payload, padded to 8), a STUN
        // header-only message, another ChannelData; written in odd pieces.
        let mut wire = vec![0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        wire.extend_from_slice(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
        wire.extend_from_slice(&[7; 12]);
        wire.extend_from_slice(&[0x4F, 0xFF, 0x00, 0x04, 9, 9, 9, 9]);
        let mut scratch = Scratch::new();
        let mut got = Vec::new();
        for piece in wire.chunks(3) {
            server.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            got.extend_from_slice(s.read(&mut scratch).unwrap());
        }
        got.extend(read_all(&s, wire.len() - got.len()));
        assert_eq!(got, wire);
        let kinds: Vec<(FrameKind, usize)> = frames(&got).map(|(k, f)| (k, f.len())).collect();
        assert_eq!(
            kinds,
            [
                (FrameKind::ChannelData, 12),
                (FrameKind::Stun, 20),
                (FrameKind::ChannelData, 8)
            ]
        );
    }

    #[test]
    fn closed_and_invalid_streams_are_errors() {
        let (s, mut server) = pair();
        server.write_all(&[0x80, 0, 0, 0]).unwrap();
        let mut scratch = Scratch::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match s.read(&mut scratch) {
                Ok(b) if b.is_empty() && Instant::now() < deadline => continue,
                Ok(b) => panic!("frames from garbage: {b:?}"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, StreamError::Framing(InvalidStream::NotTurn)));
        let (s, server) = pair();
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match s.read(&mut scratch) {
                Ok(_) if Instant::now() < deadline => continue,
                Ok(_) => panic!("no EOF"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, StreamError::Closed), "{err}");
    }

    #[test]
    fn a_burst_the_socket_takes_in_part_keeps_only_whole_frames() {
        let (s, mut server) = pair();
        let frame = [0x40u8, 0x00, 0x00, 0x7C]
            .into_iter()
            .chain(std::iter::repeat_n(0xAB, 124))
            .collect::<Vec<u8>>();
        let burst: Vec<u8> = frame.repeat(64);
        // Fill the socket until a burst is refused.
        let mut taken = 0;
        let mut refused = false;
        for _ in 0..100_000 {
            let n = s.send_burst(&burst, frame.len()).unwrap();
            taken += n;
            if n == 0 {
                refused = true;
                break;
            }
        }
        assert!(refused, "the socket never filled up");
        // Everything taken arrives as whole frames, nothing else.
        let want = taken * frame.len();
        let mut got = Vec::new();
        let mut buf = vec![0u8; READ_LEN];
        server
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            s.flush().unwrap();
            match server.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) if got.len() >= want && s.flush().unwrap() => break,
                Err(_) => {}
            }
        }
        assert_eq!(got.len(), want);
        assert!(frames(&got).all(|(_, f)| f == frame));
    }
}
