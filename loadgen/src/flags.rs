//! Groups of flags that several scenarios take word for word.
//!
//! Each group is one `clap::Args` struct that a scenario's arguments take
//! with `#[command(flatten)]`, so the flags keep their names and their place
//! in `--help`, and with `#[serde(flatten)]`, so the JSON report keeps its
//! field names at the top of `args`. A flag belongs here only when its name,
//! help, value name and default are the same in every scenario that uses the
//! group; a scenario whose wording differs keeps its own field. Also here:
//! the masks that keep passwords and secrets out of the JSON.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `--server`: the TURN server under load over UDP (flood, hold).
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct Target {
    /// TURN server to load: address:port over UDP (loopback only).
    #[arg(long, default_value = "127.0.0.1:3478", value_name = "ADDR:PORT")]
    pub server: SocketAddr,
}

/// How the clients reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One UDP socket per client.
    Udp,
    /// One TCP connection per client (RFC 8489 §6.2.2 framing).
    Tcp,
    /// One TLS connection per client (TLS 1.2 or 1.3 over TCP, ALPN "stun.turn").
    Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// True for the stream transports (TCP and TLS).
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }
}

/// `--server`, `--transport`, `--tls-ca`, `--tls-sni`: the TURN server under
/// load and how the clients reach it (allocate, churn, relay).
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct Dial {
    /// TURN server to load: address:port of its listener for --transport
    /// (loopback only).
    #[arg(long, default_value = "127.0.0.1:3478", value_name = "ADDR:PORT")]
    pub server: SocketAddr,
    /// Transport between each client and the server. udp: a socket per
    /// client, requests retransmitted every 500 ms. tcp: a connection per
    /// client, messages back to back (RFC 8489 §6.2.2), ChannelData padded
    /// to 4 bytes (RFC 8656 §12.5); requests are not retransmitted, no
    /// answer within 5 s is a timeout. tls: the same over TLS 1.2/1.3 with
    /// ALPN "stun.turn"; the server's certificate is NOT verified unless
    /// --tls-ca is given. The relay leg to the peers is UDP in every case.
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    pub transport: Transport,
    /// With --transport tls: verify the server's certificate against the
    /// CA certificates in this PEM file (the server's certificate must name
    /// it in subjectAltName and must not itself be a CA certificate, which
    /// `openssl req -x509` makes by default: see the README). Without it
    /// any certificate is accepted, self-signed included (a benchmark tool,
    /// loopback only).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// With --transport tls: the server name sent as SNI and, with
    /// --tls-ca, checked against the certificate. Default: none sent, the
    /// certificate is checked against the --server IP address.
    #[arg(long, value_name = "NAME")]
    pub tls_sni: Option<String>,
}

impl Dial {
    /// Refuses TLS flags without `--transport tls`.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.transport != Transport::Tls && (self.tls_ca.is_some() || self.tls_sni.is_some()) {
            anyhow::bail!("--tls-ca and --tls-sni need --transport tls");
        }
        Ok(())
    }
}

/// `--user`, `--rest-secret`, `--realm`: how the clients log in (churn, hold).
///
/// allocate and relay take the same three flags, but say more about
/// `--rest-secret` in their help (how the password is derived), so they
/// keep their own fields.
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct Login {
    /// Long-term credentials for every client, as NAME:PASSWORD.
    #[arg(long, value_name = "NAME:PASSWORD", conflicts_with = "rest_secret")]
    #[serde(serialize_with = "mask_user")]
    pub user: Option<String>,
    /// TURN REST shared secret: each client mints `<now+3600>:lg<i>`.
    #[arg(long, value_name = "SECRET")]
    #[serde(serialize_with = "mask_secret")]
    pub rest_secret: Option<String>,
    /// Realm for the key derivation (default: the REALM of the server's 401).
    #[arg(long, value_name = "REALM")]
    pub realm: Option<String>,
}

/// `--client-ips`: the loopback source addresses of the clients (allocate,
/// churn, relay; hold's help leaves out the sentence on rate limits).
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct ClientIps {
    /// Loopback source addresses the clients are spread over, counted up
    /// from 127.0.0.1 (client i uses address i mod N); 0 gives every client
    /// its own address, 1 puts all on 127.0.0.1. Servers that limit or
    /// rate-limit per source address (uturn answers at most 20
    /// unauthenticated requests per second per address by default) then
    /// see as many clients as there are flows. IPv6: always ::1.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub client_ips: usize,
}

/// Shows `NAME:***` instead of the password in JSON output.
pub(crate) fn mask_user<S: serde::Serializer>(u: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match u {
        Some(u) => s.serialize_str(&format!("{}:***", u.split(':').next().unwrap_or(""))),
        None => s.serialize_none(),
    }
}

/// Shows `***` instead of a secret in JSON output.
pub(crate) fn mask_secret<S: serde::Serializer>(
    v: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use crate::churn::ChurnArgs;

    /// The groups add no level to the JSON: `args.server`, not `args.target.server`.
    #[test]
    fn groups_stay_flat_in_json() {
        let mut a = ChurnArgs::default();
        a.login.user = Some("lg:pw".into());
        let j = serde_json::to_value(&a).unwrap();
        assert_eq!(j["server"], "127.0.0.1:3478");
        assert_eq!(j["user"], "lg:***");
        assert!(j["rest_secret"].is_null());
        assert!(j["realm"].is_null());
        assert_eq!(j["client_ips"], 0);
        for nested in ["target", "login", "clients"] {
            assert!(j.get(nested).is_none(), "{nested} appears in the JSON");
        }
    }
}
