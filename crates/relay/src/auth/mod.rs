//! Long-term credential authentication (RFC 8489 §9.2), TURN REST shared
//! secrets, the SHA-256 password algorithm and USERHASH, stateless nonces.
//!
//! Order of the checks in [`Authenticator::authenticate`] (RFC 8489 §9.2.4):
//!
//! 1. no MESSAGE-INTEGRITY(-SHA256) → [`AuthError::Challenge`] (401);
//! 2. USERNAME/USERHASH, REALM or NONCE missing or malformed → 400;
//! 3. REALM not ours → 401;
//! 4. NONCE not one we issued to this client address → 438 (so the client
//!    retries at once with the fresh nonce that comes with it);
//! 5. bid-down checks on PASSWORD-ALGORITHM(S) → 400;
//! 6. user unknown → 401;
//! 7. MAC wrong for every candidate key → 401;
//! 8. NONCE ours but expired → 438 — only now, after the MAC proved the
//!    credentials, as §9.2.4 lists it;
//! 9. REST credential expired → 401, on every request but a Refresh that
//!    deletes (the caller says which, through `check_expiry`).

pub mod key;
pub mod nonce;

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::Transport;
use uturn_stun::attr::{self, Attribute};
use uturn_stun::integrity::{check_sha1, check_sha256, Integrity};
use uturn_stun::{EncodeError, Message, MessageWriter};

pub use key::{derive_key, userhash, Key, PasswordAlgorithm};
pub use nonce::{NonceCheck, Nonces};

/// The PASSWORD-ALGORITHMS value this server sends in every 401/438 while
/// SHA-256 is offered, and the only value it accepts back (RFC 8489 §9.2.4
/// bid-down check): SHA-256 then MD5, each with empty parameters (§14.11).
pub const PASSWORD_ALGORITHMS_VALUE: [u8; 8] = [
    0x00, 0x02, 0x00, 0x00, // SHA-256, no parameters
    0x00, 0x01, 0x00, 0x00, // MD5, no parameters
];

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
        match self.mac {
            MacKind::Sha1 => w.message_integrity(self.key.as_bytes()),
            MacKind::Sha256 => w.message_integrity_sha256(self.key.as_bytes()),
        }
    }
}

/// Why a request was not authenticated; maps to a STUN error response.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No integrity attribute at all: 401 with a challenge (RFC 8489 §9.2.4).
    /// The first round of every client, not a failure.
    Challenge,
    /// Credentials wrong, unknown user or expired REST credential: 401 with a challenge.
    Unauthorized(AuthFailure),
    /// Missing USERNAME/REALM/NONCE, or a downgrade attempt: 400.
    BadRequest(AuthFailure),
    /// The nonce expired or is bound to another client: 438 with a new nonce.
    StaleNonce,
}

impl AuthError {
    /// What is counted for it; `Challenge` is not a failure.
    pub fn failure(self) -> Option<AuthFailure> {
        match self {
            AuthError::Challenge => None,
            AuthError::Unauthorized(f) | AuthError::BadRequest(f) => Some(f),
            AuthError::StaleNonce => Some(AuthFailure::StaleNonce),
        }
    }
}

/// Why an authentication failed, as counted and exposed in metrics (a
/// fixed set of labels: never a username).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// Credential attributes missing or malformed.
    Malformed,
    WrongRealm,
    UnknownUser,
    /// The MAC did not verify (or the user has no key for the algorithm).
    BadIntegrity,
    /// A TURN REST credential past its expiry.
    ExpiredCredential,
    StaleNonce,
    /// PASSWORD-ALGORITHM(S) altered, not offered or not negotiated.
    AlgorithmDowngrade,
}

impl AuthFailure {
    /// Every reason, in the order of their counters.
    pub const ALL: [AuthFailure; 7] = [
        AuthFailure::Malformed,
        AuthFailure::WrongRealm,
        AuthFailure::UnknownUser,
        AuthFailure::BadIntegrity,
        AuthFailure::ExpiredCredential,
        AuthFailure::StaleNonce,
        AuthFailure::AlgorithmDowngrade,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Malformed => "malformed",
            AuthFailure::WrongRealm => "wrong_realm",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::ExpiredCredential => "expired_credential",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::AlgorithmDowngrade => "algorithm_downgrade",
        }
    }

    /// Its position in `ALL` (and in per-reason counter arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Checks long-term credentials. Shared by all shards (`Arc`), immutable.
pub struct Authenticator {
    cfg: AuthConfig,
    nonces: Nonces,
    /// Static users by name; the value indexes `cfg.users`.
    by_name: HashMap<Box<[u8]>, usize>,
    /// Static users by RFC 8489 §14.4 USERHASH in our realm.
    by_hash: HashMap<[u8; 32], usize>,
}

/// The credential-related attributes of a request (first occurrence of each,
/// among the attributes before the integrity attribute).
#[derive(Default)]
struct Credentials<'a> {
    username: Option<&'a [u8]>,
    userhash: Option<&'a [u8; 32]>,
    realm: Option<&'a [u8]>,
    nonce: Option<&'a [u8]>,
    algorithms: Option<&'a [u8]>,
    algorithm: Option<(u16, &'a [u8])>,
    integrity: bool,
    integrity_sha256: bool,
}

/// Whose keys a request may be signed with.
enum Identity<'a> {
    Static {
        name: &'a [u8],
        user: &'a StaticUser,
    },
    Rest {
        username: &'a [u8],
        expiry: u64,
        quota_id: &'a [u8],
    },
}

impl Authenticator {
    /// `nonce_key` is a random secret for the nonce MAC.
    pub fn new(cfg: AuthConfig, nonce_key: [u8; 32]) -> Self {
        let mut by_name = HashMap::with_capacity(cfg.users.len());
        let mut by_hash = HashMap::with_capacity(cfg.users.len());
        for (i, u) in cfg.users.iter().enumerate() {
            // On a duplicate name the first entry wins.
            by_name.entry(u.name.as_bytes().into()).or_insert(i);
            by_hash
                .entry(userhash(u.name.as_bytes(), cfg.realm.as_bytes()))
                .or_insert(i);
        }
        let features = nonce::Features {
            password_algorithms: cfg.offer_sha256,
            // RFC 8489 §9.2.4: USERHASH is advertised only where the server
            // can map it back to a user; REST usernames cannot be.
            username_anonymity: !by_hash.is_empty(),
        };
        let nonces = Nonces::new(nonce_key, cfg.nonce_lifetime_secs, features);
        Authenticator {
            cfg,
            nonces,
            by_name,
            by_hash,
        }
    }
    pub fn realm(&self) -> &str {
        &self.cfg.realm
    }
    /// Authenticates `msg` from `client` on `transport`. With `check_expiry` an expired REST
    /// credential is refused (SECURITY.md rule 1); the relay passes false only
    /// for a Refresh with LIFETIME 0, so that a client can still delete.
    pub fn authenticate<'a>(
        &'a self,
        msg: &Message<'a>,
        client: SocketAddr,
        transport: Transport,
        now_unix: u64,
        check_expiry: bool,
    ) -> Result<Authenticated<'a>, AuthError> {
        let c = collect(msg)?;

        // RFC 8489 §9.2.4: no MESSAGE-INTEGRITY(-SHA256) → 401 with REALM and NONCE.
        if !c.integrity && !c.integrity_sha256 {
            return Err(AuthError::Challenge);
        }
        // RFC 8489 §9.2.4: USERNAME or USERHASH, REALM and NONCE are required → else 400.
        let (Some(realm), Some(nonce)) = (c.realm, c.nonce) else {
            return Err(AuthError::BadRequest(AuthFailure::Malformed));
        };
        if c.username.is_none() && c.userhash.is_none() {
            return Err(AuthError::BadRequest(AuthFailure::Malformed));
        }
        if realm != self.cfg.realm.as_bytes() {
            return Err(AuthError::Unauthorized(AuthFailure::WrongRealm));
        }

        // RFC 8489 §9.2.4: a nonce that is not valid gets 438 and a new nonce.
        // One we did not issue to this address is refused before any key work.
        let (stale, advertised) = match self.nonces.check(nonce, client, transport, now_unix) {
            NonceCheck::Valid {
                password_algorithms,
            } => (false, password_algorithms),
            // The MAC verified, so the cookie's feature bits are ours.
            NonceCheck::Stale => (true, nonce::cookie_advertises_password_algorithms(nonce)),
            NonceCheck::Invalid => return Err(AuthError::StaleNonce),
        };

        let alg = password_algorithm(&c, advertised)?;
        let identity = self.identify(&c)?;

        let mac = if c.integrity_sha256 {
            MacKind::Sha256
        } else {
            MacKind::Sha1
        };
        let verify = |key: &[u8]| {
            let r = match mac {
                MacKind::Sha256 => check_sha256(msg, key),
                MacKind::Sha1 => check_sha1(msg, key),
            };
            r == Integrity::Valid
        };

        let realm = self.cfg.realm.as_bytes();
        let (username, quota_id, key, rest_expiry) = match identity {
            Identity::Static { name, user } => {
                let key = match alg {
                    PasswordAlgorithm::Md5 => user.key_md5.as_ref().map(|k| k.as_slice()),
                    PasswordAlgorithm::Sha256 => user.key_sha256.as_ref().map(|k| k.as_slice()),
                }
                .and_then(Key::from_slice)
                .ok_or(AuthError::Unauthorized(AuthFailure::BadIntegrity))?;
                // RFC 8489 §9.2.4: MAC mismatch → 401.
                if !verify(key.as_bytes()) {
                    return Err(AuthError::Unauthorized(AuthFailure::BadIntegrity));
                }
                (name, name, key, None)
            }
            Identity::Rest {
                username,
                expiry,
                quota_id,
            } => {
                // Every configured secret is a candidate (rotation).
                let key = self
                    .cfg
                    .rest_secrets
                    .iter()
                    .map(|s| derive_key(alg, username, realm, &key::rest_password(s, username)))
                    .find(|k| verify(k.as_bytes()))
                    // RFC 8489 §9.2.4: MAC mismatch → 401.
                    .ok_or(AuthError::Unauthorized(AuthFailure::BadIntegrity))?;
                (username, quota_id, key, Some(expiry))
            }
        };

        // RFC 8489 §9.2.4: nonce no longer valid → 438 (reported once the
        // credentials are known to be right).
        if stale {
            return Err(AuthError::StaleNonce);
        }
        if let Some(expiry) = rest_expiry {
            if check_expiry && expiry < now_unix {
                return Err(AuthError::Unauthorized(AuthFailure::ExpiredCredential));
            }
        }
        Ok(Authenticated {
            username,
            quota_id,
            key,
            mac,
        })
    }

    /// Appends REALM, a fresh NONCE for `client` on `transport`, and PASSWORD-ALGORITHMS when
    /// SHA-256 is offered — the attributes of a 401 or 438 response.
    pub fn write_challenge(
        &self,
        w: &mut MessageWriter<'_>,
        client: SocketAddr,
        transport: Transport,
        now_unix: u64,
    ) -> Result<(), EncodeError> {
        // RFC 8489 §9.2.4: 401 and 438 responses carry REALM and NONCE.
        w.raw(attr::REALM, self.cfg.realm.as_bytes())?;
        let mut buf = [0u8; nonce::MAX_NONCE_LEN];
        let n = self.nonces.issue(client, transport, now_unix, &mut buf);
        w.raw(attr::NONCE, buf.get(..n).unwrap_or_default())?;
        if self.cfg.offer_sha256 {
            // RFC 8489 §9.2.4: with the "Password algorithms" bit in the nonce,
            // PASSWORD-ALGORITHMS lists what we support.
            w.raw(attr::PASSWORD_ALGORITHMS, &PASSWORD_ALGORITHMS_VALUE)?;
        }
        Ok(())
    }

    /// Finds whose keys may have signed the request.
    fn identify<'a>(&'a self, c: &Credentials<'a>) -> Result<Identity<'a>, AuthError> {
        let unknown = AuthError::Unauthorized(AuthFailure::UnknownUser);
        // RFC 8489 §9.2.4: USERHASH, when present, names the user.
        if let Some(hash) = c.userhash {
            let user = self
                .by_hash
                .get(hash)
                .and_then(|&i| self.cfg.users.get(i))
                .ok_or(unknown)?;
            return Ok(Identity::Static {
                name: user.name.as_bytes(),
                user,
            });
        }
        let Some(username) = c.username else {
            return Err(unknown);
        };
        if let Some(user) = self
            .by_name
            .get(username)
            .and_then(|&i| self.cfg.users.get(i))
        {
            return Ok(Identity::Static {
                name: username,
                user,
            });
        }
        if self.cfg.rest_secrets.is_empty() {
            return Err(unknown);
        }
        let (expiry, id) = parse_rest_username(username).ok_or(unknown)?;
        Ok(Identity::Rest {
            username,
            expiry,
            quota_id: if id.is_empty() { username } else { id },
        })
    }
}

/// One pass over the trusted attributes, keeping the first of each kind.
fn collect<'a>(msg: &Message<'a>) -> Result<Credentials<'a>, AuthError> {
    let tid = msg.transaction_id();
    let mut c = Credentials::default();
    for raw in msg.attributes() {
        match raw.typ {
            attr::MESSAGE_INTEGRITY => c.integrity = true,
            attr::MESSAGE_INTEGRITY_SHA256 => c.integrity_sha256 = true,
            attr::USERNAME
            | attr::USERHASH
            | attr::REALM
            | attr::NONCE
            | attr::PASSWORD_ALGORITHMS
            | attr::PASSWORD_ALGORITHM => {
                let decoded = Attribute::decode(raw, tid)
                    .map_err(|_| AuthError::BadRequest(AuthFailure::Malformed))?;
                match decoded {
                    Attribute::Username(v) => {
                        c.username.get_or_insert(v);
                    }
                    Attribute::UserHash(v) => {
                        c.userhash.get_or_insert(v);
                    }
                    Attribute::Realm(v) => {
                        c.realm.get_or_insert(v);
                    }
                    Attribute::Nonce(v) => {
                        c.nonce.get_or_insert(v);
                    }
                    Attribute::PasswordAlgorithms(v) => {
                        c.algorithms.get_or_insert(v);
                    }
                    Attribute::PasswordAlgorithm { algorithm, params } => {
                        c.algorithm.get_or_insert((algorithm, params));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(c)
}

/// RFC 8489 §9.2.4 bid-down protection: which password algorithm the request's
/// key was derived with.
fn password_algorithm(
    c: &Credentials<'_>,
    advertised: bool,
) -> Result<PasswordAlgorithm, AuthError> {
    match (advertised, c.algorithms, c.algorithm) {
        // RFC 8489 §9.2.4: neither attribute → MD5 (an RFC 5389 client).
        (_, None, None) => Ok(PasswordAlgorithm::Md5),
        (true, Some(list), Some((number, params))) => {
            // RFC 8489 §9.2.4: PASSWORD-ALGORITHMS MUST match what we sent with this nonce.
            if list != PASSWORD_ALGORITHMS_VALUE.as_slice() {
                return Err(AuthError::BadRequest(AuthFailure::AlgorithmDowngrade));
            }
            // RFC 8489 §9.2.4: PASSWORD-ALGORITHM MUST be one of those listed.
            if !attr::password_algorithms(list).any(|(a, p)| a == number && p == params) {
                return Err(AuthError::BadRequest(AuthFailure::AlgorithmDowngrade));
            }
            PasswordAlgorithm::from_number(number)
                .ok_or(AuthError::BadRequest(AuthFailure::AlgorithmDowngrade))
        }
        // RFC 8489 §9.2.4: with the bit set, both attributes or neither → else 400.
        (true, _, _) => Err(AuthError::BadRequest(AuthFailure::Malformed)),
        // The nonce did not offer a choice: a client that claims one did not get
        // it from us (RFC 8489 §9.2.5 has clients send these only when the bit is
        // set). Refused rather than ignored, so nothing un-negotiated is used.
        (false, _, _) => Err(AuthError::BadRequest(AuthFailure::AlgorithmDowngrade)),
    }
}

/// A TURN REST username `<unix-expiry>[:<id>]`: the expiry (decimal digits,
/// no sign, fits in u64) and the id part (empty when absent).
fn parse_rest_username(username: &[u8]) -> Option<(u64, &[u8])> {
    let (digits, id) = match username.iter().position(|&b| b == b':') {
        Some(i) => (username.get(..i)?, username.get(i + 1..)?),
        None => (username, &username[..0]),
    };
    if digits.is_empty() {
        return None;
    }
    let mut expiry: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        expiry = expiry.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((expiry, id))
}

#[cfg(test)]
mod tests;
