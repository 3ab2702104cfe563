//! Process and thread helpers for tools built on this crate (the load
//! generator and its floor forwarder): the monotonic clock and CPU time,
//! the timer slack, CPU pinning (of this thread, or of a child before it
//! executes), a stop flag set by SIGINT/SIGTERM, signalling a child, and
//! moving a thread into a network namespace.
//!
//! The descriptor limit lives in [`crate::socket`] ([`crate::socket::fd_limit`],
//! [`crate::socket::raise_fd_limit`]) and the DF bit of relay sockets in
//! [`crate::socket::udp_relay`].

use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

// ---------------------------------------------------------------------------
// Clocks and CPU time.

/// `CLOCK_MONOTONIC` in nanoseconds (0 if the clock cannot be read).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time the calling thread has used, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec the kernel fills; nothing else is read.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// User plus system CPU seconds of the whole process so far, all threads
/// (getrusage, microsecond resolution; 0 if it cannot be read).
pub fn self_cpu_secs() -> f64 {
    // SAFETY: rusage is plain integers; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: `ru` is a live rusage the kernel fills.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Clock ticks per second: the unit of the CPU times in `/proc/PID/stat`
/// (100 if the system does not say).
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

// ---------------------------------------------------------------------------
// Threads and children.

/// Lets the calling thread's timed sleeps overshoot their deadline by at
/// most `ns` (Linux defaults to 50 µs, long next to a packet every few µs).
pub fn set_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes integers only and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

/// Pins the calling thread to `cpus`; does nothing for an empty list.
/// Neither allocates nor locks, so it may run in a child between fork and
/// exec.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // CPU_SET panics on a number the set cannot hold: refuse it here.
    if let Some(&c) = cpus.iter().find(|&&c| !cpu_fits(c)) {
        return Err(too_large(c));
    }
    // SAFETY: cpu_set_t is a plain bit array, valid when all-zero; every
    // number was checked against CPU_SETSIZE above, so CPU_SET stays inside
    // the set; sched_setaffinity only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn cpu_fits(cpu: usize) -> bool {
    cpu < libc::CPU_SETSIZE as usize
}

fn too_large(cpu: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("CPU {cpu}: CPU numbers must be below {}", libc::CPU_SETSIZE),
    )
}

/// Has the child that `cmd` spawns pin itself to `cpu` before it executes
/// (so every thread it starts inherits the pinning). A CPU number the
/// kernel's set cannot hold is refused here, before any fork.
pub fn pin_child(cmd: &mut Command, cpu: usize) -> io::Result<()> {
    if !cpu_fits(cpu) {
        return Err(too_large(cpu));
    }
    let cpus = [cpu];
    // SAFETY: the closure runs in the forked child before exec. With the
    // number checked above, `pin_current_thread` takes no allocating error
    // path: it fills a stack cpu_set_t and calls sched_setaffinity, which
    // is async-signal-safe; no lock is taken.
    unsafe {
        cmd.pre_exec(move || pin_current_thread(&cpus));
    }
    Ok(())
}

/// Sends signal `sig` to process `pid` (a child this program started);
/// ignores a pid that does not fit or is not positive.
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
// Network namespaces.

/// Where the network namespace `name` is: `/run/netns/NAME` (made by `ip
/// netns add NAME`), or `name` itself when it is a path (`/proc/PID/ns/net`).
pub fn netns_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        PathBuf::from("/run/netns").join(name)
    }
}

/// Moves the calling thread (only it: network namespaces are per thread)
/// into the network namespace `name` (see [`netns_path`]). Sockets it
/// creates from then on belong to that namespace for their whole life,
/// whichever thread uses them later. Needs CAP_SYS_ADMIN.
pub fn enter_netns(name: &str) -> io::Result<()> {
    let path = netns_path(name);
    let ns = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    // SAFETY: setns takes a descriptor (kept open by `ns` for the call) and
    // a flag, and touches no memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("entering network namespace {}: {e}", path.display()),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Stop signals.

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the flag [`stop_requested`] reads instead
/// of ending the process; a blocking `epoll_wait` returns early.
pub fn install_stop_signals() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero sigaction is valid; the handler only stores to
        // an atomic, which is async-signal-safe; the kernel reads `sa` only
        // during the call.
        let rc = unsafe {
            let mut sa: libc::sigaction = mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install_stop_signals`].
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_and_cpu_time() {
        let a = monotonic_ns();
        assert!(a > 0);
        assert!(monotonic_ns() >= a);
        assert!(thread_cpu_ns() > 0);
        assert!(self_cpu_secs() >= 0.0);
        assert!(clock_ticks_per_sec() > 0.0);
        set_timer_slack_ns(1_000);
    }

    #[test]
    fn pinning_checks_cpu_numbers() {
        pin_current_thread(&[]).unwrap();
        let err = pin_current_thread(&[usize::MAX]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_pinned_child_runs() {
        // CPU 0 may be outside this process's allowed set (a container):
        // then the child fails to start, which is also an answer.
        let mut cmd = Command::new("true");
        assert!(pin_child(&mut cmd, usize::MAX).is_err());
        pin_child(&mut cmd, 0).unwrap();
        if let Ok(mut child) = cmd.spawn() {
            assert!(child.wait().unwrap().success());
        }
        signal_pid(0, libc::SIGTERM); // refused: would signal our group
    }

    #[test]
    fn network_namespaces() {
        assert_eq!(netns_path("uc"), PathBuf::from("/run/netns/uc"));
        assert_eq!(
            netns_path("/proc/1/ns/net"),
            PathBuf::from("/proc/1/ns/net")
        );
        let err = enter_netns("/nonexistent/ns").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
        // The thread's own namespace, on a thread of its own: allowed with
        // CAP_SYS_ADMIN, refused (EPERM) without.
        let own = std::thread::spawn(|| enter_netns("/proc/thread-self/ns/net"))
            .join()
            .unwrap();
        if let Err(e) = own {
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        }
    }
}
