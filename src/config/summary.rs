//! The human summary `check-config` prints. It names counts, never a
//! secret or a key.

use ipnet::IpNet;

use super::Config;

impl Config {
    /// A human summary (for `check-config`). Never prints secrets or keys.
    pub fn summary(&self) -> String {
        let list = |v: &[IpNet]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let Config {
            network: n,
            streams,
            io,
            operations: ops,
            reloadable: r,
            warnings: _,
        } = self;
        let (auth, policy, logging, drain) = (&r.auth, &r.policy, &r.logging, &r.drain);
        let listen = n
            .listen
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let relays = n
            .relay_ips()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let ports = u32::from(*n.relay_ports.end()) - u32::from(*n.relay_ports.start()) + 1;
        let q = &policy.quotas;
        let addrs = |v: &[std::net::SocketAddr]| {
            if v.is_empty() {
                "off".to_string()
            } else {
                v.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let certificate = match &r.tls {
            super::Tls::Off => "none".to_string(),
            super::Tls::Demo => "self-signed, made at start-up (demo)".to_string(),
            super::Tls::Files { cert, identity, .. } => format!(
                "{} (SHA-256 {})",
                cert.display(),
                crate::stream::tls::fingerprint_hex(&identity.fingerprint)
            ),
        };
        let streams_text = format!(
            "listen: tcp {}\nlisten: tls {}; certificate {certificate}\n\
             listen: dtls {} (DTLS 1.2, the TLS certificate)\n\
             tcp/tls/dtls: at most {} connections, {} per source; handshake within {} s, \
             an allocation within {} s; send queue {} bytes per connection\n\
             proxy protocol v2: {}\n",
            addrs(&streams.listen_tcp),
            addrs(&streams.listen_tls),
            addrs(&streams.listen_dtls),
            streams.max_connections,
            streams.max_connections_per_source,
            streams.handshake_timeout.as_secs(),
            streams.auth_timeout.as_secs(),
            streams.send_queue_bytes,
            if streams.proxy_protocol.is_empty() {
                "off".to_string()
            } else {
                format!(
                    "on {} from {}",
                    addrs(&streams.proxy_protocol),
                    list(&streams.proxy_protocol_from)
                )
            },
        );
        format!(
            "listen: udp {listen}\n\
             {streams_text}\
             relay: {relays} ports {}-{} ({ports} ports over {} workers)\n\
             realm: {:?}\n\
             credentials: {} static users, {} REST secrets; SHA-256 offered: {}; nonce lifetime: {} s\n\
             max allocation lifetime: {} s\n\
             peers: allow {}; deny {} (plus the built-in deny list and the relay's own addresses)\n\
             quotas: {} allocations per user, {} in total, {} permissions and {} channels per allocation\n\
             unauthenticated replies: {} per second per source, burst {}\n\
             software: {}\n\
             log level: {}, format {}, client details in logs: {}\n\
             io backend: {}, batched waits: {}, UDP GSO: {}, TCP/TLS on io_uring: {}\n\
             xdp: {}\n\
             metrics: {}\n\
             control socket: {}\n\
             drain: at most {} s, new allocations get {}",
            n.relay_ports.start(),
            n.relay_ports.end(),
            n.workers,
            auth.realm,
            auth.users.len(),
            auth.rest_secrets.len(),
            if auth.offer_sha256 { "yes" } else { "no" },
            auth.nonce_lifetime_secs,
            policy.max_lifetime.as_secs(),
            list(&policy.allow_peers),
            list(&policy.deny_peers),
            q.allocations_per_user,
            q.total_allocations,
            q.permissions_per_allocation,
            q.channels_per_allocation,
            policy.unauth_per_second,
            policy.unauth_burst,
            policy.software.as_deref().unwrap_or("off"),
            logging.level,
            ops.log_format.name(),
            if logging.client_details { "yes" } else { "no" },
            io.backend.name(),
            if io.batch_wait.is_zero() {
                "off".to_string()
            } else {
                format!("up to {} µs", io.batch_wait.as_micros())
            },
            if io.gso { "on" } else { "off" },
            io.streams.name(),
            io.xdp.summary(),
            ops.metrics
                .map_or("off".to_string(), |a| format!("http://{a}/metrics")),
            ops.control_socket
                .as_ref()
                .map_or("off".to_string(), |p| p.display().to_string()),
            drain.timeout.as_secs(),
            drain
                .alternate_server
                .map_or("508".to_string(), |a| format!("300 with ALTERNATE-SERVER {a}")),
        )
    }
}
