//! Which of a turn's sends travel together as one UDP GSO send: pure
//! bookkeeping over sizes and destinations, with no memory or kernel in it,
//! so that every rule is tested here without a ring.
//!
//! The sends of a turn are planned in the order they were queued. Each one
//! either joins a recent run (same socket, same destination, no larger than
//! the run's segment size, room left) or leads a run of its own. The rules
//! the kernel and the receivers need:
//!
//! * every segment but the last has the run's segment size (the first
//!   datagram's); a shorter datagram joins as the last one and closes it;
//! * a datagram never overtakes an earlier one to the same destination: a
//!   datagram that leads a new run closes the runs to its destination;
//! * a run holds at most `MAX_SEGMENTS` datagrams and `GSO_MAX_BYTES` bytes;
//! * datagrams above `GSO_MAX_SEGMENT` bytes (and empty ones) go alone.

use std::net::SocketAddr;

use super::mem::MAX_SEGMENTS;

/// Largest datagram merged into a GSO send. The kernel refuses a GSO send
/// whose segments do not fit the route's MTU (where a lone datagram would
/// be fragmented), so merging stops at what fits IPv6's minimum MTU, 1280
/// bytes less the IPv6 and UDP headers: every path that carries IPv6, and
/// IPv4 paths down to 1260. WebRTC keeps its packets at 1200 bytes or less,
/// so media merges; larger datagrams leave one by one.
pub(super) const GSO_MAX_SEGMENT: usize = 1232;
/// Largest GSO send, in bytes (a UDP datagram's limit, before splitting).
pub(super) const GSO_MAX_BYTES: usize = 65_000;
/// How many recent sends a new one may join (a short look-back keeps the
/// plan linear in the turn's sends).
pub(super) const GSO_LOOKBACK: usize = 8;

/// One send of the turn, as the planner sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct Send {
    /// The send slot that holds it.
    pub slot: u32,
    /// The registered file (socket) it leaves from.
    pub file: u32,
    pub dest: SocketAddr,
    pub len: usize,
}

/// A run a send may join: the slot of its first datagram (which carries the
/// GSO header) and its segment size.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct Join {
    pub lead: u32,
    pub segment: usize,
    run: usize,
}

/// A run of this turn that later sends may still join.
#[derive(Copy, Clone, Debug)]
struct Run {
    lead: u32,
    file: u32,
    dest: SocketAddr,
    segment: usize,
    count: usize,
    bytes: usize,
    closed: bool,
}

impl Run {
    const CLOSED: Run = Run {
        lead: 0,
        file: 0,
        dest: SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::UNSPECIFIED,
            0,
        )),
        segment: 0,
        count: 0,
        bytes: 0,
        closed: true,
    };
}

/// The plan of one turn. Use: for each send in order, [`Planner::join`];
/// when it offers a run and the caller could append the datagram there,
/// [`Planner::joined`]; otherwise (no run, or the append failed:
/// [`Planner::refused`]) [`Planner::lead`].
pub(super) struct Planner {
    open: [Run; GSO_LOOKBACK],
    leads: usize,
}

impl Planner {
    pub(super) fn new() -> Planner {
        Planner {
            open: [Run::CLOSED; GSO_LOOKBACK],
            leads: 0,
        }
    }

    /// A recent run `send` fits in, if any.
    pub(super) fn join(&self, send: &Send) -> Option<Join> {
        self.open
            .iter()
            .position(|r| {
                !r.closed
                    && r.file == send.file
                    && r.dest == send.dest
                    && send.len > 0
                    && send.len <= r.segment
                    && r.count < MAX_SEGMENTS
                    && r.bytes + send.len <= GSO_MAX_BYTES
            })
            .map(|run| Join {
                lead: self.open[run].lead,
                segment: self.open[run].segment,
                run,
            })
    }

    /// `send` was appended to the run `join` offered.
    pub(super) fn joined(&mut self, join: Join, send: &Send) {
        let run = &mut self.open[join.run];
        run.count += 1;
        run.bytes += send.len;
        // Only the last datagram of a GSO send may be shorter.
        run.closed = send.len < run.segment;
    }

    /// The run `join` offered could not take the datagram after all: no
    /// later send joins it.
    pub(super) fn refused(&mut self, join: Join) {
        self.open[join.run].closed = true;
    }

    /// `send` leaves as the first datagram of a run of its own.
    pub(super) fn lead(&mut self, send: &Send) {
        // A later datagram to this destination must not join a run that
        // leaves before this one: close them, so that order is kept.
        for r in self.open.iter_mut() {
            if r.file == send.file && r.dest == send.dest {
                r.closed = true;
            }
        }
        self.open[self.leads % GSO_LOOKBACK] = Run {
            lead: send.slot,
            file: send.file,
            dest: send.dest,
            segment: send.len,
            count: 1,
            bytes: send.len,
            closed: send.len == 0 || send.len > GSO_MAX_SEGMENT,
        };
        self.leads += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plans `sends` (file, destination port, length) and returns the runs
    /// as lists of send indexes, in the order they leave.
    fn plan(sends: &[(u32, u16, usize)]) -> Vec<Vec<u32>> {
        let mut p = Planner::new();
        let mut runs: Vec<Vec<u32>> = Vec::new();
        for (i, &(file, port, len)) in sends.iter().enumerate() {
            let s = Send {
                slot: i as u32,
                file,
                dest: SocketAddr::from(([198, 51, 100, 7], port)),
                len,
            };
            match p.join(&s) {
                Some(j) => {
                    p.joined(j, &s);
                    runs.iter_mut()
                        .find(|r| r[0] == j.lead)
                        .expect("a run's lead was planned")
                        .push(s.slot);
                }
                None => {
                    p.lead(&s);
                    runs.push(vec![s.slot]);
                }
            }
        }
        runs
    }

    #[test]
    fn equal_sends_to_one_destination_leave_together() {
        assert_eq!(
            plan(&[(0, 1, 100), (0, 1, 100), (0, 1, 100)]),
            [vec![0, 1, 2]]
        );
    }

    #[test]
    fn a_shorter_send_joins_as_the_last_and_a_longer_one_leads() {
        assert_eq!(
            plan(&[(0, 1, 100), (0, 1, 60), (0, 1, 100), (0, 1, 120)]),
            [vec![0, 1], vec![2], vec![3]]
        );
    }

    #[test]
    fn sockets_and_destinations_are_not_mixed() {
        assert_eq!(
            plan(&[
                (0, 1, 100),
                (1, 1, 100),
                (0, 2, 100),
                (0, 1, 100),
                (1, 1, 100)
            ]),
            [vec![0, 3], vec![1, 4], vec![2]]
        );
    }

    #[test]
    fn no_datagram_overtakes_an_earlier_one_to_its_destination() {
        // 1 leads a run after 0's; 2 (as long as 0) must not join 0's run,
        // which leaves before 1.
        assert_eq!(
            plan(&[(0, 1, 100), (0, 1, 200), (0, 1, 100)]),
            [vec![0], vec![1, 2]]
        );
    }

    #[test]
    fn large_and_empty_datagrams_go_alone() {
        let big = GSO_MAX_SEGMENT + 1;
        assert_eq!(
            plan(&[(0, 1, big), (0, 1, big), (0, 1, 0), (0, 1, 0)]),
            [vec![0], vec![1], vec![2], vec![3]]
        );
        assert_eq!(
            plan(&[(0, 1, GSO_MAX_SEGMENT), (0, 1, GSO_MAX_SEGMENT)]),
            [vec![0, 1]]
        );
    }

    #[test]
    fn a_run_stops_at_its_segment_limit() {
        let many = vec![(0, 1, 100); MAX_SEGMENTS + 1];
        let runs = plan(&many);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].len(), MAX_SEGMENTS);

        // With today's limits the segment count binds first: a full run of
        // the largest segments stays under the byte limit.
        const { assert!(MAX_SEGMENTS * GSO_MAX_SEGMENT <= GSO_MAX_BYTES) };
        let runs = plan(&vec![(0, 1, GSO_MAX_SEGMENT); MAX_SEGMENTS]);
        assert_eq!(runs.len(), 1);
    }

    #[test]
    fn only_recent_runs_are_joined() {
        // Nine destinations in a row push the first run out of the look-back.
        let mut sends: Vec<(u32, u16, usize)> = (1..=9).map(|port| (0, port, 100)).collect();
        sends.push((0, 1, 100));
        sends.push((0, 9, 100));
        let runs = plan(&sends);
        assert_eq!(runs.len(), 10, "{runs:?}");
        assert_eq!(runs[8], [8, 10]);
        assert_eq!(runs[9], [9]);
    }

    #[test]
    fn a_refused_run_takes_no_more() {
        let mut p = Planner::new();
        let s = |slot| Send {
            slot,
            file: 0,
            dest: SocketAddr::from(([198, 51, 100, 7], 1)),
            len: 100,
        };
        p.lead(&s(0));
        let j = p.join(&s(1)).expect("fits");
        p.refused(j);
        assert_eq!(p.join(&s(1)), None);
    }
}
