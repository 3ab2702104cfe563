//! Who may use the relay: the realm, static users, REST secrets, the nonce
//! lifetime and whether SHA-256 is offered (`realm`, `[[users]]` or `--user`,
//! `rest_secrets`, `rest_secret_files` or `--rest-secret`, `offer_sha256`,
//! `nonce_lifetime_secs`). Reloadable. Also the key helpers `uturn
//! derive-key` shares.

use std::collections::HashSet;

use super::file::FileConfig;
use super::{
    check_text, invalid, pick, pick_list, ConfigError, RunArgs, Src, MAX_LIFETIME_LIMIT_SECS,
};
use crate::auth::{derive_key, AuthConfig, PasswordAlgorithm, StaticUser};

pub const DEFAULT_REALM: &str = "uturn.local";
pub const DEFAULT_NONCE_LIFETIME_SECS: u64 = 600;
/// Name of the user created when no credentials are configured.
pub const DEMO_USER: &str = "demo";

/// Credentials generated at start-up when none are configured (lab use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoCredentials {
    pub user: String,
    pub password: String,
    pub rest_secret: String,
}

/// The credentials and how they are checked.
#[derive(Clone, Debug)]
pub struct Auth {
    pub realm: String,
    pub users: Vec<StaticUser>,
    pub rest_secrets: Vec<Vec<u8>>,
    pub offer_sha256: bool,
    pub nonce_lifetime_secs: u64,
    /// Set when the built-in demo credentials are in use.
    pub demo: Option<DemoCredentials>,
}

impl Auth {
    /// `have_file`: a configuration file was given (which must then name
    /// credentials: demo ones are only for a bare command line). Warnings
    /// about secret files go to `warnings`.
    pub(super) fn build(
        args: &RunArgs,
        f: &FileConfig,
        have_file: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Auth, ConfigError> {
        let (realm, src) = pick(args.realm.clone(), "--realm", f.realm.clone(), "realm")
            .unwrap_or_else(|| (DEFAULT_REALM.to_string(), Src::File("realm")));
        // RFC 8489 §14.9: REALM is fewer than 128 characters (763 bytes).
        check_text(&realm, 127, src.key())?;
        let mut users = static_users(args, f, &realm)?;
        let mut rest_secrets = rest_secrets(args, f, warnings)?;
        let mut demo = None;
        if users.is_empty() && rest_secrets.is_empty() {
            let credential_flags = !args.user.is_empty() || !args.rest_secret.is_empty();
            if have_file || credential_flags {
                return Err(invalid(
                    "users/rest_secrets",
                    "no credentials configured: add [[users]] entries (keys from `uturn derive-key`), rest_secrets or rest_secret_files",
                ));
            }
            let d = DemoCredentials {
                user: DEMO_USER.to_string(),
                password: random_token(20),
                rest_secret: random_token(32),
            };
            users.push(user_from_password(&d.user, &realm, &d.password, "users")?);
            rest_secrets.push(d.rest_secret.as_bytes().to_vec());
            demo = Some(d);
        }
        let offer_sha256 = f.offer_sha256.unwrap_or(true);
        let nonce_lifetime_secs = f.nonce_lifetime_secs.unwrap_or(DEFAULT_NONCE_LIFETIME_SECS);
        if nonce_lifetime_secs == 0 || nonce_lifetime_secs > MAX_LIFETIME_LIMIT_SECS {
            return Err(invalid(
                "nonce_lifetime_secs",
                format!(
                    "{nonce_lifetime_secs} is not between 1 and {MAX_LIFETIME_LIMIT_SECS} seconds"
                ),
            ));
        }
        Ok(Auth {
            realm,
            users,
            rest_secrets,
            offer_sha256,
            nonce_lifetime_secs,
            demo,
        })
    }

    /// The authenticator's settings.
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            realm: self.realm.clone(),
            users: self.users.clone(),
            rest_secrets: self.rest_secrets.clone(),
            offer_sha256: self.offer_sha256,
            nonce_lifetime_secs: self.nonce_lifetime_secs,
        }
    }
}

/// `--user` flags (keys derived here), else the file's `[[users]]`; a name
/// may appear once.
fn static_users(
    args: &RunArgs,
    f: &FileConfig,
    realm: &str,
) -> Result<Vec<StaticUser>, ConfigError> {
    let users = match pick_list(&args.user, "--user", None, "users") {
        Some((flags, _)) => {
            let mut users = Vec::with_capacity(flags.len());
            for s in &flags {
                let (name, password) = s.split_once(':').ok_or_else(|| {
                    invalid(
                        "--user",
                        "expected NAME:PASSWORD (the name cannot contain ':')",
                    )
                })?;
                users.push(user_from_password(name, realm, password, "--user")?);
            }
            users
        }
        None => f
            .users
            .clone()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, u)| u.validate(i))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let mut seen = HashSet::new();
    for (i, u) in users.iter().enumerate() {
        if !seen.insert(u.name.as_str()) {
            let key = if args.user.is_empty() {
                format!("users[{i}].name")
            } else {
                "--user".to_string()
            };
            return Err(invalid(
                key,
                format!("user {:?} is configured twice", u.name),
            ));
        }
    }
    Ok(users)
}

/// `--rest-secret` flags, else the file's `rest_secrets` and the contents of
/// its `rest_secret_files` (with a warning for a file every user can read).
fn rest_secrets(
    args: &RunArgs,
    f: &FileConfig,
    warnings: &mut Vec<String>,
) -> Result<Vec<Vec<u8>>, ConfigError> {
    let mut secrets = Vec::new();
    if !args.rest_secret.is_empty() {
        for s in &args.rest_secret {
            if s.is_empty() {
                return Err(invalid("--rest-secret", "a secret cannot be empty"));
            }
            secrets.push(s.as_bytes().to_vec());
        }
        return Ok(secrets);
    }
    for (i, s) in f.rest_secrets.iter().flatten().enumerate() {
        if s.is_empty() {
            return Err(invalid(
                format!("rest_secrets[{i}]"),
                "a secret cannot be empty",
            ));
        }
        secrets.push(s.as_bytes().to_vec());
    }
    for (i, path) in f.rest_secret_files.iter().flatten().enumerate() {
        let key = format!("rest_secret_files[{i}]");
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            key: key.clone(),
            path: path.clone(),
            source,
        })?;
        let secret = strip_newline(&text);
        if secret.is_empty() {
            return Err(invalid(key, format!("{path:?} holds an empty secret")));
        }
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o004 != 0 {
                warnings.push(format!(
                    "{key}: {path:?} is readable by every user on this host; make it 0640 (group: the service's) or 0600"
                ));
            }
        }
        secrets.push(secret.to_vec());
    }
    Ok(secrets)
}

pub(super) fn strip_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Derives both long-term keys for a password given in the clear.
pub(crate) fn user_from_password(
    name: &str,
    realm: &str,
    password: &str,
    key: &str,
) -> Result<StaticUser, ConfigError> {
    check_user_name(name, key)?;
    if password.is_empty() {
        return Err(invalid(key, format!("user {name:?} has an empty password")));
    }
    let md5 = derive_key(
        PasswordAlgorithm::Md5,
        name.as_bytes(),
        realm.as_bytes(),
        password.as_bytes(),
    );
    let sha = derive_key(
        PasswordAlgorithm::Sha256,
        name.as_bytes(),
        realm.as_bytes(),
        password.as_bytes(),
    );
    Ok(StaticUser {
        name: name.to_string(),
        key_md5: Some(
            md5.as_bytes()
                .try_into()
                .map_err(|_| invalid(key, "MD5 key derivation gave a wrong length"))?,
        ),
        key_sha256: Some(
            sha.as_bytes()
                .try_into()
                .map_err(|_| invalid(key, "SHA-256 key derivation gave a wrong length"))?,
        ),
    })
}

pub(super) fn check_user_name(name: &str, key: &str) -> Result<(), ConfigError> {
    // RFC 8489 §14.3: USERNAME is fewer than 509 bytes.
    if name.is_empty() || name.len() > 508 || name.chars().any(char::is_control) {
        return Err(invalid(
            key,
            format!("{name:?} is not a user name (1–508 bytes, no control characters)"),
        ));
    }
    Ok(())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim().as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A random string of ASCII letters and digits from the OS generator.
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::getrandom(&mut buf).expect("the OS random generator failed");
        // Rejection sampling keeps every character equally likely.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[usize::from(b % 62)] as char);
        }
    }
    out
}
