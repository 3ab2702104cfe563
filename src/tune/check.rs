//! Comparing the host with a profile, and with what uturn itself needs.

use std::ops::RangeInclusive;

use super::profile::{number, Bound, Setting};
use super::sysctl::{FdLimit, Reading};
use crate::config::Config;
use crate::io::socket::LISTENER_RCVBUF;

/// Descriptors a worker holds besides its sockets: its epoll instance or
/// ring, its wake-up eventfd, and room for a relay socket or two still
/// closing (io_uring keeps one open until its last request completes).
pub const FDS_PER_WORKER: u64 = 4;
/// Descriptors the process holds besides its workers: standard streams,
/// the signal pipe, a configuration or secret file being read, with room
/// to spare.
pub const FDS_BASE: u64 = 64;

/// The verdict on one row.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// A `[min]` value (or one of its numbers) is below the profile's.
    Low,
    /// An `[exact]` value differs, or a value has the wrong shape.
    Different,
    /// The kernel lacks a key the profile needs.
    Absent,
    /// The kernel lacks a key the profile marks optional: not a fault.
    AbsentOptional,
    /// The key exists but could not be read.
    Unreadable,
    /// The ephemeral port range overlaps the relay port range.
    Overlap,
}

impl Status {
    /// Upper case for what counts as off, lower case for what does not.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Low => "LOW",
            Status::Different => "DIFFERENT",
            Status::Absent => "ABSENT",
            Status::AbsentOptional => "absent (optional)",
            Status::Unreadable => "UNREADABLE",
            Status::Overlap => "OVERLAP",
        }
    }

    pub fn is_off(self) -> bool {
        !matches!(self, Status::Ok | Status::AbsentOptional)
    }
}

/// One line of the `tune check` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub key: String,
    pub current: String,
    pub recommended: String,
    pub status: Status,
    /// Why the recommendation exists (the profile's reason).
    pub reason: String,
}

/// Compares values already split at whitespace.
pub fn compare_values(bound: Bound, want: &[String], have: &[String]) -> Status {
    if want.len() != have.len() {
        return Status::Different;
    }
    match bound {
        Bound::Exact => {
            let same = want
                .iter()
                .zip(have)
                .all(|(w, h)| match (number(w), number(h)) {
                    (Some(w), Some(h)) => w == h,
                    _ => w == h,
                });
            if same {
                Status::Ok
            } else {
                Status::Different
            }
        }
        Bound::Min => {
            let mut status = Status::Ok;
            for (w, h) in want.iter().zip(have) {
                match (number(w), number(h)) {
                    (Some(w), Some(h)) if h < w => status = Status::Low,
                    (Some(_), Some(_)) => {}
                    _ => return Status::Different,
                }
            }
            status
        }
    }
}

/// The verdict on one setting given what the host has.
pub fn compare(setting: &Setting, reading: &Reading) -> Status {
    match reading {
        Reading::Value(have) => compare_values(setting.bound, &setting.value, have),
        Reading::Absent if setting.optional => Status::AbsentOptional,
        Reading::Absent => Status::Absent,
        Reading::Unreadable(_) => Status::Unreadable,
    }
}

/// How the recommendation reads in the table.
pub fn recommended_text(setting: &Setting) -> String {
    match setting.bound {
        Bound::Min => format!(">= {}", setting.value_text()),
        Bound::Exact => setting.value_text(),
    }
}

/// The value that brings the host up to `setting` without lowering any
/// number it already has above a `[min]` recommendation.
pub fn raised(setting: &Setting, have: &[String]) -> Vec<String> {
    if setting.bound == Bound::Exact || have.len() != setting.value.len() {
        return setting.value.clone();
    }
    setting
        .value
        .iter()
        .zip(have)
        .map(|(w, h)| match (number(w), number(h)) {
            (Some(wn), Some(hn)) if hn > wn => h.clone(),
            _ => w.clone(),
        })
        .collect()
}

/// The table row of one setting.
pub fn setting_row(setting: &Setting, reading: &Reading) -> Row {
    Row {
        key: setting.key.clone(),
        current: reading.display(),
        recommended: recommended_text(setting),
        status: compare(setting, reading),
        reason: setting.reason.clone(),
    }
}

/// What the relay as configured needs from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayNeeds {
    pub ports: RangeInclusive<u16>,
    pub workers: usize,
    /// Listen addresses; every worker binds its own socket to each.
    pub listen: usize,
}

impl RelayNeeds {
    pub fn from_config(cfg: &Config) -> RelayNeeds {
        RelayNeeds {
            ports: cfg.network.relay_ports.clone(),
            workers: cfg.network.workers,
            listen: cfg.network.listen.len(),
        }
    }

    pub fn port_count(&self) -> u64 {
        u64::from(*self.ports.end()).saturating_sub(u64::from(*self.ports.start())) + 1
    }

    /// Open files the relay may hold at once: one socket per relay port
    /// (an allocation's IPv4 and IPv6 sockets take two ports of the same
    /// range), one listener per worker and listen address, and the
    /// overheads above.
    pub fn fds(&self) -> u64 {
        let workers = self.workers as u64;
        self.port_count() + workers * self.listen as u64 + workers * FDS_PER_WORKER + FDS_BASE
    }
}

/// The soft RLIMIT_NOFILE against what the relay may open.
pub fn fd_row(limit: FdLimit, needs: &RelayNeeds) -> Row {
    let need = needs.fds();
    let status = match limit {
        FdLimit::Unlimited => Status::Ok,
        FdLimit::Finite(n) if n >= need => Status::Ok,
        FdLimit::Finite(_) => Status::Low,
    };
    Row {
        key: "RLIMIT_NOFILE (soft)".to_string(),
        current: limit.display(),
        recommended: format!(">= {need}"),
        status,
        reason: format!(
            "{} relay ports + {} listener sockets + {} for the workers and the process; \
             raise LimitNOFILE= in uturn's systemd unit (or ulimit -n)",
            needs.port_count(),
            needs.workers * needs.listen,
            needs.workers as u64 * FDS_PER_WORKER + FDS_BASE
        ),
    }
}

/// Port ranges of `net.ipv4.ip_local_reserved_ports` ("1000,49152-65535";
/// empty for none). `None` when the text is not such a list.
pub fn reserved_ranges(value: &[String]) -> Option<Vec<RangeInclusive<u16>>> {
    let joined = value.concat();
    if joined.is_empty() {
        return Some(Vec::new());
    }
    joined
        .split(',')
        .map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a <= b).then_some(a..=b)
        })
        .collect()
}

/// `net.ipv4.ip_local_port_range` against the relay port range. Ports in
/// `net.ipv4.ip_local_reserved_ports` are never handed out as ephemeral
/// ports, so they do not count as shared.
pub fn overlap_row(local_range: &Reading, reserved: &Reading, needs: &RelayNeeds) -> Row {
    let (lo, hi) = (*needs.ports.start(), *needs.ports.end());
    let reserved = match reserved {
        Reading::Value(v) => reserved_ranges(v).unwrap_or_default(),
        _ => Vec::new(),
    };
    let (current, status) = match local_range {
        Reading::Value(v) => match v.iter().map(|s| number(s)).collect::<Vec<_>>()[..] {
            [Some(a), Some(b)] => {
                let shared = (lo..=hi).any(|p| {
                    (a..=b).contains(&i128::from(p)) && !reserved.iter().any(|r| r.contains(&p))
                });
                let status = if shared { Status::Overlap } else { Status::Ok };
                let mut current = format!("{a}-{b}");
                if !reserved.is_empty() && (a..=b).contains(&i128::from(lo)) {
                    current.push_str(" (some reserved)");
                }
                (current, status)
            }
            _ => (local_range.display(), Status::Different),
        },
        Reading::Absent => (local_range.display(), Status::Absent),
        Reading::Unreadable(_) => (local_range.display(), Status::Unreadable),
    };
    Row {
        key: "ip_local_port_range vs relay".to_string(),
        current,
        recommended: format!("outside {lo}-{hi}"),
        status,
        reason: "ephemeral ports the kernel hands out inside the relay range make \
                 relay binds fail (uturn retries elsewhere) and can run the range dry; \
                 move the range, or reserve the relay ports with \
                 net.ipv4.ip_local_reserved_ports"
            .to_string(),
    }
}

/// `net.core.rmem_max` against the listener buffer uturn asks for.
pub fn rcvbuf_row(rmem_max: &Reading) -> Row {
    let want = LISTENER_RCVBUF as i128;
    let status = match rmem_max {
        Reading::Value(v) => match v.iter().map(|s| number(s)).collect::<Vec<_>>()[..] {
            [Some(n)] if n >= want => Status::Ok,
            [Some(_)] => Status::Low,
            _ => Status::Different,
        },
        Reading::Absent => Status::Absent,
        Reading::Unreadable(_) => Status::Unreadable,
    };
    Row {
        key: "rmem_max vs listener buffer".to_string(),
        current: rmem_max.display(),
        recommended: format!(">= {want}"),
        status,
        reason: "uturn asks for a 4 MiB SO_RCVBUF on each listener and the kernel \
                 caps it at net.core.rmem_max"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn setting(bound: Bound, value: &str, optional: bool) -> Setting {
        Setting {
            key: "net.test.key".into(),
            value: v(value),
            bound,
            reason: "because".into(),
            optional,
            line: 1,
        }
    }

    #[test]
    fn min_compares_number_by_number() {
        let want = v("100 200 300");
        assert_eq!(
            compare_values(Bound::Min, &want, &v("100 200 300")),
            Status::Ok
        );
        assert_eq!(
            compare_values(Bound::Min, &want, &v("900 900 900")),
            Status::Ok
        );
        assert_eq!(
            compare_values(Bound::Min, &want, &v("900 199 900")),
            Status::Low
        );
        assert_eq!(
            compare_values(Bound::Min, &want, &v("99 200 300")),
            Status::Low
        );
        assert_eq!(
            compare_values(Bound::Min, &want, &v("100 200")),
            Status::Different
        );
        assert_eq!(
            compare_values(Bound::Min, &want, &v("100 x 300")),
            Status::Different
        );
        assert_eq!(
            compare_values(Bound::Min, &v("1048576"), &v("9223372036854775807")),
            Status::Ok
        );
        assert_eq!(compare_values(Bound::Min, &v("0"), &v("-1")), Status::Low);
    }

    #[test]
    fn exact_needs_the_same_values() {
        let want = v("32768 49151");
        assert_eq!(
            compare_values(Bound::Exact, &want, &v("32768 49151")),
            Status::Ok
        );
        assert_eq!(
            compare_values(Bound::Exact, &want, &v("32768 60999")),
            Status::Different
        );
        // Larger is not better for an exact value.
        assert_eq!(
            compare_values(Bound::Exact, &v("0"), &v("50")),
            Status::Different
        );
        assert_eq!(compare_values(Bound::Exact, &v("fq"), &v("fq")), Status::Ok);
        assert_eq!(
            compare_values(Bound::Exact, &v("fq"), &v("cake")),
            Status::Different
        );
    }

    #[test]
    fn absent_keys_count_unless_optional() {
        let needed = setting(Bound::Min, "1", false);
        let optional = setting(Bound::Min, "1", true);
        assert_eq!(compare(&needed, &Reading::Absent), Status::Absent);
        assert!(Status::Absent.is_off());
        assert_eq!(compare(&optional, &Reading::Absent), Status::AbsentOptional);
        assert!(!Status::AbsentOptional.is_off());
        let unreadable = Reading::Unreadable(std::io::ErrorKind::PermissionDenied);
        assert_eq!(compare(&optional, &unreadable), Status::Unreadable);
        assert!(Status::Unreadable.is_off());
        // An optional key that is present is compared like any other.
        assert_eq!(compare(&optional, &Reading::Value(v("0"))), Status::Low);
    }

    #[test]
    fn raising_never_lowers() {
        let s = setting(Bound::Min, "100 200 300", false);
        assert_eq!(raised(&s, &v("50 900 300")), v("100 900 300"));
        assert_eq!(raised(&s, &v("50")), v("100 200 300"));
        let e = setting(Bound::Exact, "32768 49151", false);
        assert_eq!(raised(&e, &v("32768 60999")), v("32768 49151"));
    }

    #[test]
    fn rows_show_current_recommended_and_status() {
        let s = setting(Bound::Min, "4194304", false);
        let row = setting_row(&s, &Reading::Value(v("212992")));
        assert_eq!(row.current, "212992");
        assert_eq!(row.recommended, ">= 4194304");
        assert_eq!(row.status, Status::Low);
        assert_eq!(row.reason, "because");
        let row = setting_row(&s, &Reading::Absent);
        assert_eq!((row.current.as_str(), row.status), ("-", Status::Absent));
    }

    #[test]
    fn fd_need_counts_ports_listeners_and_workers() {
        let needs = RelayNeeds {
            ports: 49152..=65535,
            workers: 2,
            listen: 1,
        };
        assert_eq!(needs.port_count(), 16384);
        assert_eq!(needs.fds(), 16384 + 2 + 2 * FDS_PER_WORKER + FDS_BASE);
        assert_eq!(fd_row(FdLimit::Finite(1024), &needs).status, Status::Low);
        assert_eq!(
            fd_row(FdLimit::Finite(needs.fds()), &needs).status,
            Status::Ok
        );
        assert_eq!(fd_row(FdLimit::Unlimited, &needs).status, Status::Ok);
        let one = RelayNeeds {
            ports: 5000..=5000,
            workers: 1,
            listen: 2,
        };
        assert_eq!(one.fds(), 1 + 2 + FDS_PER_WORKER + FDS_BASE);
    }

    #[test]
    fn overlap_is_any_shared_port() {
        let needs = RelayNeeds {
            ports: 49152..=65535,
            workers: 1,
            listen: 1,
        };
        let none = Reading::Value(Vec::new());
        let row = |s: &str| overlap_row(&Reading::Value(v(s)), &none, &needs);
        assert_eq!(row("32768 60999").status, Status::Overlap);
        assert_eq!(row("32768 60999").current, "32768-60999");
        assert_eq!(row("32768 49151").status, Status::Ok);
        assert_eq!(row("32768 49152").status, Status::Overlap);
        assert_eq!(row("60000 61000").status, Status::Overlap);
        assert_eq!(row("1024 2048").status, Status::Ok);
        assert_eq!(row("32768").status, Status::Different);
        assert_eq!(
            overlap_row(&Reading::Absent, &none, &needs).status,
            Status::Absent
        );
        let low = RelayNeeds {
            ports: 10000..=10999,
            workers: 1,
            listen: 1,
        };
        let r = overlap_row(&Reading::Value(v("32768 60999")), &none, &low);
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.recommended, "outside 10000-10999");
    }

    #[test]
    fn reserved_ports_do_not_count_as_shared() {
        let needs = RelayNeeds {
            ports: 49152..=65535,
            workers: 1,
            listen: 1,
        };
        let local = Reading::Value(v("32768 60999"));
        let row = |reserved: &str| overlap_row(&local, &Reading::Value(v(reserved)), &needs);
        assert_eq!(row("49152-65535").status, Status::Ok);
        assert_eq!(row("49152-65535").current, "32768-60999 (some reserved)");
        assert_eq!(row("3478,49152-60999").status, Status::Ok);
        // One port of the shared part left unreserved is enough to collide.
        assert_eq!(row("49152-60998").status, Status::Overlap);
        assert_eq!(row("").status, Status::Overlap);
        assert_eq!(row("junk").status, Status::Overlap);
        assert_eq!(
            reserved_ranges(&v("1000,2000-2010")),
            Some(vec![1000..=1000, 2000..=2010])
        );
        assert_eq!(reserved_ranges(&v("")), Some(vec![]));
        assert_eq!(reserved_ranges(&v("9-1")), None);
        assert_eq!(reserved_ranges(&v("70000")), None);
    }

    #[test]
    fn listener_buffer_needs_rmem_max() {
        let row = |s: &str| rcvbuf_row(&Reading::Value(v(s))).status;
        assert_eq!(row("212992"), Status::Low);
        assert_eq!(row(&LISTENER_RCVBUF.to_string()), Status::Ok);
        assert_eq!(row("33554432"), Status::Ok);
        assert_eq!(row("many"), Status::Different);
    }
}
