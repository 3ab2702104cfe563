//! The system calls the generator and the floor need beyond `std`, behind
//! small safe wrappers: clocks and CPU time, the descriptor limit, the timer
//! slack, CPU pinning (of this thread, or of a child before it executes),
//! the stop signals, signalling a child and one socket option; in the
//! submodules, socket addresses in the kernel's form ([`addr`]), epoll
//! ([`epoll`]), `recvmmsg`/`sendmmsg` batches and `UDP_SEGMENT` ([`mmsg`]),
//! and the floor's forwarding batch, whose sends point into what it received
//! ([`forward`]).
//!
//! This is the only module of the generator with `unsafe` code. Every pointer
//! handed to the kernel points into memory owned by the wrapper (or borrowed
//! for the call) and is rebuilt from `&mut self` right before the call, so no
//! safe caller can move or free it while the kernel uses it.
#![allow(unsafe_code)]

mod addr;
mod epoll;
mod forward;
mod mmsg;

use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

pub use addr::RawAddr;
pub use epoll::Epoll;
pub use forward::{ForwardBatch, IoCounters, Src};
pub use mmsg::{RecvBatch, SendBatch, GSO_MAX_BYTES, GSO_MAX_SEGMENTS};

// ---------------------------------------------------------------------------
// Clocks and CPU time.

/// `CLOCK_MONOTONIC` in nanoseconds; the clock every packet timestamp uses.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time used by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusive timespec for the kernel to fill;
    // both clocks exist on every Linux this builds for.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// User + system CPU seconds used so far by this process, all threads
/// (getrusage, microsecond resolution).
pub fn self_cpu_secs() -> f64 {
    // SAFETY: rusage is plain integers; all-zero is valid.
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: `ru` is a valid, exclusive rusage for the kernel to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Clock ticks per second, the unit of the times in /proc/PID/stat.
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf takes an integer name and touches no memory.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

// ---------------------------------------------------------------------------
// Process and thread set-up.

/// Raises the soft descriptor limit to the hard limit; returns the soft
/// limit in force afterwards.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, exclusive rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit read by the kernel only.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// Makes the calling thread's sleeps end within `ns` of their deadline
/// (the default slack is 50 µs, coarse next to a packet every few µs).
pub fn set_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

/// Pins the calling thread to `cpus` (no-op when empty). Allocates nothing
/// and takes no lock, so a child may call it between fork and exec.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // A CPU number the set cannot hold is the caller's mistake: say so
    // instead of letting CPU_SET's bounds check panic.
    if cpus.iter().any(|&c| c >= libc::CPU_SETSIZE as usize) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU numbers must be below {}", libc::CPU_SETSIZE),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array (all-zero is valid); every CPU
    // number was checked against CPU_SETSIZE above, so CPU_SET stays inside
    // it, and sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes the child `cmd` starts pinned to `cpu` (and so every thread it
/// creates), set in the child before it executes.
pub fn pin_child(cmd: &mut Command, cpu: usize) {
    let cpus = [cpu];
    // SAFETY: the closure runs in the forked child before exec; it only
    // calls sched_setaffinity on a stack cpu_set_t (async-signal-safe, no
    // allocation, no locks).
    unsafe {
        cmd.pre_exec(move || pin_current_thread(&cpus));
    }
}

// ---------------------------------------------------------------------------
// Signals.

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the stop flag (and interrupt epoll_wait).
pub fn install_stop_signals() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an
        // atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install_stop_signals`].
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Sends `sig` to process `pid` (a child this program started).
pub fn signal_pid(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill takes two integers and touches no memory of ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

// ---------------------------------------------------------------------------
// Socket options.

/// Lets IPv4 datagrams leave a relay socket with DF clear
/// (IP_PMTUDISC_DONT), as uturn's relay sockets do without DONT-FRAGMENT;
/// a no-op for IPv6 sockets.
pub fn clear_df(sock: &impl AsRawFd, ipv4: bool) -> io::Result<()> {
    if !ipv4 {
        return Ok(());
    }
    let v: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: the option pointer and length describe a live c_int; a bad
    // descriptor only makes the call fail.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&v as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_limits_and_pinning() {
        assert!(monotonic_ns() > 0);
        assert!(thread_cpu_ns() > 0);
        assert!(self_cpu_secs() >= 0.0);
        assert!(clock_ticks_per_sec() > 0.0);
        assert!(raise_nofile_limit() >= 1);
        pin_current_thread(&[]).unwrap();
        let err = pin_current_thread(&[usize::MAX]).expect_err("out of range");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        clear_df(&s, true).unwrap();
    }
}
