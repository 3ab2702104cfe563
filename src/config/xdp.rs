//! The XDP fast path (`xdp`, `xdp_interfaces`, `xdp_routes`,
//! `xdp_generic`). Restart-only: the program is attached once at start-up.

use super::file::FileConfig;
use super::{invalid, pick, pick_list, ConfigError, RunArgs, Src};

pub const DEFAULT_XDP: &str = "off";
pub const DEFAULT_XDP_ROUTES: u32 = 65_536;
/// A route costs about 250 bytes of kernel memory across its maps (more
/// with many CPUs, for the per-CPU counters).
const MAX_XDP_ROUTES: u64 = 4_194_304;

/// The `xdp` setting.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum XdpChoice {
    /// Everything on the socket path.
    Off,
    /// Load the program where it can be; where it cannot, one log line says
    /// why and the socket path carries everything.
    Auto,
    /// Start-up fails (exit 2) unless the program is attached to every
    /// named interface.
    Required,
}

impl XdpChoice {
    fn parse(s: &str) -> Option<XdpChoice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Some(XdpChoice::Off),
            "auto" => Some(XdpChoice::Auto),
            "required" => Some(XdpChoice::Required),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            XdpChoice::Off => "off",
            XdpChoice::Auto => "auto",
            XdpChoice::Required => "required",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xdp {
    pub mode: XdpChoice,
    /// The interfaces clients and peers reach the relay on.
    pub interfaces: Vec<String>,
    /// Bound channels the program's maps hold (beyond that, new channels
    /// stay on the socket path).
    pub routes: u32,
    /// Accept generic (SKB) mode where the driver has no native XDP.
    pub generic: bool,
}

impl Xdp {
    pub(super) fn build(args: &RunArgs, f: &FileConfig) -> Result<Xdp, ConfigError> {
        let (mode_str, src) = pick(args.xdp.clone(), "--xdp", f.xdp.clone(), "xdp")
            .unwrap_or_else(|| (DEFAULT_XDP.to_string(), Src::File("xdp")));
        let mode = XdpChoice::parse(&mode_str).ok_or_else(|| {
            invalid(
                src.key(),
                format!("{mode_str:?} is not one of off, auto, required"),
            )
        })?;
        let (interfaces, src) = pick_list(
            &args.xdp_interface,
            "--xdp-interface",
            f.xdp_interfaces.clone(),
            "xdp_interfaces",
        )
        .unwrap_or((Vec::new(), Src::File("xdp_interfaces")));
        for (i, name) in interfaces.iter().enumerate() {
            // IFNAMSIZ is 16 with the terminating NUL.
            if name.is_empty()
                || name.len() > 15
                || name.contains(['/', ':'])
                || name.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    src.item(i),
                    format!("{name:?} is not a network interface name"),
                ));
            }
            if interfaces[..i].contains(name) {
                return Err(invalid(src.item(i), format!("{name:?} is listed twice")));
            }
        }
        if mode != XdpChoice::Off && interfaces.is_empty() {
            return Err(invalid(
                "xdp_interfaces",
                format!(
                    "xdp = {:?} needs the interfaces clients and peers reach this relay on \
                     (--xdp-interface NAME)",
                    mode.name()
                ),
            ));
        }
        let (routes, src) = pick(args.xdp_routes, "--xdp-routes", f.xdp_routes, "xdp_routes")
            .unwrap_or((u64::from(DEFAULT_XDP_ROUTES), Src::File("xdp_routes")));
        if !(1..=MAX_XDP_ROUTES).contains(&routes) {
            return Err(invalid(
                src.key(),
                format!("{routes} is not between 1 and {MAX_XDP_ROUTES}"),
            ));
        }
        Ok(Xdp {
            mode,
            interfaces,
            routes: routes as u32,
            generic: args.xdp_generic.or(f.xdp_generic).unwrap_or(false),
        })
    }

    pub(super) fn changed_keys(&self, new: &Xdp, keys: &mut Vec<&'static str>) {
        let Xdp {
            mode,
            interfaces,
            routes,
            generic,
        } = self;
        if *mode != new.mode {
            keys.push("xdp");
        }
        if *interfaces != new.interfaces {
            keys.push("xdp_interfaces");
        }
        if *routes != new.routes {
            keys.push("xdp_routes");
        }
        if *generic != new.generic {
            keys.push("xdp_generic");
        }
    }

    /// One line for `check-config`.
    pub fn summary(&self) -> String {
        if self.mode == XdpChoice::Off {
            return "off".to_string();
        }
        format!(
            "{} on {}, {} routes, generic mode {}",
            self.mode.name(),
            self.interfaces.join(", "),
            self.routes,
            if self.generic { "accepted" } else { "refused" }
        )
    }
}
