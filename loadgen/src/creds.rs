//! Credentials: static long-term users, TURN REST usernames minted from a
//! shared secret, and the long-term key derived from them (RFC 8489 §9.2.2).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// How the generator authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Send requests without credentials (the floor answers them).
    None,
    /// One static long-term user for every client.
    Static { user: String, password: String },
    /// TURN REST: each client mints `<expiry>:lg<i>` with password
    /// base64(HMAC-SHA1(secret, username)).
    Rest { secret: String },
}

/// Lifetime of a minted REST username, in seconds.
const REST_VALIDITY_SECS: u64 = 3600;

impl Auth {
    /// From the command-line flags (`--user NAME:PASSWORD`, `--rest-secret`,
    /// `--no-auth`).
    pub fn from_flags(
        user: Option<&str>,
        rest_secret: Option<&str>,
        no_auth: bool,
    ) -> anyhow::Result<Auth> {
        match (user, rest_secret, no_auth) {
            (_, _, true) => Ok(Auth::None),
            (Some(_), Some(_), _) => anyhow::bail!("give --user or --rest-secret, not both"),
            (Some(u), None, _) => {
                let (user, password) = u
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--user takes NAME:PASSWORD"))?;
                if user.is_empty() {
                    anyhow::bail!("--user: empty name");
                }
                Ok(Auth::Static {
                    user: user.to_string(),
                    password: password.to_string(),
                })
            }
            (None, Some(s), _) => Ok(Auth::Rest {
                secret: s.to_string(),
            }),
            (None, None, _) => Ok(Auth::None),
        }
    }

    /// A short name for reports.
    pub fn describe(&self) -> String {
        match self {
            Auth::None => "none".into(),
            Auth::Static { user, .. } => format!("long-term user {user}"),
            Auth::Rest { .. } => "TURN REST (minted per client)".into(),
        }
    }

    /// Username and password of client number `i`, or `None` without credentials.
    pub fn for_client(&self, i: u64) -> Option<(String, String)> {
        match self {
            Auth::None => None,
            Auth::Static { user, password } => Some((user.clone(), password.clone())),
            Auth::Rest { secret } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let username = format!("{}:lg{i}", now + REST_VALIDITY_SECS);
                let password = rest_password(secret.as_bytes(), &username);
                Some((username, password))
            }
        }
    }
}

/// The TURN REST password for `username`: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The long-term key with the MD5 password algorithm: MD5(user:realm:password).
pub fn key_md5(user: &str, realm: &[u8], password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(user.as_bytes());
    h.update(b":");
    h.update(realm);
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn long_term_key() {
        // Expected value computed independently (Python hashlib) for the
        // RFC 5769 §2.4 user, realm and SASLprep-ed password.
        let key = key_md5("マトリックス", b"example.org", "TheMatrIX");
        assert_eq!(hex(&key), "e8ca7ad59d5eb0518e312911d2dab2a9");
    }

    #[test]
    fn rest_credentials() {
        // base64(HMAC-SHA1("secret", "1700000000:lg0")), computed independently
        // with Python's hmac module.
        let p = rest_password(b"secret", "1700000000:lg0");
        assert_eq!(p, "8wYrFhwaasx1QS1vFCCWcLykl6Q=");
        let a = Auth::Rest {
            secret: "secret".into(),
        };
        let (u, pw) = a.for_client(7).unwrap();
        assert!(u.ends_with(":lg7"));
        assert_eq!(pw, rest_password(b"secret", &u));
        assert!(Auth::from_flags(Some("a:b:c"), None, false).is_ok());
        assert!(Auth::from_flags(Some("nocolon"), None, false).is_err());
    }
}
