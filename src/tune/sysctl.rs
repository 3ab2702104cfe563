//! Reading the host: sysctl values from a tree laid out like `/proc/sys`,
//! and the open-file limit of a process.

use std::io;
use std::path::{Path, PathBuf};

use super::profile::valid_key;

/// Where the kernel shows its sysctls.
pub const DEFAULT_ROOT: &str = "/proc/sys";

/// What reading one key gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The value, split at whitespace (`/proc` separates multi-value keys
    /// with tabs).
    Value(Vec<String>),
    /// No such file: this kernel (or network namespace) lacks the key.
    Absent,
    /// The file exists but could not be read.
    Unreadable(io::ErrorKind),
}

impl Reading {
    /// The value as `sysctl -p` writes it, or a word for what went wrong.
    pub fn display(&self) -> String {
        match self {
            Reading::Value(v) => v.join(" "),
            Reading::Absent => "-".to_string(),
            Reading::Unreadable(kind) => format!("({kind})"),
        }
    }
}

/// A directory in which key `a.b.c` is the file `a/b/c`.
#[derive(Clone, Debug)]
pub struct SysctlTree {
    root: PathBuf,
}

impl SysctlTree {
    pub fn new(root: impl Into<PathBuf>) -> SysctlTree {
        SysctlTree { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key`; `None` for a name that could leave the
    /// tree.
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        valid_key(key).then(|| self.root.join(key.replace('.', "/")))
    }

    pub fn read(&self, key: &str) -> Reading {
        let Some(path) = self.path(key) else {
            return Reading::Unreadable(io::ErrorKind::InvalidInput);
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Reading::Value(text.split_whitespace().map(str::to_string).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Reading::Absent,
            Err(e) => Reading::Unreadable(e.kind()),
        }
    }
}

/// A soft limit on open files.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FdLimit {
    Finite(u64),
    Unlimited,
}

impl FdLimit {
    pub fn display(self) -> String {
        match self {
            FdLimit::Finite(n) => n.to_string(),
            FdLimit::Unlimited => "unlimited".to_string(),
        }
    }
}

/// This process's soft RLIMIT_NOFILE.
pub fn own_fd_limit() -> FdLimit {
    match crate::io::socket::fd_limit() {
        usize::MAX => FdLimit::Unlimited,
        n => FdLimit::Finite(n as u64),
    }
}

/// Another process's soft RLIMIT_NOFILE, from `/proc/PID/limits`.
pub fn process_fd_limit(pid: u32) -> io::Result<FdLimit> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    parse_limits(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no \"Max open files\" line in /proc/PID/limits",
        )
    })
}

/// The soft limit from the "Max open files" line of a `/proc/PID/limits`
/// text (columns: name, soft, hard, units).
pub fn parse_limits(text: &str) -> Option<FdLimit> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    let soft = rest.split_whitespace().next()?;
    match soft {
        "unlimited" => Some(FdLimit::Unlimited),
        n => n.parse().ok().map(FdLimit::Finite),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_files_below_the_root() {
        let t = SysctlTree::new("/x/sys");
        assert_eq!(
            t.path("net.ipv4.udp_mem"),
            Some(PathBuf::from("/x/sys/net/ipv4/udp_mem"))
        );
        assert_eq!(
            t.path("fs.file-max"),
            Some(PathBuf::from("/x/sys/fs/file-max"))
        );
        assert_eq!(t.path("net/../../etc/passwd"), None);
        assert_eq!(t.path("net..core"), None);
        assert_eq!(
            t.read("a..b"),
            Reading::Unreadable(io::ErrorKind::InvalidInput)
        );
    }

    #[test]
    fn reads_values_absent_keys_and_directories() {
        let dir = std::env::temp_dir().join(format!("uturn-sysctl-unit-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net/ipv4")).unwrap();
        std::fs::write(dir.join("net/ipv4/udp_mem"), "1\t2\t3\n").unwrap();
        let t = SysctlTree::new(&dir);
        let mem = t.read("net.ipv4.udp_mem");
        let missing = t.read("net.ipv4.nothing");
        let folder = t.read("net.ipv4");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            mem,
            Reading::Value(vec!["1".into(), "2".into(), "3".into()])
        );
        assert_eq!(mem.display(), "1 2 3");
        assert_eq!(missing, Reading::Absent);
        assert!(matches!(folder, Reading::Unreadable(_)), "{folder:?}");
    }

    #[test]
    fn limits_file_gives_the_soft_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_limits(text), Some(FdLimit::Finite(1024)));
        let unlimited = text.replace("1024      ", "unlimited ");
        assert_eq!(parse_limits(&unlimited), Some(FdLimit::Unlimited));
        assert_eq!(parse_limits("Max cpu time 1 1 seconds\n"), None);
        assert_eq!(parse_limits("Max open files   lots  1 files\n"), None);
    }

    #[test]
    fn own_limit_matches_proc_self() {
        let from_proc = parse_limits(&std::fs::read_to_string("/proc/self/limits").unwrap());
        assert_eq!(Some(own_fd_limit()), from_proc);
    }
}
