//! Receives: completions of the multishot `recvmsg` on every socket, the
//! source address and length read from each filled buffer, and each
//! datagram lent out once for processing.

use std::io;
use std::net::SocketAddr;

use io_uring::cqueue;

use super::ctl::SlotState;
use super::{Datagram, Pending, SockId, Uring, RECVMSG_OUT_LEN};
use crate::addr::{read_sockaddr, zeroed_storage};

impl Uring {
    /// Datagram `i` of the last `wait`, once; `None` when its socket has
    /// been closed since (counted) or `i` is out of range.
    pub fn datagram(&mut self, i: usize) -> Option<Datagram<'_>> {
        let p = self.batch.get_mut(i)?;
        if p.taken {
            return None;
        }
        p.taken = true;
        if self.ctl.files[p.sock as usize].state != SlotState::Open {
            self.ctl.stats.rx_after_close += 1;
            return None;
        }
        p.tx = self.tx.reserve();
        let p = *p;
        Some(Datagram {
            sock: SockId(p.sock),
            tag: p.tag,
            from: p.from,
            len: p.len,
            buf: self.rx.buf_mut(p.bid),
            scratch: self.tx.reply_mut(p.tx),
            ctl: &mut self.ctl,
        })
    }

    pub(super) fn on_recv(&mut self, slot: u32, res: i32, flags: u32) {
        let Some(f) = self.ctl.files.get_mut(slot as usize) else {
            self.ctl.stats.ring_errors += 1;
            return;
        };
        let open = f.state == SlotState::Open;
        let (tag, name_len) = (f.tag, self.headroom - RECVMSG_OUT_LEN);
        if !cqueue::more(flags) {
            // The multishot receive ended: re-armed at the end of the turn
            // (once buffers are back, for ENOBUFS), unless closing.
            f.armed = false;
            if open {
                self.ctl.want_rearm(slot);
            }
        }
        if res < 0 {
            let stats = &mut self.ctl.stats;
            match -res {
                libc::ENOBUFS => stats.rx_no_buffers += 1,
                libc::ECANCELED => stats.rx_cancelled += 1,
                _ => stats.rx_errors += 1,
            }
            tracing::debug!(slot, error = %io::Error::from_raw_os_error(-res), "receive completion failed");
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            self.ctl.stats.rx_errors += 1;
            tracing::debug!(slot, res, "receive completion without a buffer");
            return;
        };
        if !self.rx.delivered(bid) {
            self.ctl.stats.rx_errors += 1;
            tracing::debug!(
                slot,
                bid,
                "receive completion names a buffer not in the ring"
            );
            return;
        }
        let stats = &mut self.ctl.stats;
        stats.rx_datagrams += 1;
        let (from, len) = match parse_recv(self.rx.buf(bid), name_len, self.capacity) {
            Ok(v) => v,
            Err(drop) => {
                match drop {
                    RxDrop::Truncated => stats.rx_truncated += 1,
                    RxDrop::BadSource => stats.rx_bad_source += 1,
                }
                self.rx.release(bid);
                return;
            }
        };
        stats.rx_bytes += len as u64;
        if !open {
            stats.rx_after_close += 1;
            self.rx.release(bid);
            return;
        }
        self.batch.push(Pending {
            sock: slot,
            tag,
            from,
            bid,
            len,
            taken: false,
            tx: None,
        });
    }
}

enum RxDrop {
    Truncated,
    BadSource,
}

/// Reads the `io_uring_recvmsg_out` header and the source address at the
/// start of a filled buffer; returns the source and the payload length.
fn parse_recv(buf: &[u8], name_len: usize, capacity: usize) -> Result<(SocketAddr, usize), RxDrop> {
    let word = |i: usize| {
        buf.get(i * 4..i * 4 + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    };
    // struct io_uring_recvmsg_out { namelen, controllen, payloadlen, flags }
    let (namelen, payloadlen, flags) = (word(0) as usize, word(2) as usize, word(3));
    if flags & libc::MSG_TRUNC as u32 != 0 || payloadlen > capacity {
        return Err(RxDrop::Truncated);
    }
    if namelen > name_len {
        return Err(RxDrop::BadSource);
    }
    let name = buf
        .get(RECVMSG_OUT_LEN..RECVMSG_OUT_LEN + namelen)
        .ok_or(RxDrop::BadSource)?;
    let mut storage = zeroed_storage();
    // SAFETY: `name` holds at most `name_len` <= sizeof(sockaddr_storage)
    // bytes (checked above and in `UringConfig::check`); they are copied to
    // the start of a local `sockaddr_storage`, for which any bytes are valid.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            name.len(),
        );
    }
    let from = read_sockaddr(&storage, namelen as libc::socklen_t).ok_or(RxDrop::BadSource)?;
    Ok((from, payloadlen))
}
