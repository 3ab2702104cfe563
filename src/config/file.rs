//! The TOML file's shape. Every table refuses unknown keys, so a misspelt key
//! is an error rather than a silently ignored setting.

use std::path::PathBuf;

use serde::Deserialize;

use super::auth::{check_user_name, unhex};
use super::{invalid, ConfigError};
use crate::auth::StaticUser;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub listen: Option<Vec<String>>,
    pub listen_tcp: Option<Vec<String>>,
    pub listen_tls: Option<Vec<String>>,
    pub listen_dtls: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tcp: Option<FileTcp>,
    pub proxy_protocol: Option<Vec<String>>,
    pub proxy_protocol_from: Option<Vec<String>>,
    pub relay_ips: Option<Vec<String>>,
    pub relay_ports: Option<String>,
    pub realm: Option<String>,
    pub workers: Option<u64>,
    pub max_lifetime_secs: Option<u64>,
    pub software: Option<String>,
    pub users: Option<Vec<FileUser>>,
    pub rest_secrets: Option<Vec<String>>,
    pub rest_secret_files: Option<Vec<PathBuf>>,
    pub offer_sha256: Option<bool>,
    pub nonce_lifetime_secs: Option<u64>,
    pub peers: Option<FilePeers>,
    pub quotas: Option<FileQuotas>,
    pub rate_limit: Option<FileRateLimit>,
    pub log_level: Option<String>,
    pub io_backend: Option<String>,
    pub io_batch_wait_usecs: Option<u64>,
    pub io_gso: Option<bool>,
    pub io_streams: Option<String>,
    pub xdp: Option<String>,
    pub xdp_interfaces: Option<Vec<String>>,
    pub xdp_routes: Option<u64>,
    pub xdp_generic: Option<bool>,
    pub log_format: Option<String>,
    pub log_client_details: Option<bool>,
    pub metrics: Option<String>,
    pub control_socket: Option<PathBuf>,
    pub drain_timeout_secs: Option<u64>,
    pub alternate_server: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUser {
    pub name: String,
    pub key_md5: Option<String>,
    pub key_sha256: Option<String>,
    /// Not accepted: present only to explain why.
    pub password: Option<toml::Value>,
}

impl FileUser {
    /// Checks the `i`-th `[[users]]` entry.
    pub fn validate(self, i: usize) -> Result<StaticUser, ConfigError> {
        let key = |field: &str| format!("users[{i}].{field}");
        if self.password.is_some() {
            return Err(invalid(
                key("password"),
                "passwords are not stored in files: put the key_md5/key_sha256 printed by `uturn derive-key` here",
            ));
        }
        check_user_name(&self.name, &key("name"))?;
        let key_md5 = match &self.key_md5 {
            Some(s) => Some(
                unhex::<16>(s).ok_or_else(|| invalid(key("key_md5"), "is not 32 hex digits"))?,
            ),
            None => None,
        };
        let key_sha256 = match &self.key_sha256 {
            Some(s) => Some(
                unhex::<32>(s).ok_or_else(|| invalid(key("key_sha256"), "is not 64 hex digits"))?,
            ),
            None => None,
        };
        if key_md5.is_none() && key_sha256.is_none() {
            return Err(invalid(
                key("key_md5"),
                "a user needs key_md5, key_sha256 or both",
            ));
        }
        Ok(StaticUser {
            name: self.name,
            key_md5,
            key_sha256,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePeers {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileQuotas {
    pub allocations_per_user: Option<u32>,
    pub total_allocations: Option<u32>,
    pub permissions_per_allocation: Option<u32>,
    /// TCP allocations (RFC 6062): peer connections at once, and those of
    /// them not yet bound to a data connection.
    pub peer_connections_per_allocation: Option<u32>,
    pub pending_connections_per_allocation: Option<u32>,
    pub channels_per_allocation: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRateLimit {
    pub unauth_per_second: Option<u32>,
    pub unauth_burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTcp {
    pub max_connections: Option<u64>,
    pub max_connections_per_source: Option<u64>,
    pub handshake_timeout_secs: Option<u64>,
    pub auth_timeout_secs: Option<u64>,
    pub send_queue_bytes: Option<u64>,
    pub relay_splice: Option<bool>,
}
