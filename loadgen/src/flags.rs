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

/// `--server`: the TURN server under load (allocate, churn, flood, hold, relay).
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct Target {
    /// TURN server to load: address:port over UDP (loopback only).
    #[arg(long, default_value = "127.0.0.1:3478", value_name = "ADDR:PORT")]
    pub server: SocketAddr,
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
