//! Network namespaces for the two sides of the relay scenario
//! (`--client-netns`, `--peer-netns`): a side's sockets are created on a
//! thread that entered its namespace, and stay in that namespace whichever
//! thread uses them afterwards (the senders and receivers never enter one).

use anyhow::Context;

/// Runs `f` on a thread of its own inside network namespace `ns` (a name of
/// `ip netns` or a path, see [`uturn_io::process::netns_path`]), or on this
/// thread when `ns` is None. The thread ends with `f`.
pub fn within<R: Send>(
    ns: Option<&str>,
    f: impl FnOnce() -> anyhow::Result<R> + Send,
) -> anyhow::Result<R> {
    let Some(ns) = ns else {
        return f();
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            uturn_io::process::enter_netns(ns)
                .with_context(|| format!("network namespace {ns} (root needed)"))?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in network namespace {ns} panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_here_without_a_namespace() {
        let here = std::thread::current().id();
        let there = within(None, || Ok(std::thread::current().id())).unwrap();
        assert_eq!(here, there);
    }

    #[test]
    fn a_missing_namespace_is_an_error_that_names_it() {
        let e = within(Some("uturn-no-such-ns"), || Ok(())).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("uturn-no-such-ns"), "{text}");
        assert!(text.contains("/run/netns/uturn-no-such-ns"), "{text}");
    }

    /// A namespace of this test's own (`ip netns add`; skipped without
    /// root or iproute2), deleted on drop.
    struct ScratchNs(String);

    impl ScratchNs {
        fn add() -> Option<ScratchNs> {
            let name = format!("ulg{}", std::process::id());
            let ok = std::process::Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                println!("skipped: `ip netns add {name}` failed (not root, or no iproute2)");
                return None;
            }
            let ns = ScratchNs(name);
            let up = std::process::Command::new("ip")
                .args(["-n", &ns.0, "link", "set", "lo", "up"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(up, "ip -n {} link set lo up", ns.0);
            Some(ns)
        }
    }

    impl Drop for ScratchNs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }

    /// A socket made inside a namespace stays there when used from this
    /// thread: it talks to its namespace's loopback, and this namespace's
    /// loopback does not reach it.
    #[test]
    fn sockets_stay_in_their_namespace() {
        let Some(ns) = ScratchNs::add() else {
            return;
        };
        let (inside, sender) = within(Some(&ns.0), || {
            Ok((
                std::net::UdpSocket::bind("127.0.0.1:0")?,
                std::net::UdpSocket::bind("127.0.0.1:0")?,
            ))
        })
        .unwrap();
        let to = inside.local_addr().unwrap();
        inside
            .set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 8];
        // From this namespace's loopback: the port is not there (or is
        // someone else's), so nothing arrives inside.
        let outside = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = outside.send_to(b"host", to);
        assert!(
            inside.recv(&mut b).is_err(),
            "a datagram crossed namespaces"
        );
        // From a socket made inside, used from here: it arrives.
        sender.send_to(b"inside", to).unwrap();
        assert_eq!(inside.recv(&mut b).unwrap(), 6);
        assert_eq!(&b[..6], b"inside");
        // Its socket table (where the relay scenario reads receive drops)
        // is the namespace's, read from a thread inside it.
        let listed = |table: String| {
            let port = format!(":{:04X} ", to.port());
            table.lines().any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.starts_with("0100007F") && format!("{a} ").ends_with(&port))
            })
        };
        let inside_table = within(Some(&ns.0), || {
            Ok(std::fs::read_to_string("/proc/thread-self/net/udp")?)
        })
        .unwrap();
        assert!(listed(inside_table), "not listed inside the namespace");
    }
}
