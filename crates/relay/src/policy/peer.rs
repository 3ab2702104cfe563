//! The one choke point for every peer address a client names.
//!
//! A peer address is checked as a *set of candidates*: the address itself
//! plus every IPv4 address embedded in it by a transition mechanism
//! (IPv4-mapped, IPv4-compatible, NAT64 well-known prefix, 6to4, Teredo).
//! If any candidate is in the allow list the peer is allowed (allow beats
//! deny); otherwise, if any candidate is in the deny list (built-in, operator
//! additions, or one of the relay's own addresses) it is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a peer was refused (never shown to the client beyond a 403).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PeerDenied {
    /// In the deny list (after normalisation) and not in the allow list.
    Denied,
    /// Port 0.
    BadPort,
}

/// Default-deny peer filter: a built-in deny list plus operator additions,
/// an allow list that beats it, and the relay's own addresses.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl PeerPolicy {
    /// `allow` beats everything; `deny_extra` adds to the built-in list;
    /// `own` are the relay's addresses (denied unless allowed).
    pub fn new(allow: Vec<IpNet>, deny_extra: Vec<IpNet>, own: &[IpAddr]) -> Self {
        let mut deny = default_deny();
        deny.extend(deny_extra);
        for ip in own {
            deny.push(IpNet::from(*ip));
        }
        PeerPolicy {
            allow: with_ipv4_equivalents(allow),
            deny: with_ipv4_equivalents(deny),
        }
    }

    /// Checks a peer after normalising IPv4-mapped, IPv4-compatible, NAT64,
    /// 6to4 and Teredo forms.
    pub fn check(&self, peer: SocketAddr) -> Result<(), PeerDenied> {
        if peer.port() == 0 {
            return Err(PeerDenied::BadPort);
        }
        let candidates = Candidates::of(peer.ip());
        let candidates = candidates.as_slice();
        let any_in = |nets: &[IpNet]| {
            candidates
                .iter()
                .any(|ip| nets.iter().any(|net| net.contains(ip)))
        };
        if any_in(&self.allow) {
            return Ok(());
        }
        if any_in(&self.deny) {
            return Err(PeerDenied::Denied);
        }
        Ok(())
    }
}

/// The built-in deny list (SECURITY.md rule 6; IANA IPv4 and IPv6
/// special-purpose address registries, RFC 6890). `::ffff:0:0/96` (mapped),
/// `::/96` (compatible), `64:ff9b::/96` (NAT64) and `2002::/16` (6to4) are
/// not listed: their embedded IPv4 addresses are checked instead.
pub fn default_deny() -> Vec<IpNet> {
    const V4: &[([u8; 4], u8)] = &[
        ([0, 0, 0, 0], 8),          // "this network" (RFC 791)
        ([10, 0, 0, 0], 8),         // private (RFC 1918)
        ([100, 64, 0, 0], 10),      // shared address space, CGNAT (RFC 6598)
        ([127, 0, 0, 0], 8),        // loopback
        ([169, 254, 0, 0], 16),     // link-local, incl. 169.254.169.254 metadata
        ([172, 16, 0, 0], 12),      // private (RFC 1918)
        ([192, 0, 0, 0], 24),       // IETF protocol assignments (RFC 6890)
        ([192, 0, 2, 0], 24),       // TEST-NET-1 (RFC 5737)
        ([192, 88, 99, 0], 24),     // 6to4 relay anycast (RFC 7526)
        ([192, 168, 0, 0], 16),     // private (RFC 1918)
        ([198, 18, 0, 0], 15),      // benchmarking (RFC 2544)
        ([198, 51, 100, 0], 24),    // TEST-NET-2 (RFC 5737)
        ([203, 0, 113, 0], 24),     // TEST-NET-3 (RFC 5737)
        ([224, 0, 0, 0], 4),        // multicast
        ([240, 0, 0, 0], 4),        // reserved
        ([255, 255, 255, 255], 32), // limited broadcast
    ];
    const V6: &[([u16; 8], u8)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 128),         // unspecified
        ([0, 0, 0, 0, 0, 0, 0, 1], 128),         // loopback
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),  // local-use NAT64 (RFC 8215)
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),      // discard-only (RFC 6666)
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),     // IETF protocol assignments, incl. Teredo
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation (RFC 3849)
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),      // unique local (RFC 4193)
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),     // link-local
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),     // site-local, deprecated (RFC 3879)
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),      // multicast
    ];
    let mut nets = Vec::with_capacity(V4.len() + V6.len());
    for &(addr, len) in V4 {
        nets.push(IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(addr), len)));
    }
    for &(s, len) in V6 {
        let addr = Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
        nets.push(IpNet::V6(Ipv6Net::new_assert(addr, len)));
    }
    nets
}

/// Adds the IPv4 equivalent of every IPv4-mapped IPv6 network
/// (`::ffff:a.b.c.d/96+n` → `a.b.c.d/n`), so that an operator who writes a
/// list entry in either form gets the same result.
fn with_ipv4_equivalents(mut nets: Vec<IpNet>) -> Vec<IpNet> {
    let extra: Vec<IpNet> = nets
        .iter()
        .filter_map(|net| match net {
            IpNet::V6(n) if n.prefix_len() >= 96 => {
                let v4 = n.network().to_ipv4_mapped()?;
                Ipv4Net::new(v4, n.prefix_len() - 96).ok().map(IpNet::V4)
            }
            _ => None,
        })
        .collect();
    nets.extend(extra);
    nets
}

/// The address and every IPv4 address embedded in it; at most three
/// (an IPv6 address plus Teredo's server and client). No allocation.
struct Candidates {
    ips: [IpAddr; 3],
    len: usize,
}

impl Candidates {
    fn of(ip: IpAddr) -> Candidates {
        let mut c = Candidates {
            ips: [ip; 3],
            len: 1,
        };
        let v6 = match ip {
            IpAddr::V4(_) => return c,
            IpAddr::V6(v6) => v6,
        };
        let o = v6.octets();
        let s = v6.segments();
        let v4_at = |i: usize| Ipv4Addr::new(o[i], o[i + 1], o[i + 2], o[i + 3]);
        if let Some(v4) = v6.to_ipv4_mapped() {
            // ::ffff:a.b.c.d (RFC 4291 §2.5.5.2)
            c.push(v4);
        } else if s[..6] == [0; 6] && !(s[6] == 0 && (s[7] == 0 || s[7] == 1)) {
            // ::a.b.c.d, IPv4-compatible (RFC 4291 §2.5.5.1); :: and ::1 are themselves
            c.push(v4_at(12));
        } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            // 64:ff9b::/96 NAT64 well-known prefix (RFC 6052 §2.1)
            c.push(v4_at(12));
        } else if s[0] == 0x2002 {
            // 2002:AABB:CCDD::/48 6to4 (RFC 3056 §2)
            c.push(v4_at(2));
        } else if s[0] == 0x2001 && s[1] == 0 {
            // Teredo 2001:0::/32 (RFC 4380 §4): server in bits 32–63,
            // client as the last 32 bits inverted.
            c.push(v4_at(4));
            let client = u32::from(v4_at(12)) ^ 0xffff_ffff;
            c.push(Ipv4Addr::from(client));
        }
        c
    }

    fn push(&mut self, v4: Ipv4Addr) {
        if let Some(slot) = self.ips.get_mut(self.len) {
            *slot = IpAddr::V4(v4);
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[IpAddr] {
        &self.ips[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PeerPolicy {
        PeerPolicy::new(Vec::new(), Vec::new(), &[])
    }

    fn sa(s: &str) -> SocketAddr {
        let ip: IpAddr = s.parse().expect("test address");
        SocketAddr::new(ip, 3478)
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("test network")
    }

    #[test]
    fn port_zero_is_bad_port_even_if_allowed() {
        let p = PeerPolicy::new(vec![net("0.0.0.0/0")], Vec::new(), &[]);
        let peer = SocketAddr::new("8.8.8.8".parse().expect("ip"), 0);
        assert_eq!(p.check(peer), Err(PeerDenied::BadPort));
    }

    #[test]
    fn public_addresses_pass() {
        let p = policy();
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(p.check(sa(a)), Ok(()), "{a}");
        }
    }

    #[test]
    fn built_in_v4_ranges_denied() {
        let p = policy();
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert_eq!(p.check(sa(a)), Err(PeerDenied::Denied), "{a}");
        }
        // Edges just outside the ranges.
        for a in [
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "11.0.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(p.check(sa(a)), Ok(()), "{a}");
        }
    }

    #[test]
    fn built_in_v6_ranges_denied() {
        let p = policy();
        for a in [
            "::",
            "::1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:1ff:ffff::1",
            "2001:db8::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
        ] {
            assert_eq!(p.check(sa(a)), Err(PeerDenied::Denied), "{a}");
        }
        for a in ["2001:200::1", "100:0:0:1::1", "2003::1"] {
            assert_eq!(p.check(sa(a)), Ok(()), "{a}");
        }
    }

    #[test]
    fn embedded_loopback_forms_are_loopback() {
        let p = policy();
        for a in [
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:7f00:1::1",
        ] {
            assert_eq!(p.check(sa(a)), Err(PeerDenied::Denied), "{a}");
        }
    }

    #[test]
    fn embedded_private_and_metadata_denied() {
        let p = policy();
        for a in [
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::c0a8:101",
            "2002:c0a8:101::1",
            "2002:a9fe:a9fe::",
        ] {
            assert_eq!(p.check(sa(a)), Err(PeerDenied::Denied), "{a}");
        }
    }

    #[test]
    fn teredo_candidates_extracted() {
        // Server 65.54.227.120, client 192.0.2.45 (RFC 4380 §4 example form:
        // last 32 bits are the client address inverted).
        let ip: IpAddr = "2001:0:4136:e378:8000:63bf:3fff:fdd2".parse().expect("ip");
        let c = Candidates::of(ip);
        assert_eq!(
            c.as_slice(),
            &[
                ip,
                IpAddr::V4(Ipv4Addr::new(65, 54, 227, 120)),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 45)),
            ]
        );
        // Teredo is inside 2001::/23, denied by default.
        assert_eq!(
            policy().check(SocketAddr::new(ip, 1)),
            Err(PeerDenied::Denied)
        );
    }

    #[test]
    fn teredo_embedded_client_checked_even_when_prefix_allowed() {
        // Allowing Teredo's prefix does not matter here: allow beats deny.
        let p = PeerPolicy::new(vec![net("2001::/32")], Vec::new(), &[]);
        assert_eq!(p.check(sa("2001:0:4136:e378:8000:63bf:3fff:fdd2")), Ok(()));
        // Without the allow, a Teredo address whose client is loopback is denied
        // even if 2001::/23 were not in the list.
        let mut p = policy();
        p.deny.retain(|n| *n != net("2001::/23"));
        // client 127.0.0.1 → inverted 80ff:fffe
        assert_eq!(
            p.check(sa("2001:0:808:808:0:0:80ff:fffe")),
            Err(PeerDenied::Denied)
        );
        // server 127.0.0.1, public client 8.8.8.8 (inverted f7f7:f7f7)
        assert_eq!(
            p.check(sa("2001:0:7f00:1:0:0:f7f7:f7f7")),
            Err(PeerDenied::Denied)
        );
        assert_eq!(p.check(sa("2001:0:808:808:0:0:f7f7:f7f7")), Ok(()));
    }

    #[test]
    fn compatible_excludes_unspecified_and_loopback() {
        let c = Candidates::of("::".parse().expect("ip"));
        assert_eq!(c.as_slice().len(), 1);
        let c = Candidates::of("::1".parse().expect("ip"));
        assert_eq!(c.as_slice().len(), 1);
        let c = Candidates::of("::2".parse().expect("ip"));
        assert_eq!(
            c.as_slice()[1],
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 2)),
            "::0.0.0.2 is in 0.0.0.0/8"
        );
        assert_eq!(policy().check(sa("::2")), Err(PeerDenied::Denied));
    }

    #[test]
    fn allow_beats_deny() {
        let p = PeerPolicy::new(
            vec![net("10.1.0.0/16"), net("fd00:1::/32")],
            Vec::new(),
            &[],
        );
        assert_eq!(p.check(sa("10.1.2.3")), Ok(()));
        assert_eq!(p.check(sa("::ffff:10.1.2.3")), Ok(()));
        assert_eq!(p.check(sa("64:ff9b::a01:203")), Ok(()));
        assert_eq!(p.check(sa("fd00:1::5")), Ok(()));
        assert_eq!(p.check(sa("10.2.0.1")), Err(PeerDenied::Denied));
        assert_eq!(p.check(sa("fd00:2::5")), Err(PeerDenied::Denied));
    }

    #[test]
    fn allow_written_as_mapped_v6_applies_to_v4() {
        let p = PeerPolicy::new(vec![net("::ffff:10.0.0.0/104")], Vec::new(), &[]);
        assert_eq!(p.check(sa("10.9.9.9")), Ok(()));
    }

    #[test]
    fn deny_extra_applies_to_all_forms() {
        let p = PeerPolicy::new(Vec::new(), vec![net("8.8.4.0/24")], &[]);
        assert_eq!(p.check(sa("8.8.4.4")), Err(PeerDenied::Denied));
        assert_eq!(p.check(sa("::ffff:8.8.4.4")), Err(PeerDenied::Denied));
        assert_eq!(p.check(sa("64:ff9b::808:404")), Err(PeerDenied::Denied));
        assert_eq!(p.check(sa("2002:808:404::")), Err(PeerDenied::Denied));
        assert_eq!(p.check(sa("8.8.8.8")), Ok(()));
        let p = PeerPolicy::new(Vec::new(), vec![net("2a00:1450::/32")], &[]);
        assert_eq!(p.check(sa("2a00:1450::1")), Err(PeerDenied::Denied));
    }

    #[test]
    fn own_addresses_denied_unless_allowed() {
        let own: [IpAddr; 2] = [
            "198.100.1.1".parse().expect("ip"),
            "2a01:4f8::1".parse().expect("ip"),
        ];
        let p = PeerPolicy::new(Vec::new(), Vec::new(), &own);
        assert_eq!(p.check(sa("198.100.1.1")), Err(PeerDenied::Denied));
        assert_eq!(p.check(sa("::ffff:198.100.1.1")), Err(PeerDenied::Denied));
        assert_eq!(p.check(sa("64:ff9b::c664:101")), Err(PeerDenied::Denied));
        assert_eq!(p.check(sa("2a01:4f8::1")), Err(PeerDenied::Denied));
        assert_eq!(p.check(sa("198.100.1.2")), Ok(()));
        assert_eq!(p.check(sa("2a01:4f8::2")), Ok(()));
        let p = PeerPolicy::new(vec![net("198.100.1.1/32")], Vec::new(), &own);
        assert_eq!(p.check(sa("198.100.1.1")), Ok(()));
    }

    #[test]
    fn default_deny_is_complete() {
        let d = default_deny();
        assert_eq!(d.len(), 26);
        for n in &d {
            assert_eq!(*n, n.trunc(), "{n} has host bits set");
        }
    }
}
