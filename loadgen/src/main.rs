//! `uturn-loadgen`: the load generator bundled with uturn.
//!
//! It drives any TURN server (RFC 8656) over UDP, TCP or TLS on loopback
//! and measures what the server delivers: authenticated allocations per
//! second (`allocate`), relayed packets per second with loss, reordering
//! and one-way latency (`relay`), allocation churn with the server's memory and
//! descriptors over time (`churn`), the server's memory per idle
//! allocation (`hold`), a rate sweep (`sweep`), a bare kernel-floor
//! forwarder to compare against (`floor`), a flood of unauthenticated
//! requests (`flood`) and a side-by-side
//! comparison of uturn, the floor and coturn (`compare`).
//!
//! The method it implements is described in BENCHMARKING.md. The protocol
//! code comes from the `uturn-stun` codec only, the system calls from
//! `uturn-io`.
#![forbid(unsafe_code)]

mod allocate;
mod churn;
mod client;
mod compare;
mod cpu;
mod creds;
mod flags;
mod flood;
mod floor;
mod hold;
mod netns;
mod output;
mod payload;
mod relay;
mod stats;
mod sweep;
mod tcp_relay;

use clap::{Parser, Subcommand};

use crate::output::Output;

/// Load generator for TURN relays (RFC 8656), loopback only.
///
/// Every run stops by itself after its --duration. Numbers are printed as a
/// table, or as one JSON object with --json. See `uturn-loadgen <command>
/// --help` for the flags of each scenario and their units.
#[derive(Parser, Debug)]
#[command(name = "uturn-loadgen", version, propagate_version = true)]
struct Cli {
    /// Print one JSON object (machine-readable) instead of tables; also
    /// disables the progress line.
    #[arg(long, global = true)]
    json: bool,
    /// Pin the generator's threads to these CPU cores: a list such as `1`,
    /// `0,2` or `2-3`. Threads are given the cores round-robin (senders
    /// first, then receivers). Default: no pinning.
    #[arg(long, global = true, value_name = "LIST", value_parser = parse_cpu_list)]
    cpu: Option<CpuList>,
    #[command(subcommand)]
    command: Command,
}

/// A parsed `--cpu` list (a newtype so that clap takes it as one value).
#[derive(Clone, Debug)]
struct CpuList(Vec<usize>);

fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: usize = lo.parse().map_err(|_| format!("bad CPU number {lo:?}"))?;
        let hi: usize = hi.parse().map_err(|_| format!("bad CPU number {hi:?}"))?;
        if hi < lo || hi - lo > 4096 {
            return Err(format!("bad CPU range {part:?}"));
        }
        cpus.extend(lo..=hi);
    }
    if cpus.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(CpuList(cpus))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Authenticated allocation flows per second (401 round, Allocate,
    /// CreatePermission, ChannelBind, then Refresh 0), N in flight.
    Allocate(allocate::AllocateArgs),
    /// Relayed packets: N flows, ChannelData or Send/Data indications,
    /// client→peer, peer→client or both, open-loop rate or max; reports
    /// delivered rate, loss, reordering and one-way latency.
    Relay(relay::RelayArgs),
    /// Allocations created, used and deleted at a steady rate; with
    /// --server-pid, the server's memory and descriptors over time.
    Churn(churn::ChurnArgs),
    /// Idle allocations held open in steps; with --server-pid, the server's
    /// memory and descriptors per allocation, and the host's Slab.
    Hold(hold::HoldArgs),
    /// The relay scenario at a list of rates: highest rate with ≤ 0.1 % loss.
    Sweep(sweep::SweepArgs),
    /// A bare TURN-shaped forwarder: what the kernel allows on this machine.
    Floor(floor::FloorArgs),
    /// Unauthenticated Allocates from many source addresses (each costs a
    /// 401); run beside `allocate` to see what a flood leaves of it.
    Flood(flood::FloodArgs),
    /// uturn, the floor and coturn side by side, alternating, with a report.
    Compare(compare::CompareArgs),
    /// TCP allocations (RFC 6062): bytes through N peer/data connection
    /// pairs as fast as the relay carries them; throughput and the
    /// server's CPU per GB.
    TcpRelay(tcp_relay::TcpRelayArgs),
}

fn main() {
    let cli = Cli::parse();
    let out = Output {
        json: cli.json,
        cpus: cli.cpu.map(|c| c.0).unwrap_or_default(),
    };
    let result = match &cli.command {
        Command::Allocate(a) => allocate::run(a, &out),
        Command::Relay(a) => relay::run(a, &out),
        Command::Churn(a) => churn::run(a, &out),
        Command::Hold(a) => hold::run(a, &out),
        Command::Sweep(a) => sweep::run(a, &out),
        Command::Floor(a) => floor::run(a, &out),
        Command::Flood(a) => flood::run(a, &out),
        Command::Compare(a) => compare::run(a, &out),
        Command::TcpRelay(a) => tcp_relay::run(a, &out),
    };
    if let Err(e) = result {
        eprintln!("uturn-loadgen: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1").unwrap().0, vec![1]);
        assert_eq!(parse_cpu_list("0,2-4").unwrap().0, vec![0, 2, 3, 4]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
    }
}
