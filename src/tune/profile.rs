//! Tuning profiles: `sysctl -p` files in which every setting carries a
//! comparison marker and a reason on the line above it.
//!
//! ```text
//! # [min] Cap on SO_RCVBUF: lets uturn's 4 MiB listener buffer through.
//! net.core.rmem_max = 16777216
//! # [exact] Ephemeral ports end below the relay range.
//! net.ipv4.ip_local_port_range = 32768 49151
//! # [min] Only present when nf_conntrack is loaded.
//! -net.netfilter.nf_conntrack_max = 262144
//! ```
//!
//! `[min]` means the host may have more (number by number for multi-value
//! keys), `[exact]` that it must have exactly this. A leading `-` on the key
//! marks it optional, as systemd-sysctl and procps understand it: a kernel
//! without the key is not a fault. The marker line must be the line right
//! above its setting; other comments may stand anywhere else. A `#` after a
//! value is refused, because `sysctl -p` would write it into the value.

use std::fmt;

/// The profile `uturn tune` uses when none is named.
pub const DEFAULT_PROFILE: &str = "edge-10g";

/// A profile shipped inside the binary.
#[derive(Copy, Clone, Debug)]
pub struct Embedded {
    pub name: &'static str,
    pub text: &'static str,
}

/// Every profile under `tuning/profiles/`, smallest link first.
pub const PROFILES: &[Embedded] = &[
    Embedded {
        name: "edge-1g",
        text: include_str!("../../tuning/profiles/edge-1g.conf"),
    },
    Embedded {
        name: "edge-10g",
        text: include_str!("../../tuning/profiles/edge-10g.conf"),
    },
    Embedded {
        name: "edge-25g",
        text: include_str!("../../tuning/profiles/edge-25g.conf"),
    },
];

/// The embedded profile called `name`.
pub fn embedded(name: &str) -> Option<&'static Embedded> {
    PROFILES.iter().find(|p| p.name == name)
}

/// The names of the embedded profiles, comma separated (for messages).
pub fn embedded_names() -> String {
    PROFILES
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the host's value is compared with the profile's.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The host may have more; every number must be at least the profile's.
    Min,
    /// The host must have exactly the profile's value.
    Exact,
}

impl Bound {
    /// The marker as written in a profile, brackets included.
    pub fn marker(self) -> &'static str {
        match self {
            Bound::Min => "[min]",
            Bound::Exact => "[exact]",
        }
    }
}

/// One `key = value` line of a profile, with what the line above said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The sysctl name, dotted (`net.core.rmem_max`), without the `-`.
    pub key: String,
    /// The value split at whitespace (one element for most keys).
    pub value: Vec<String>,
    pub bound: Bound,
    /// The reason from the marker line.
    pub reason: String,
    /// Written with a leading `-`: a kernel without the key is fine.
    pub optional: bool,
    /// 1-based line number in the profile's text.
    pub line: usize,
}

impl Setting {
    /// The value as `sysctl -p` writes it: elements joined by one space.
    pub fn value_text(&self) -> String {
        self.value.join(" ")
    }

    /// The key as written in a profile (with `-` when optional).
    pub fn written_key(&self) -> String {
        if self.optional {
            format!("-{}", self.key)
        } else {
            self.key.clone()
        }
    }
}

/// A parsed profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The first line's comment, `#` removed (what `tune list` shows).
    pub summary: String,
    pub settings: Vec<Setting>,
}

/// What is wrong with one line of a profile.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LineFault {
    /// A setting without a `# [min]` or `# [exact]` line right above it.
    NoMarker,
    /// A marker line not followed by a setting.
    MarkerWithoutSetting,
    /// A marker with no reason after it.
    EmptyReason,
    /// `# [something]` that is neither marker.
    UnknownMarker,
    /// A line that is neither a comment nor `key = value`.
    NoEquals,
    /// A key with characters other than letters, digits, `_`, `-` and `.`
    /// between dots, or an empty part.
    BadKey,
    EmptyValue,
    /// A `#` after the value, which `sysctl -p` would write into it.
    TrailingComment,
    /// A `[min]` value that is not a list of integers.
    NotANumber,
}

impl fmt::Display for LineFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineFault::NoMarker => {
                "setting without a \"# [min] reason\" or \"# [exact] reason\" line right above it"
            }
            LineFault::MarkerWithoutSetting => {
                "marker line not followed by a setting on the next line"
            }
            LineFault::EmptyReason => "marker without a reason",
            LineFault::UnknownMarker => "unknown marker (use [min] or [exact])",
            LineFault::NoEquals => "expected \"key = value\" or a comment starting with #",
            LineFault::BadKey => "key must be dotted names of letters, digits, '_' and '-'",
            LineFault::EmptyValue => "empty value",
            LineFault::TrailingComment => {
                "comment after a value (sysctl -p would write it into the value)"
            }
            LineFault::NotANumber => "[min] needs whole numbers",
        })
    }
}

/// Why a profile could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("line {line}: {fault}")]
    Line { line: usize, fault: LineFault },
    #[error("line {line}: {key} is already set on line {first}")]
    Duplicate {
        line: usize,
        key: String,
        first: usize,
    },
    #[error("no settings")]
    Empty,
}

/// Whether `key` is a dotted sysctl name that maps to a path below the
/// sysctl root and nowhere else (no `..`, no `/`, no empty part).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Parses a whole number as the kernel prints it (`-1` included).
pub fn number(s: &str) -> Option<i128> {
    s.parse().ok()
}

enum Marker {
    None,
    Some {
        bound: Bound,
        reason: String,
        line: usize,
    },
}

/// Reads a `# [min] reason` / `# [exact] reason` line. `None` for a plain
/// comment.
fn marker(comment: &str) -> Option<Result<(Bound, &str), LineFault>> {
    let rest = comment.trim_start();
    if !rest.starts_with('[') {
        return None;
    }
    let (tag, reason) = match rest.find(']') {
        Some(end) => (&rest[..=end], rest[end + 1..].trim()),
        None => return Some(Err(LineFault::UnknownMarker)),
    };
    let bound = match tag {
        "[min]" => Bound::Min,
        "[exact]" => Bound::Exact,
        _ => return Some(Err(LineFault::UnknownMarker)),
    };
    if reason.is_empty() {
        return Some(Err(LineFault::EmptyReason));
    }
    Some(Ok((bound, reason)))
}

/// Parses a profile's text.
pub fn parse(text: &str) -> Result<Profile, ProfileError> {
    let fault = |line, fault| ProfileError::Line { line, fault };
    let summary = text
        .lines()
        .next()
        .and_then(|l| l.trim().strip_prefix('#'))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut settings: Vec<Setting> = Vec::new();
    let mut pending = Marker::None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        // A pending marker's setting must be this very line.
        if l.is_empty() {
            if let Marker::Some { line: at, .. } = pending {
                return Err(fault(at, LineFault::MarkerWithoutSetting));
            }
            continue;
        }
        if let Some(comment) = l.strip_prefix('#') {
            if let Marker::Some { line: at, .. } = pending {
                return Err(fault(at, LineFault::MarkerWithoutSetting));
            }
            match marker(comment) {
                Some(Ok((bound, reason))) => {
                    pending = Marker::Some {
                        bound,
                        reason: reason.to_string(),
                        line,
                    }
                }
                Some(Err(f)) => return Err(fault(line, f)),
                None => {}
            }
            continue;
        }
        if l.starts_with(';') {
            // sysctl.conf's other comment character: allowed, never a marker.
            if let Marker::Some { line: at, .. } = pending {
                return Err(fault(at, LineFault::MarkerWithoutSetting));
            }
            continue;
        }
        let (key, value) = l.split_once('=').ok_or(fault(line, LineFault::NoEquals))?;
        let key = key.trim();
        let (key, optional) = match key.strip_prefix('-') {
            Some(k) => (k.trim_start(), true),
            None => (key, false),
        };
        if !valid_key(key) {
            return Err(fault(line, LineFault::BadKey));
        }
        if value.contains('#') {
            return Err(fault(line, LineFault::TrailingComment));
        }
        let value: Vec<String> = value.split_whitespace().map(str::to_string).collect();
        if value.is_empty() {
            return Err(fault(line, LineFault::EmptyValue));
        }
        let (bound, reason) = match std::mem::replace(&mut pending, Marker::None) {
            Marker::Some { bound, reason, .. } => (bound, reason),
            Marker::None => return Err(fault(line, LineFault::NoMarker)),
        };
        if bound == Bound::Min && value.iter().any(|v| number(v).is_none()) {
            return Err(fault(line, LineFault::NotANumber));
        }
        if let Some(first) = settings.iter().find(|s| s.key == key) {
            return Err(ProfileError::Duplicate {
                line,
                key: key.to_string(),
                first: first.line,
            });
        }
        settings.push(Setting {
            key: key.to_string(),
            value,
            bound,
            reason,
            optional,
            line,
        });
    }
    if let Marker::Some { line, .. } = pending {
        return Err(fault(line, LineFault::MarkerWithoutSetting));
    }
    if settings.is_empty() {
        return Err(ProfileError::Empty);
    }
    Ok(Profile { summary, settings })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY_LOW: i128 = 49152;
    const RELAY_HIGH: i128 = 65535;

    fn line_fault(text: &str) -> (usize, LineFault) {
        match parse(text) {
            Err(ProfileError::Line { line, fault }) => (line, fault),
            other => panic!("expected a line fault for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn every_embedded_profile_parses_with_reasons_and_markers() {
        assert!(embedded(DEFAULT_PROFILE).is_some());
        for p in PROFILES {
            let profile = parse(p.text).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(
                profile.summary.starts_with(&format!("{}:", p.name)),
                "{}: the first line names the profile: {:?}",
                p.name,
                profile.summary
            );
            for s in &profile.settings {
                assert!(
                    s.reason.len() >= 20,
                    "{} {}: reason too short",
                    p.name,
                    s.key
                );
            }
            // Every marker line in the file became a setting's reason.
            let markers = p
                .text
                .lines()
                .filter(|l| l.starts_with("# [min]") || l.starts_with("# [exact]"))
                .count();
            assert_eq!(markers, profile.settings.len(), "{}", p.name);
        }
    }

    #[test]
    fn profiles_cover_the_same_keys() {
        let keys = |name: &str| {
            let p = parse(embedded(name).unwrap().text).unwrap();
            p.settings.into_iter().map(|s| s.key).collect::<Vec<_>>()
        };
        let base = keys(PROFILES[0].name);
        for wanted in [
            "net.core.rmem_max",
            "net.core.wmem_max",
            "net.core.rmem_default",
            "net.core.wmem_default",
            "net.core.netdev_max_backlog",
            "net.core.netdev_budget",
            "net.core.netdev_budget_usecs",
            "net.ipv4.udp_mem",
            "net.ipv4.udp_rmem_min",
            "net.ipv4.udp_wmem_min",
            "net.ipv4.ip_local_port_range",
            "fs.file-max",
            "fs.nr_open",
            "net.core.busy_poll",
            "net.core.busy_read",
        ] {
            assert!(base.iter().any(|k| k == wanted), "{wanted} missing");
        }
        for p in PROFILES {
            assert_eq!(keys(p.name), base, "{} lists other keys", p.name);
        }
    }

    #[test]
    fn local_port_range_stays_below_the_default_relay_range() {
        for p in PROFILES {
            let profile = parse(p.text).unwrap();
            let s = profile
                .settings
                .iter()
                .find(|s| s.key == "net.ipv4.ip_local_port_range")
                .expect("every profile sets it");
            assert_eq!(s.bound, Bound::Exact);
            let nums: Vec<i128> = s.value.iter().filter_map(|v| number(v)).collect();
            assert_eq!(nums.len(), 2, "{}", p.name);
            assert!(nums[0] <= nums[1], "{}", p.name);
            assert!(
                nums[1] < RELAY_LOW || nums[0] > RELAY_HIGH,
                "{}: {nums:?} overlaps {RELAY_LOW}-{RELAY_HIGH}",
                p.name
            );
            // The kernel prefers ends of different parity (ip-sysctl docs).
            assert_ne!(nums[0] % 2, nums[1] % 2, "{}", p.name);
        }
    }

    #[test]
    fn every_profile_lets_the_listener_buffer_through() {
        let wanted = crate::io::socket::LISTENER_RCVBUF as i128;
        for p in PROFILES {
            let profile = parse(p.text).unwrap();
            let rmem_max = profile
                .settings
                .iter()
                .find(|s| s.key == "net.core.rmem_max")
                .and_then(|s| number(&s.value[0]))
                .expect("every profile sets rmem_max");
            assert!(rmem_max >= wanted, "{}: {rmem_max} < {wanted}", p.name);
        }
    }

    #[test]
    fn larger_links_never_get_smaller_minimums() {
        let parsed: Vec<Profile> = PROFILES.iter().map(|p| parse(p.text).unwrap()).collect();
        for pair in parsed.windows(2) {
            for (small, big) in pair[0].settings.iter().zip(&pair[1].settings) {
                assert_eq!(small.key, big.key);
                if small.bound == Bound::Min {
                    for (a, b) in small.value.iter().zip(&big.value) {
                        assert!(number(a) <= number(b), "{}: {a} > {b}", small.key);
                    }
                }
            }
        }
    }

    #[test]
    fn parses_markers_values_and_optional_keys() {
        let p = parse(
            "# demo: a test profile\n\n## heading\n# [min] buffers\nnet.core.rmem_max = 4194304\n\
             # [exact] ports\n  net.ipv4.ip_local_port_range =\t32768   49151 \n\
             ; another comment\n# [min] conntrack\n-net.netfilter.nf_conntrack_max = 262144\n",
        )
        .unwrap();
        assert_eq!(p.summary, "demo: a test profile");
        assert_eq!(p.settings.len(), 3);
        let s = &p.settings[1];
        assert_eq!(s.key, "net.ipv4.ip_local_port_range");
        assert_eq!(s.value, ["32768", "49151"]);
        assert_eq!(s.value_text(), "32768 49151");
        assert_eq!(s.bound, Bound::Exact);
        assert_eq!(s.reason, "ports");
        assert_eq!(s.line, 7);
        assert!(!s.optional);
        let c = &p.settings[2];
        assert!(c.optional);
        assert_eq!(c.key, "net.netfilter.nf_conntrack_max");
        assert_eq!(c.written_key(), "-net.netfilter.nf_conntrack_max");
    }

    #[test]
    fn refuses_what_sysctl_or_the_checker_would_misread() {
        let cases: &[(&str, usize, LineFault)] = &[
            ("net.core.rmem_max = 1\n", 1, LineFault::NoMarker),
            (
                "# [min] r\n\nnet.core.rmem_max = 1\n",
                1,
                LineFault::MarkerWithoutSetting,
            ),
            (
                "# [min] r\n# note\nnet.core.rmem_max = 1\n",
                1,
                LineFault::MarkerWithoutSetting,
            ),
            ("# [min] r\n", 1, LineFault::MarkerWithoutSetting),
            (
                "# [min]\nnet.core.rmem_max = 1\n",
                1,
                LineFault::EmptyReason,
            ),
            (
                "# [max] r\nnet.core.rmem_max = 1\n",
                1,
                LineFault::UnknownMarker,
            ),
            (
                "# [min r\nnet.core.rmem_max = 1\n",
                1,
                LineFault::UnknownMarker,
            ),
            ("# [min] r\nnet.core.rmem_max 1\n", 2, LineFault::NoEquals),
            (
                "# [min] r\nnet.core.rmem_max = 1 # big\n",
                2,
                LineFault::TrailingComment,
            ),
            (
                "# [min] r\nnet.core.rmem_max =  \n",
                2,
                LineFault::EmptyValue,
            ),
            (
                "# [min] r\nnet.core.rmem_max = lots\n",
                2,
                LineFault::NotANumber,
            ),
            ("# [min] r\nnet..rmem_max = 1\n", 2, LineFault::BadKey),
            ("# [min] r\nnet/../../etc = 1\n", 2, LineFault::BadKey),
            ("# [min] r\n = 1\n", 2, LineFault::BadKey),
        ];
        for (text, line, fault) in cases {
            assert_eq!(line_fault(text), (*line, *fault), "{text:?}");
        }
        assert_eq!(parse("# only comments\n"), Err(ProfileError::Empty));
        assert_eq!(
            parse("# [min] a\nfs.nr_open = 1\n# [min] b\nfs.nr_open = 2\n"),
            Err(ProfileError::Duplicate {
                line: 4,
                key: "fs.nr_open".into(),
                first: 2
            })
        );
    }

    #[test]
    fn exact_values_need_not_be_numbers() {
        let p = parse("# [exact] qdisc\nnet.core.default_qdisc = fq\n").unwrap();
        assert_eq!(p.settings[0].value, ["fq"]);
    }

    #[test]
    fn keys_are_confined_to_the_sysctl_tree() {
        for good in ["fs.file-max", "net.ipv4.conf.eth0.rp_filter", "a"] {
            assert!(valid_key(good), "{good}");
        }
        for bad in ["", ".", "a.", ".a", "a/b", "a..b", "a. b", "..", "a.*"] {
            assert!(!valid_key(bad), "{bad}");
        }
    }
}
