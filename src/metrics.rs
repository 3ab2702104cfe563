//! Prometheus metrics on their own HTTP listener (`metrics = "ADDR:PORT"`).
//!
//! Off the data path: shards keep plain per-shard counters that nothing else
//! writes. A scrape asks every shard for a copy over its command channel (the
//! same way the control thread talks to shards), sums the copies and writes
//! the OpenMetrics text format with `prometheus-client`. Labels come from
//! fixed sets only — shard index, direction, reason, STUN error code — never
//! a username or an address (SECURITY.md rule 11).
//!
//! One thread serves requests one at a time, and a scrape less than
//! `MIN_REFRESH` after the previous one gets the same snapshot, so a client
//! hammering the endpoint costs the shards at most a few copies per second.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::auth::AuthFailure;
use crate::io::IoStats;
use crate::shard::{
    collect_reports, transport_of, CloseReason, DtlsStats, ShardHandle, ShardReport, StreamStats,
};
use crate::turn::{Stats, Transport, ERROR_CODES};

mod tcp;
mod xdp;

/// How long a scrape waits for the shards.
const SHARD_TIMEOUT: Duration = Duration::from_secs(1);
/// Scrapes closer together than this share one snapshot.
const MIN_REFRESH: Duration = Duration::from_millis(500);

/// State the control thread keeps about the process, read by scrapes.
#[derive(Debug, Default)]
pub struct ControlState {
    pub draining: AtomicBool,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

/// What does not change while the server runs.
#[derive(Clone, Debug)]
pub struct StaticInfo {
    pub io_backend: &'static str,
    pub workers: usize,
    /// The XDP program, when attached (its outcome counters are read at
    /// every scrape).
    pub xdp: Option<Arc<Mutex<crate::io::xdp::Program>>>,
}

type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// Drops by reason, in the order they are exported.
fn drop_reasons(t: &Stats, io: &IoStats) -> [(&'static str, u64); 12] {
    [
        ("no_allocation", t.drop_no_allocation),
        ("no_permission", t.drop_no_permission),
        ("malformed", t.drop_malformed + io.rx_bad_source),
        ("truncated", io.rx_truncated),
        ("quota", t.drop_quota),
        ("rate_limited", t.drop_rate_limited),
        ("forbidden_peer", t.drop_forbidden_peer),
        ("encode_error", t.drop_encode),
        ("send_buffer_full", io.tx_would_block),
        (
            "send_error",
            io.tx_errors + io.tx_too_big + io.tx_unroutable,
        ),
        ("buffer_exhaustion", io.tx_no_slot + io.tx_no_buffers),
        ("receive_error", io.rx_errors + io.rx_after_close),
    ]
}

/// Renders one scrape. `reports[i]` is shard `i`'s copy, None when it did
/// not answer in time.
pub fn render(reports: &[Option<ShardReport>], info: &StaticInfo, state: &ControlState) -> String {
    let mut root = Registry::default();
    let reg = root.sub_registry_with_prefix("uturn");

    let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]);
    reg.register("build", "uturn's version", build);
    let backend = Info::new(vec![("backend", info.io_backend.to_string())]);
    reg.register("io_backend", "The data-plane io backend in use", backend);
    let workers: Gauge = Gauge::default();
    workers.set(info.workers as i64);
    reg.register("workers", "Worker threads (shards)", workers);
    let draining: Gauge = Gauge::default();
    draining.set(i64::from(state.draining.load(Ordering::Relaxed)));
    reg.register(
        "draining",
        "1 while draining: new allocations are refused",
        draining,
    );
    let reloads: Family<Labels, Counter> = Family::default();
    reloads
        .get_or_create(&labels(&[("result", "ok")]))
        .inc_by(state.reloads_ok.load(Ordering::Relaxed));
    reloads
        .get_or_create(&labels(&[("result", "error")]))
        .inc_by(state.reloads_failed.load(Ordering::Relaxed));
    reg.register(
        "config_reloads",
        "Configuration reloads, by result (an error keeps the old configuration)",
        reloads,
    );

    // Per shard: is it answering, and its share of the load.
    let up: Family<Labels, Gauge> = Family::default();
    let shard_allocs: Family<Labels, Gauge> = Family::default();
    let shard_packets: Family<Labels, Counter> = Family::default();
    let shard_drops: Family<Labels, Counter> = Family::default();
    let mut t = Stats::default();
    let mut st = StreamStats::default();
    let mut dtls = DtlsStats::default();
    let mut io = IoStats::default();
    let (mut allocations, mut permissions, mut channels) = (0u64, 0u64, 0u64);
    for (i, r) in reports.iter().enumerate() {
        let shard = i.to_string();
        up.get_or_create(&labels(&[("shard", &shard)]))
            .set(i64::from(r.is_some()));
        let Some(r) = r else { continue };
        t.add(&r.turn);
        io.add(&r.io);
        add_streams(&mut st, &r.streams);
        dtls.add(&r.dtls);
        allocations += r.gauges.allocations;
        permissions += r.gauges.permissions;
        channels += r.gauges.channels;
        shard_allocs
            .get_or_create(&labels(&[("shard", &shard)]))
            .set(r.gauges.allocations as i64);
        let totals = r.turn.totals();
        for (dir, n) in [
            ("client_to_peer", totals.to_peer_packets),
            ("peer_to_client", totals.to_client_packets),
        ] {
            shard_packets
                .get_or_create(&labels(&[("shard", &shard), ("direction", dir)]))
                .inc_by(n);
        }
        let dropped: u64 = drop_reasons(&r.turn, &r.io).iter().map(|(_, n)| n).sum();
        shard_drops
            .get_or_create(&labels(&[("shard", &shard)]))
            .inc_by(dropped);
    }
    reg.register(
        "shard_up",
        "1 when the shard answered this scrape in time",
        up,
    );
    reg.register(
        "shard_allocations",
        "Live allocations, per shard",
        shard_allocs,
    );
    reg.register(
        "shard_packets",
        "Packets relayed, per shard and direction",
        shard_packets,
    );
    reg.register(
        "shard_dropped",
        "Datagrams and requests dropped, all reasons, per shard",
        shard_drops,
    );

    // Totals, summed over the shards that answered.
    reg.register("allocations", "Live allocations", gauge(allocations));
    reg.register("permissions", "Live permissions", gauge(permissions));
    reg.register("channels", "Live channel bindings", gauge(channels));
    let created: Family<Labels, Counter> = Family::default();
    for tr in Transport::ALL {
        created
            .get_or_create(&labels(&[("transport", tr.label())]))
            .inc_by(t.by_transport[tr.index()].allocations_created);
    }
    reg.register(
        "allocations_created",
        "Allocations created, by the client's transport",
        created,
    );
    reg.register(
        "allocations_expired",
        "Allocations that reached the end of their lifetime",
        counter(t.allocations_expired),
    );
    reg.register(
        "allocations_deleted",
        "Allocations deleted by their client (Refresh with lifetime 0) or at shutdown",
        counter(t.allocations_deleted),
    );
    let rejected: Family<Labels, Counter> = Family::default();
    let errors: Family<Labels, Counter> = Family::default();
    for (i, code) in ERROR_CODES.iter().enumerate() {
        let code = code.to_string();
        rejected
            .get_or_create(&labels(&[("code", &code)]))
            .inc_by(t.allocations_rejected[i]);
        errors
            .get_or_create(&labels(&[("code", &code)]))
            .inc_by(t.errors_by_code[i]);
    }
    reg.register(
        "allocations_rejected",
        "Authenticated Allocate requests refused, by STUN error code",
        rejected,
    );
    reg.register(
        "request_errors",
        "Error responses to authenticated requests, by STUN error code",
        errors,
    );
    let auth: Family<Labels, Counter> = Family::default();
    for reason in AuthFailure::ALL {
        auth.get_or_create(&labels(&[("reason", reason.label())]))
            .inc_by(t.auth_failures_by_reason[reason.index()]);
    }
    reg.register(
        "auth_failures",
        "Failed authentications, by reason (the first 401 challenge is not a failure)",
        auth,
    );
    let packets: Family<Labels, Counter> = Family::default();
    let bytes: Family<Labels, Counter> = Family::default();
    for tr in Transport::ALL {
        let c = &t.by_transport[tr.index()];
        for (dir, p, b) in [
            ("client_to_peer", c.to_peer_packets, c.to_peer_bytes),
            ("peer_to_client", c.to_client_packets, c.to_client_bytes),
        ] {
            let l = labels(&[("direction", dir), ("transport", tr.label())]);
            packets.get_or_create(&l).inc_by(p);
            bytes.get_or_create(&l).inc_by(b);
        }
    }
    reg.register(
        "packets",
        "Application packets relayed, by direction and the client's transport",
        packets,
    );
    reg.register(
        "bytes",
        "Application payload bytes relayed (without TURN framing), by direction and the \
         client's transport",
        bytes,
    );
    register_streams(reg, &st, &dtls);
    let drops = by_label("reason", &drop_reasons(&t, &io));
    reg.register(
        "dropped",
        "Datagrams and requests dropped, by reason",
        drops,
    );
    reg.register(
        "io_rx_datagrams",
        "Datagrams received on all sockets",
        counter(io.rx_datagrams),
    );
    reg.register(
        "io_tx_datagrams",
        "Datagrams sent on all sockets",
        counter(io.tx_datagrams),
    );
    reg.register(
        "io_tx_coalesced",
        "Datagrams sent inside another datagram's UDP GSO send (same socket, destination and size)",
        counter(io.tx_coalesced),
    );
    reg.register(
        "io_wakeups",
        "Times the shards woke for io (epoll_wait or io_uring_enter returns)",
        counter(io.wakeups),
    );
    reg.register(
        "io_rx_buffer_exhausted",
        "Times io_uring ran out of receive buffers, for datagrams or for TCP (the bytes wait in \
         the socket meanwhile)",
        counter(io.rx_no_buffers + io.stream_rx_no_buffers),
    );
    reg.register(
        "io_ring_errors",
        "io_uring setup, submission or completion errors",
        counter(io.ring_errors + io.cancel_errors + io.cq_overflow),
    );
    if let Some(n) = host_udp_rcvbuf_errors() {
        reg.register(
            "host_udp_receive_buffer_errors",
            "UDP datagrams the kernel dropped host-wide because a socket's receive buffer was full (/proc/net/snmp RcvbufErrors)",
            counter(n),
        );
    }

    tcp::register(reg, reports);
    if let Some(program) = &info.xdp {
        xdp::register(reg, reports, program);
    }

    let process = root.sub_registry_with_prefix("process");
    if let Some((rss, vsz)) = process_memory() {
        process.register(
            "resident_memory_bytes",
            "Resident memory of the uturn process",
            gauge(rss),
        );
        process.register(
            "virtual_memory_bytes",
            "Virtual memory of the uturn process",
            gauge(vsz),
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        process.register(
            "open_fds",
            "Open file descriptors",
            gauge(dir.count() as u64),
        );
    }

    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &root);
    out
}

/// Resident and virtual size from /proc/self/status (VmRSS, VmSize in kB).
fn gauge(v: u64) -> Gauge {
    let g: Gauge = Gauge::default();
    g.set(v as i64);
    g
}

fn counter(v: u64) -> Counter {
    let c: Counter = Counter::default();
    c.inc_by(v);
    c
}

/// Adds one shard's stream counters to the totals.
fn add_streams(total: &mut StreamStats, s: &StreamStats) {
    let StreamStats {
        accepted,
        refused_total,
        refused_per_source,
        refused_untrusted,
        closed,
        open,
        tls_handshakes_ok,
        tls_handshakes_failed,
        tx_queue_full,
        to_peer_sent,
        to_peer_failed,
        data_connections,
    } = s;
    for t in 0..2 {
        total.data_connections[t] += data_connections[t];
        total.accepted[t] += accepted[t];
        total.refused_total[t] += refused_total[t];
        total.refused_per_source[t] += refused_per_source[t];
        total.refused_untrusted[t] += refused_untrusted[t];
        total.open[t] += open[t];
        for (a, b) in total.closed[t].iter_mut().zip(closed[t]) {
            *a += b;
        }
    }
    total.tls_handshakes_ok += tls_handshakes_ok;
    total.tls_handshakes_failed += tls_handshakes_failed;
    total.tx_queue_full += tx_queue_full;
    total.to_peer_sent += to_peer_sent;
    total.to_peer_failed += to_peer_failed;
}

/// The TCP, TLS and DTLS connection families (a DTLS session counts as a
/// connection), and DTLS's own.
fn register_streams(reg: &mut Registry, st: &StreamStats, dtls: &DtlsStats) {
    let open: Family<Labels, Gauge> = Family::default();
    let accepted: Family<Labels, Counter> = Family::default();
    let refused: Family<Labels, Counter> = Family::default();
    let closed: Family<Labels, Counter> = Family::default();
    for t in 0..2 {
        let tr = transport_of(t).label();
        open.get_or_create(&labels(&[("transport", tr)]))
            .set(st.open[t] as i64);
        accepted
            .get_or_create(&labels(&[("transport", tr)]))
            .inc_by(st.accepted[t]);
        for (reason, n) in [
            ("limit_total", st.refused_total[t]),
            ("limit_per_source", st.refused_per_source[t]),
            ("untrusted_proxy", st.refused_untrusted[t]),
        ] {
            refused
                .get_or_create(&labels(&[("transport", tr), ("reason", reason)]))
                .inc_by(n);
        }
        for (i, why) in CloseReason::ALL.iter().enumerate() {
            closed
                .get_or_create(&labels(&[("transport", tr), ("reason", why.label())]))
                .inc_by(st.closed[t][i]);
        }
    }
    let tr = Transport::Dtls.label();
    open.get_or_create(&labels(&[("transport", tr)]))
        .set(dtls.open as i64);
    accepted
        .get_or_create(&labels(&[("transport", tr)]))
        .inc_by(dtls.accepted);
    for (reason, n) in [
        ("limit_total", dtls.refused_total),
        ("limit_per_source", dtls.refused_per_source),
    ] {
        refused
            .get_or_create(&labels(&[("transport", tr), ("reason", reason)]))
            .inc_by(n);
    }
    for (i, why) in CloseReason::ALL.iter().enumerate() {
        closed
            .get_or_create(&labels(&[("transport", tr), ("reason", why.label())]))
            .inc_by(dtls.closed[i]);
    }
    register_dtls(reg, dtls);
    reg.register(
        "connections",
        "Open client connections (TCP, TLS) and DTLS sessions",
        open,
    );
    reg.register(
        "connections_accepted",
        "Client connections accepted",
        accepted,
    );
    reg.register(
        "connections_refused",
        "Client connections closed at accept, by reason",
        refused,
    );
    reg.register(
        "connections_closed",
        "Client connections closed, by reason (the allocation goes with them)",
        closed,
    );
    reg.register(
        "tls_handshakes",
        "TLS handshakes, by outcome",
        handshakes(st.tls_handshakes_ok, st.tls_handshakes_failed),
    );
    let stream_drops = by_label(
        "reason",
        &[
            ("send_queue_full", st.tx_queue_full),
            ("relay_send_failed", st.to_peer_failed),
        ],
    );
    reg.register(
        "stream_dropped",
        "Frames from or to TCP and TLS clients dropped, by reason (a full send queue \
         drops frames to the client, as a full UDP buffer would)",
        stream_drops,
    );
}

/// A counter family with one label, `name`, and a series per value.
fn by_label(name: &'static str, values: &[(&str, u64)]) -> Family<Labels, Counter> {
    let f: Family<Labels, Counter> = Family::default();
    for &(value, n) in values {
        f.get_or_create(&labels(&[(name, value)])).inc_by(n);
    }
    f
}

/// A handshakes family: `ok` and `failed` by outcome (TLS's and DTLS's).
fn handshakes(ok: u64, failed: u64) -> Family<Labels, Counter> {
    by_label("outcome", &[("ok", ok), ("failed", failed)])
}

/// DTLS's own families: the stateless cookie exchange, handshakes, drops.
fn register_dtls(reg: &mut Registry, d: &DtlsStats) {
    let hvr = by_label(
        "reason",
        &[
            (
                "no_cookie",
                d.hello_verify - d.stale_cookies.min(d.hello_verify),
            ),
            ("stale_cookie", d.stale_cookies),
        ],
    );
    reg.register(
        "dtls_hello_verify",
        "HelloVerifyRequests sent (nothing is kept for them), by why (no cookie, or a stale or forged one)",
        hvr,
    );
    reg.register(
        "dtls_handshakes",
        "DTLS handshakes, by outcome",
        handshakes(d.handshakes_ok, d.handshakes_failed),
    );
    let drops = by_label(
        "reason",
        &[
            ("not_client_hello", d.dropped_not_hello),
            ("malformed_hello", d.dropped_malformed),
            ("no_certificate", d.dropped_no_session),
            ("send_error", d.tx_errors),
            ("relay_send_failed", d.to_peer_failed),
        ],
    );
    reg.register(
        "dtls_dropped",
        "Datagrams from or to DTLS clients dropped, by reason (from addresses without a \
         session: not a ClientHello, a malformed one; a hello with no certificate to answer)",
        drops,
    );
}

fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmSize:")?))
}

/// The host's UDP RcvbufErrors counter from /proc/net/snmp.
fn host_udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let names = udp.next()?;
    let values = udp.next()?;
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The running metrics listener.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and serves scrapes on a thread of its own.
    pub fn start(
        addr: SocketAddr,
        shards: Vec<ShardHandle>,
        info: StaticInfo,
        state: Arc<ControlState>,
    ) -> io::Result<MetricsServer> {
        let server = tiny_http::Server::http(addr)
            .map(Arc::new)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("the metrics listener has no IP address"))?;
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("uturn-metrics".into())
            .spawn(move || serve(&serving, &shards, &info, &state))?;
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr: bound,
        })
    }

    /// Stops serving and waits for the thread.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    server: &tiny_http::Server,
    shards: &[ShardHandle],
    info: &StaticInfo,
    state: &ControlState,
) {
    let mut cached: Option<(Instant, String)> = None;
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let response = match (req.method(), path) {
            (tiny_http::Method::Get, "/metrics") => {
                let fresh = cached
                    .as_ref()
                    .is_some_and(|(at, _)| at.elapsed() < MIN_REFRESH);
                if !fresh {
                    let reports = collect_reports(shards, SHARD_TIMEOUT);
                    cached = Some((Instant::now(), render(&reports, info, state)));
                }
                let body = cached.as_ref().map_or("", |(_, b)| b.as_str());
                text(
                    200,
                    body,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            }
            (tiny_http::Method::Get, "/") => text(
                200,
                "uturn: metrics at /metrics\n",
                "text/plain; charset=utf-8",
            ),
            (tiny_http::Method::Get, _) => text(
                404,
                "not found: try /metrics\n",
                "text/plain; charset=utf-8",
            ),
            _ => text(405, "only GET\n", "text/plain; charset=utf-8"),
        };
        if let Err(e) = req.respond(response) {
            tracing::debug!(error = %e, "metrics response not delivered");
        }
    }
}

fn text(status: u16, body: &str, content_type: &str) -> tiny_http::Response<io::Cursor<Vec<u8>>> {
    let mut r = tiny_http::Response::from_data(body.as_bytes().to_vec()).with_status_code(status);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
        r.add_header(h);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::Gauges;

    fn report(index: usize, to_peer: u64, allocations: u64) -> ShardReport {
        let mut turn = Stats {
            drop_no_permission: 2,
            ..Stats::default()
        };
        turn.by_transport[Transport::Tcp.index()].to_peer_packets = to_peer;
        let mut streams = StreamStats::default();
        streams.open[0] = 1;
        streams.closed[1][CloseReason::ALL
            .iter()
            .position(|&r| r == CloseReason::AuthTimeout)
            .unwrap()] = 3;
        streams.tls_handshakes_failed = 1;
        turn.allocations_rejected[ERROR_CODES.iter().position(|&c| c == 508).unwrap()] = 1;
        ShardReport {
            index,
            turn,
            io: IoStats {
                tx_no_slot: 1,
                ..IoStats::default()
            },
            gauges: Gauges {
                allocations,
                permissions: 1,
                channels: 0,
            },
            streams,
            ..ShardReport::default()
        }
    }

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .map(|l| l[series.len() + 1..].trim())
    }

    #[test]
    fn shards_are_summed_and_kept_apart() {
        let info = StaticInfo {
            io_backend: "uring",
            workers: 3,
            xdp: None,
        };
        let state = ControlState::default();
        state.reloads_ok.store(2, Ordering::Relaxed);
        let text = render(
            &[Some(report(0, 10, 3)), Some(report(1, 5, 4)), None],
            &info,
            &state,
        );
        assert_eq!(
            line(
                &text,
                "uturn_packets_total{direction=\"client_to_peer\",transport=\"tcp\"}"
            ),
            Some("15")
        );
        assert_eq!(
            line(
                &text,
                "uturn_connections_closed_total{transport=\"tls\",reason=\"auth_timeout\"}"
            ),
            Some("6")
        );
        assert_eq!(
            line(&text, "uturn_connections{transport=\"tcp\"}"),
            Some("2")
        );
        assert_eq!(
            line(&text, "uturn_tls_handshakes_total{outcome=\"failed\"}"),
            Some("2")
        );
        assert_eq!(line(&text, "uturn_allocations"), Some("7"));
        assert_eq!(line(&text, "uturn_permissions"), Some("2"));
        assert_eq!(
            line(&text, "uturn_dropped_total{reason=\"no_permission\"}"),
            Some("4")
        );
        assert_eq!(
            line(&text, "uturn_dropped_total{reason=\"buffer_exhaustion\"}"),
            Some("2")
        );
        assert_eq!(
            line(&text, "uturn_allocations_rejected_total{code=\"508\"}"),
            Some("2")
        );
        assert_eq!(
            line(&text, "uturn_shard_allocations{shard=\"1\"}"),
            Some("4")
        );
        assert_eq!(line(&text, "uturn_shard_up{shard=\"2\"}"), Some("0"));
        assert_eq!(
            line(&text, "uturn_shard_dropped_total{shard=\"0\"}"),
            Some("3")
        );
        assert_eq!(
            line(&text, "uturn_config_reloads_total{result=\"ok\"}"),
            Some("2")
        );
        assert_eq!(
            line(&text, "uturn_io_backend_info{backend=\"uring\"}"),
            Some("1")
        );
        assert!(text.contains("uturn_build_info{version=\""), "{text}");
        assert!(line(&text, "process_resident_memory_bytes").is_some_and(|v| v != "0"));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn labels_come_from_fixed_sets_only() {
        let info = StaticInfo {
            io_backend: "syscall",
            workers: 1,
            xdp: None,
        };
        let text = render(&[Some(report(0, 1, 1))], &info, &ControlState::default());
        let allowed = [
            "shard",
            "direction",
            "reason",
            "code",
            "result",
            "backend",
            "version",
            "transport",
            "outcome",
        ];
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(open) = l.find('{') else { continue };
            let close = l.find('}').expect("closed label set");
            for pair in l[open + 1..close].split(',') {
                let key = pair.split('=').next().unwrap();
                assert!(allowed.contains(&key), "unexpected label {key:?} in {l}");
            }
        }
    }
}
