//! The XDP fast path's loader: loads `xdp/relay.bpf.c` (compiled by
//! build.rs), attaches it to the named interfaces through BPF links owned
//! by this process, and hands each shard a [`Routes`] handle on its maps.
//!
//! Why this arrangement:
//! * **aya 0.14**, pure Rust: no libbpf to link or ship. It is the last
//!   aya that builds with the Rust we have (1.95; 0.15 and later need a
//!   newer one).
//! * **C compiled by clang** (`-target bpf`), not Rust for BPF: Debian's
//!   clang and libbpf headers are packages, while a Rust BPF target needs a
//!   nightly toolchain and bpf-linker, neither of which we can fetch.
//! * **BPF links** (Linux 5.9 and later): the attachment is a file
//!   descriptor of this process, so a crash or a `kill -9` detaches the
//!   program and no stale copy forwards with maps nobody updates. aya falls
//!   back to a netlink attachment (which outlives the process) where links
//!   are missing; we refuse such kernels instead.
//!
//! Privileges: loading needs CAP_BPF (or CAP_SYS_ADMIN) and CAP_PERFMON for
//! pointer arithmetic on packets, attaching needs CAP_NET_ADMIN.
use std::net::SocketAddr;
#[cfg(feature = "xdp")]
use std::os::fd::AsFd;

#[cfg(feature = "xdp")]
mod maps;

#[cfg(feature = "xdp")]
pub use maps::Routes;

/// One channel as the program sees it: both of its map entries.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The client, and the listen address its datagrams are sent to.
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub channel: u16,
    /// The peer, and the allocation's relayed address of its family.
    pub peer: SocketAddr,
    pub relayed: SocketAddr,
    /// The counter and next-hop slot, chosen by the shard (below
    /// [`Options::routes`]).
    pub slot: u32,
    /// CLOCK_MONOTONIC nanoseconds ([`crate::process::monotonic_ns`]);
    /// the program refuses the route from then on.
    pub expires_ns: u64,
}

/// What the program forwarded on one slot: ChannelData payload bytes, as
/// the socket path counts them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// What the program did with a packet: forwarded, or passed up and why.
/// The order is the program's `enum outcome`.
pub const OUTCOMES: [&str; 12] = [
    "forwarded_to_peer",
    "forwarded_to_client",
    "not_udp",
    "no_route",
    "expired",
    "malformed",
    "padded",
    "ip_options",
    "no_checksum",
    "hop_unknown",
    "mtu",
    "adjust_failed",
];

/// How the program was attached to an interface.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In the driver (XDP_FLAGS_DRV_MODE): the fast one.
    Native,
    /// In the generic network stack (XDP_FLAGS_SKB_MODE): works on any
    /// interface, saves far less.
    Generic,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Generic => "generic",
        }
    }
}

/// What to load and where.
#[derive(Clone, Debug)]
pub struct Options {
    pub interfaces: Vec<String>,
    /// Routes (bound channels) the maps hold; also the number of slots.
    pub routes: u32,
    /// Whether generic mode is acceptable where native is refused.
    pub allow_generic: bool,
    /// How next hops are learned (None: from the socket path where the
    /// kernel has TCX links, else from arriving packets).
    pub learning: Option<Learning>,
}

/// Where the program learns the next hop toward a channel's client or
/// peer (it cannot ask the FIB: `bpf_fib_lookup` needs IP forwarding on).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Learning {
    /// From the socket path's own datagrams to that side, on the egress of
    /// the same interfaces (a TC program attached by TCX link, Linux 6.6+):
    /// exactly the interface and MAC addresses the kernel's routing and
    /// neighbour tables chose.
    Egress,
    /// From that side's arriving packets (the way they came in): for
    /// kernels without TCX, where a TC program would outlive the process.
    Ingress,
}

impl Learning {
    pub fn name(self) -> &'static str {
        match self {
            Learning::Egress => "from the socket path's sends",
            Learning::Ingress => "from arriving packets",
        }
    }
}

/// Why the program could not be loaded or used: one line for the log.
#[derive(Debug)]
pub enum XdpError {
    /// This binary has no program (clang missing at build time, or the
    /// `xdp` feature off).
    NotBuilt(&'static str),
    /// The kernel, the driver, the privileges or the verifier refused.
    Kernel { what: &'static str, why: String },
}

impl std::fmt::Display for XdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XdpError::NotBuilt(why) => write!(f, "this binary has no XDP program: {why}"),
            XdpError::Kernel { what, why } => write!(f, "could not {what}: {why}"),
        }
    }
}

impl std::error::Error for XdpError {}

impl XdpError {
    #[cfg(feature = "xdp")]
    fn map(name: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError {
        move |e| XdpError::Kernel {
            what: "use the XDP program's maps",
            why: format!("{name}: {e}"),
        }
    }
}

#[cfg(all(feature = "xdp", uturn_xdp_object))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay.bpf.o"));

/// The loaded program, attached; dropping it detaches it everywhere.
#[cfg(feature = "xdp")]
pub struct Program {
    // Declared first so that the links are closed before the program.
    links: Vec<(String, Mode, aya::programs::links::FdLink)>,
    // Held, never read: dropping them detaches the learner.
    _learn_links: Vec<aya::programs::links::FdLink>,
    learning: Learning,
    maps: [aya::maps::MapData; 4],
    stats: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    _ebpf: aya::Ebpf,
}

#[cfg(feature = "xdp")]
impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.attached()).finish()
    }
}

#[cfg(feature = "xdp")]
impl Program {
    /// Loads the program and attaches it to every interface in `opts`
    /// (native mode, else generic if allowed). All or nothing: on an error
    /// whatever was attached is detached again.
    pub fn load(opts: &Options) -> Result<Program, XdpError> {
        let object = object()?;
        links_supported()?;
        let learning = opts.learning.unwrap_or_else(|| {
            use aya::util::KernelVersion;
            if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) {
                Learning::Egress
            } else {
                Learning::Ingress
            }
        });
        let learn_ingress = u8::from(learning == Learning::Ingress);
        let mut ebpf = aya::EbpfLoader::new()
            .override_global("learn_ingress", &learn_ingress, true)
            .map_max_entries("to_peer", opts.routes)
            .map_max_entries("to_client", opts.routes)
            .map_max_entries("hops", opts.routes)
            .map_max_entries("traffic", opts.routes)
            .load(object)
            .map_err(|e| kernel("load the XDP object", e, privileges_hint))?;
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut("uturn_relay")
            .ok_or(XdpError::NotBuilt(
                "the object lacks the uturn_relay program",
            ))?
            .try_into()
            .map_err(|e| kernel("load the XDP program", e, |_| ""))?;
        program
            .load()
            .map_err(|e| kernel("load the XDP program", e, privileges_hint))?;
        let mut links = Vec::new();
        for name in &opts.interfaces {
            let (mode, id) = attach(program, name, opts.allow_generic)?;
            let link = program
                .take_link(id)
                .map_err(|e| kernel("keep the XDP link", e, |_| ""))?;
            let fd_link =
                aya::programs::links::FdLink::try_from(link).map_err(|_| XdpError::Kernel {
                    what: "attach through a BPF link",
                    why: format!(
                        "{name}: the kernel attached through netlink, which would outlive uturn"
                    ),
                })?;
            links.push((name.clone(), mode, fd_link));
        }
        let learn_links = match learning {
            Learning::Egress => attach_learner(&mut ebpf, &opts.interfaces)?,
            Learning::Ingress => Vec::new(),
        };
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or(XdpError::NotBuilt("the object lacks one of its maps"))
                .and_then(|m| match m {
                    aya::maps::Map::HashMap(d)
                    | aya::maps::Map::Array(d)
                    | aya::maps::Map::PerCpuArray(d) => Ok(d),
                    _ => Err(XdpError::NotBuilt(
                        "a map of the object has an unexpected type",
                    )),
                })
        };
        let maps = [
            take("to_peer")?,
            take("to_client")?,
            take("hops")?,
            take("traffic")?,
        ];
        let stats = aya::maps::Map::from_map_data(take("stats")?)
            .and_then(aya::maps::PerCpuArray::try_from)
            .map_err(XdpError::map("stats"))?;
        Ok(Program {
            links,
            _learn_links: learn_links,
            learning,
            maps,
            stats,
            _ebpf: ebpf,
        })
    }

    /// How next hops are learned.
    pub fn learning(&self) -> Learning {
        self.learning
    }

    /// The interfaces and how the program is attached to each.
    pub fn attached(&self) -> impl Iterator<Item = (&str, Mode)> {
        self.links.iter().map(|(n, m, _)| (n.as_str(), *m))
    }

    /// A handle on the maps for one shard.
    pub fn routes(&self) -> Result<Routes, XdpError> {
        let dup = |d: &aya::maps::MapData| -> Result<aya::maps::MapData, XdpError> {
            let fd = d
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| XdpError::Kernel {
                    what: "duplicate a map descriptor",
                    why: e.to_string(),
                })?;
            aya::maps::MapData::from_fd(fd).map_err(XdpError::map("a duplicated descriptor"))
        };
        let [a, b, c, d] = &self.maps;
        Routes::new(dup(a)?, dup(b)?, dup(c)?, dup(d)?)
    }

    /// Packets by outcome (see [`OUTCOMES`]), summed over CPUs.
    pub fn outcomes(&self) -> [u64; OUTCOMES.len()] {
        let mut out = [0u64; OUTCOMES.len()];
        for (i, n) in out.iter_mut().enumerate() {
            if let Ok(per_cpu) = self.stats.get(&(i as u32), 0) {
                *n = per_cpu.iter().sum();
            }
        }
        out
    }
}

#[cfg(feature = "xdp")]
fn object() -> Result<&'static [u8], XdpError> {
    #[cfg(uturn_xdp_object)]
    return Ok(OBJECT);
    #[cfg(not(uturn_xdp_object))]
    Err(XdpError::NotBuilt(
        "clang was missing when it was built (install clang and libbpf-dev, then rebuild)",
    ))
}

#[cfg(feature = "xdp")]
fn links_supported() -> Result<(), XdpError> {
    use aya::util::KernelVersion;
    match KernelVersion::current() {
        Ok(v) if v < KernelVersion::new(5, 9, 0) => Err(XdpError::Kernel {
            what: "attach through a BPF link",
            why: format!("Linux {v:?} has no XDP links (5.9 and later do)"),
        }),
        _ => Ok(()),
    }
}

#[cfg(feature = "xdp")]
fn attach(
    program: &mut aya::programs::Xdp,
    name: &str,
    allow_generic: bool,
) -> Result<(Mode, aya::programs::xdp::XdpLinkId), XdpError> {
    use aya::programs::XdpMode;
    let native = program.attach(name, XdpMode::Driver);
    match native {
        Ok(id) => Ok((Mode::Native, id)),
        Err(e) if allow_generic && !is_permission(&e) => match program.attach(name, XdpMode::Skb) {
            Ok(id) => Ok((Mode::Generic, id)),
            Err(e2) => Err(XdpError::Kernel {
                what: "attach the XDP program",
                why: format!("{name}: native: {}; generic: {}", chain(&e), chain(&e2)),
            }),
        },
        Err(e) => Err(kernel("attach the XDP program", e, |m| {
            if m.contains("File exists") || m.contains("Device or resource busy") {
                " (another XDP program is attached there: see `bpftool net show`)"
            } else {
                privileges_hint(m)
            }
        })
        .named(name)),
    }
}

/// Attaches `uturn_learn` to the egress of every interface, through TCX
/// links (owned by this process, like the XDP ones).
#[cfg(feature = "xdp")]
fn attach_learner(
    ebpf: &mut aya::Ebpf,
    interfaces: &[String],
) -> Result<Vec<aya::programs::links::FdLink>, XdpError> {
    use aya::programs::tc::{TcAttachOptions, TcAttachType};
    use aya::programs::{LinkOrder, SchedClassifier};
    let learner: &mut SchedClassifier = ebpf
        .program_mut("uturn_learn")
        .ok_or(XdpError::NotBuilt(
            "the object lacks the uturn_learn program",
        ))?
        .try_into()
        .map_err(|e| kernel("load the next-hop learner", e, |_| ""))?;
    learner
        .load()
        .map_err(|e| kernel("load the next-hop learner", e, privileges_hint))?;
    let mut links = Vec::new();
    for name in interfaces {
        let id = learner
            .attach_with_options(
                name,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| {
                kernel("attach the next-hop learner (TCX)", e, privileges_hint).named(name)
            })?;
        let link = learner
            .take_link(id)
            .map_err(|e| kernel("keep the TCX link", e, |_| ""))?;
        links.push(
            aya::programs::links::FdLink::try_from(link).map_err(|_| XdpError::Kernel {
                what: "attach the next-hop learner through a link",
                why: format!("{name}: the kernel attached it through netlink"),
            })?,
        );
    }
    Ok(links)
}

#[cfg(feature = "xdp")]
fn is_permission(e: &aya::programs::ProgramError) -> bool {
    let m = chain(e);
    m.contains("Operation not permitted") || m.contains("Permission denied")
}

/// The error and its sources, on one line.
#[cfg(feature = "xdp")]
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        next = cause.source();
    }
    // A verifier log is long: its last line that is not a statistic says why.
    if let Some((head, log)) = s.split_once("Verifier output:") {
        let why = log
            .lines()
            .map(str::trim)
            .rfind(|l| {
                !l.is_empty()
                    && !l.starts_with("processed ")
                    && !l.starts_with("stack depth")
                    && !l.starts_with("verification time")
            })
            .unwrap_or("(no log)");
        s = format!("{} the verifier says: {why}", head.trim_end());
    }
    s.replace('\n', " ")
}

#[cfg(feature = "xdp")]
fn privileges_hint(m: &str) -> &'static str {
    if m.contains("Operation not permitted") || m.contains("Permission denied") {
        " (needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, or root; see the README's XDP section)"
    } else {
        ""
    }
}

#[cfg(feature = "xdp")]
fn kernel(
    what: &'static str,
    e: impl std::error::Error,
    hint: impl Fn(&str) -> &'static str,
) -> XdpError {
    let m = chain(&e);
    let why = format!("{m}{}", hint(&m));
    XdpError::Kernel { what, why }
}

#[cfg(feature = "xdp")]
impl XdpError {
    fn named(self, name: &str) -> XdpError {
        match self {
            XdpError::Kernel { what, why } => XdpError::Kernel {
                what,
                why: format!("{name}: {why}"),
            },
            other => other,
        }
    }
}

/// Without the `xdp` feature: nothing to load.
#[cfg(not(feature = "xdp"))]
#[derive(Debug)]
pub enum Program {}

#[cfg(not(feature = "xdp"))]
impl Program {
    pub fn load(_: &Options) -> Result<Program, XdpError> {
        Err(XdpError::NotBuilt("it was built without the `xdp` feature"))
    }
}
