//! Attaching the XDP fast path at start-up (`xdp = "auto" | "required"`):
//! the program is loaded once, attached to every configured interface, and
//! each shard gets its own handle on the maps with its own slice of the
//! counter slots. The process holds the program until it exits; its BPF
//! links go with it, also on a crash.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::ServerError;
use crate::config::{Config, RunArgs, XdpChoice};
use crate::io::xdp::{Options, Program};
use crate::shard::OffloadSpec;

/// The attached program, shared with the metrics (which read its outcome
/// counters) until the server stops.
pub(crate) struct XdpRuntime {
    pub program: Arc<Mutex<Program>>,
}

/// Loads and attaches the program when the configuration asks for it.
/// Returns it (None when off, or when `auto` could not have it) and one
/// map handle per shard (all None then).
pub(super) fn attach(
    cfg: &Config,
    args: &RunArgs,
    bound: &[SocketAddr],
) -> Result<(Option<XdpRuntime>, Vec<Option<OffloadSpec>>), ServerError> {
    let x = &cfg.io.xdp;
    let workers = cfg.network.workers;
    let none = || (0..workers).map(|_| None).collect();
    if x.mode == XdpChoice::Off {
        return Ok((None, none()));
    }
    let loaded = Program::load(&Options {
        interfaces: x.interfaces.clone(),
        routes: x.routes,
        allow_generic: x.generic,
        learning: None,
    })
    .and_then(|program| {
        let per_shard = slot_ranges(x.routes, workers)
            .map(|slots| {
                program
                    .routes()
                    .map(|routes| Some(OffloadSpec { routes, slots }))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((program, per_shard))
    });
    let (program, per_shard) = match loaded {
        Ok(p) => p,
        Err(e) if x.mode == XdpChoice::Required => {
            return Err(ServerError::Xdp {
                key: if args.xdp.is_some() { "--xdp" } else { "xdp" },
                why: e.to_string(),
            });
        }
        Err(e) => {
            tracing::warn!("XDP fast path off: {e}; the socket path carries everything");
            return Ok((None, none()));
        }
    };
    let attached = program
        .attached()
        .map(|(name, mode)| format!("{name} ({})", mode.name()))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        routes = x.routes,
        next_hops = program.learning().name(),
        "XDP fast path attached to {attached}: ChannelData of bound channels is forwarded \
         in the driver"
    );
    if bound.iter().all(|a| a.ip().is_unspecified()) {
        tracing::warn!(
            "XDP is attached, but every UDP listen address is a wildcard: the program matches \
             exact addresses, so every channel stays on the socket path; listen on specific \
             addresses"
        );
    }
    Ok((
        Some(XdpRuntime {
            program: Arc::new(Mutex::new(program)),
        }),
        per_shard,
    ))
}

/// `routes` slots split into `workers` contiguous ranges (the first ones a
/// slot larger when it does not divide evenly).
fn slot_ranges(routes: u32, workers: usize) -> impl Iterator<Item = std::ops::Range<u32>> {
    let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
    let (each, extra) = (routes / workers, routes % workers);
    (0..workers).scan(0u32, move |start, i| {
        let len = each + u32::from(i < extra);
        let r = *start..*start + len;
        *start += len;
        Some(r)
    })
}

#[cfg(test)]
mod tests {
    use super::slot_ranges;

    #[test]
    fn slots_are_split_without_overlap_or_loss() {
        let r: Vec<_> = slot_ranges(10, 3).collect();
        assert_eq!(r, vec![0..4, 4..7, 7..10]);
        let r: Vec<_> = slot_ranges(65_536, 2).collect();
        assert_eq!(r, vec![0..32_768, 32_768..65_536]);
    }
}
