//! Long-term credential authentication (RFC 8489 §9.2), TURN REST shared
//! secrets, the SHA-256 password algorithm and USERHASH, stateless nonces.
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

pub mod key;
pub mod nonce;

use std::net::SocketAddr;

use crate::stun::{EncodeError, Message, MessageWriter};

pub use key::{derive_key, userhash, Key, PasswordAlgorithm};
pub use nonce::{NonceCheck, Nonces};

/// A statically configured user, stored only as derived keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticUser {
    pub name: String,
    /// MD5(name:realm:password) — serves RFC 5389 clients and the MD5 algorithm.
    pub key_md5: Option<[u8; 16]>,
    /// SHA-256(name:realm:password) — the RFC 8489 SHA-256 password algorithm.
    pub key_sha256: Option<[u8; 32]>,
}

/// Everything the authenticator needs; built by `config`, replaced on reload.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub realm: String,
    pub users: Vec<StaticUser>,
    /// TURN REST shared secrets; any of them is accepted (rotation).
    pub rest_secrets: Vec<Vec<u8>>,
    /// Offer the SHA-256 password algorithm (PASSWORD-ALGORITHMS in 401s).
    pub offer_sha256: bool,
    /// How long an issued nonce stays valid, in seconds.
    pub nonce_lifetime_secs: u64,
}

/// Which MAC the request carried; the response uses the same one.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MacKind {
    Sha1,
    Sha256,
}

/// A request whose MESSAGE-INTEGRITY checked out.
#[derive(Clone, Debug)]
pub struct Authenticated<'a> {
    /// The username (for USERHASH requests, the configured name it hashes to).
    pub username: &'a [u8],
    /// What per-user quotas count against: the REST id part if there is
    /// one, else the username.
    pub quota_id: &'a [u8],
    pub key: Key,
    pub mac: MacKind,
}

impl Authenticated<'_> {
    /// Appends the integrity attribute matching the request's.
    pub fn sign(&self, w: &mut MessageWriter<'_>) -> Result<(), EncodeError> {
        todo!()
    }
}

/// Why a request was not authenticated; maps to a STUN error response.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No integrity attribute at all: 401 with a challenge (RFC 8489 §9.2.4).
    Challenge,
    /// Credentials wrong, unknown user or expired REST credential: 401 with a challenge.
    Unauthorized(&'static str),
    /// Missing USERNAME/REALM/NONCE, or a downgrade attempt: 400.
    BadRequest(&'static str),
    /// The nonce expired or is bound to another client: 438 with a new nonce.
    StaleNonce,
}

/// Checks long-term credentials. Shared by all shards (`Arc`), immutable.
pub struct Authenticator {
    cfg: AuthConfig,
}

impl Authenticator {
    /// `nonce_key` is a random secret for the nonce MAC.
    pub fn new(cfg: AuthConfig, nonce_key: [u8; 32]) -> Self {
        todo!()
    }
    pub fn realm(&self) -> &str {
        &self.cfg.realm
    }
    /// Authenticates `msg` from `client`. `check_expiry` is true for Allocate:
    /// an expired REST credential is refused there, while refreshes of a live
    /// allocation keep working (the allocation's lifetime bounds them).
    pub fn authenticate<'a>(
        &'a self,
        msg: &Message<'a>,
        client: SocketAddr,
        now_unix: u64,
        check_expiry: bool,
    ) -> Result<Authenticated<'a>, AuthError> {
        todo!()
    }
    /// Appends REALM, a fresh NONCE for `client`, and PASSWORD-ALGORITHMS when
    /// SHA-256 is offered — the attributes of a 401 or 438 response.
    pub fn write_challenge(&self, w: &mut MessageWriter<'_>, client: SocketAddr, now_unix: u64) -> Result<(), EncodeError> {
        todo!()
    }
}
