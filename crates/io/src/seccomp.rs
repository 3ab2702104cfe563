//! Refusing io_uring to a child process the way container runtimes do: a
//! seccomp filter that fails `io_uring_setup` with a chosen errno. The tests
//! use it to show the fallback to the portable backend; an operator can use
//! it to check that behaviour on a host where io_uring works.

use std::os::unix::process::CommandExt;
use std::process::Command;

fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Makes the process `cmd` starts see `io_uring_setup` fail with `errno`
/// (e.g. EPERM, as a seccomp policy, or ENOSYS, as an old kernel). Every other
/// system call is allowed. The filter is installed between fork and exec.
pub fn refuse_io_uring(cmd: &mut Command, errno: u32) {
    // BPF: load the syscall number; io_uring_setup → ERRNO(errno); else allow.
    let filter = [
        bpf(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        bpf(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            libc::SYS_io_uring_setup as u32,
        ),
        bpf(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA),
        ),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: the closure runs in the child between fork and exec; it only
    // makes two prctl system calls (async-signal-safe) on a filter array it
    // owns by value, allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
