//! Key derivation: MD5 / SHA-256 long-term keys, USERHASH, REST passwords.
//!
//! Usernames, realms and passwords are taken as the bytes given: no SASLprep
//! (RFC 4013) or OpaqueString (RFC 8265) processing is applied. Operators and
//! credential minters must hand over already-prepared strings; for the ASCII
//! names and base64 passwords of TURN REST credentials this makes no
//! difference.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// RFC 8489 §18.5 password algorithms.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    Md5,
    Sha256,
}

impl PasswordAlgorithm {
    /// The RFC 8489 §18.5 registry number.
    pub fn number(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => uturn_stun::attr::PASSWORD_ALGORITHM_MD5,
            PasswordAlgorithm::Sha256 => uturn_stun::attr::PASSWORD_ALGORITHM_SHA256,
        }
    }

    /// The algorithm with registry number `n`, if this server knows it.
    pub fn from_number(n: u16) -> Option<PasswordAlgorithm> {
        match n {
            uturn_stun::attr::PASSWORD_ALGORITHM_MD5 => Some(PasswordAlgorithm::Md5),
            uturn_stun::attr::PASSWORD_ALGORITHM_SHA256 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }

    /// Length of the key this algorithm derives.
    pub fn key_len(self) -> usize {
        match self {
            PasswordAlgorithm::Md5 => 16,
            PasswordAlgorithm::Sha256 => 32,
        }
    }
}

/// A derived long-term key: 16 bytes (MD5) or 32 bytes (SHA-256).
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; 32],
    len: u8,
}

impl Key {
    pub fn from_slice(bytes: &[u8]) -> Option<Key> {
        if bytes.len() != 16 && bytes.len() != 32 {
            return None;
        }
        let mut k = Key {
            bytes: [0; 32],
            len: bytes.len() as u8,
        };
        k.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(k)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(<{} bytes>)", self.len)
    }
}

/// RFC 8489 §9.2.2: key = MD5 or SHA-256 of "username:realm:password".
pub fn derive_key(alg: PasswordAlgorithm, username: &[u8], realm: &[u8], password: &[u8]) -> Key {
    let mut k = Key {
        bytes: [0; 32],
        len: 0,
    };
    match alg {
        PasswordAlgorithm::Md5 => {
            let d = Md5::new()
                .chain_update(username)
                .chain_update(b":")
                .chain_update(realm)
                .chain_update(b":")
                .chain_update(password)
                .finalize();
            k.bytes[..16].copy_from_slice(&d);
            k.len = 16;
        }
        PasswordAlgorithm::Sha256 => {
            let d = Sha256::new()
                .chain_update(username)
                .chain_update(b":")
                .chain_update(realm)
                .chain_update(b":")
                .chain_update(password)
                .finalize();
            k.bytes.copy_from_slice(&d);
            k.len = 32;
        }
    }
    k
}

/// RFC 8489 §14.4: USERHASH = SHA-256("username:realm").
pub fn userhash(username: &[u8], realm: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(username)
        .chain_update(b":")
        .chain_update(realm)
        .finalize()
        .into()
}

/// TURN REST password: base64(HMAC-SHA1(secret, username)); always 28 bytes.
pub fn rest_password(secret: &[u8], username: &[u8]) -> [u8; 28] {
    let mut mac = hmac_sha1(secret);
    mac.update(username);
    let digest: [u8; 20] = mac.finalize().into_bytes().into();
    let mut out = [0u8; 28];
    // 20 bytes are always 28 base64 characters with padding.
    match STANDARD.encode_slice(digest, &mut out) {
        Ok(28) => out,
        _ => [0; 28],
    }
}

/// HMAC-SHA1 keyed with `key`. HMAC takes keys of any length (longer ones
/// are hashed first), so construction cannot fail.
fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    match <Hmac<Sha1> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn key_from_slice_lengths() {
        assert!(Key::from_slice(&[1; 16]).is_some());
        assert!(Key::from_slice(&[1; 32]).is_some());
        for n in [0, 15, 17, 20, 31, 33, 64] {
            assert!(Key::from_slice(&vec![1; n]).is_none(), "{n}");
        }
        let k = Key::from_slice(&[7; 16]).expect("16 bytes");
        assert_eq!(k.as_bytes(), &[7; 16]);
        assert_eq!(format!("{k:?}"), "Key(<16 bytes>)");
    }

    #[test]
    fn md5_key() {
        // MD5("user:realm:pass"), computed independently.
        let k = derive_key(PasswordAlgorithm::Md5, b"user", b"realm", b"pass");
        assert_eq!(hex(k.as_bytes()), "8493fbc53ba582fb4c044c456bdc40eb");
    }

    #[test]
    fn sha256_key() {
        // SHA-256("user:example.org:secret")
        let k = derive_key(
            PasswordAlgorithm::Sha256,
            b"user",
            b"example.org",
            b"secret",
        );
        assert_eq!(
            hex(k.as_bytes()),
            "bf9f8cc2da128fcb78077f794a818f9d3ccf550dab291cb21c82f29a153b3355"
        );
    }

    #[test]
    fn userhash_rfc8489_b1_vector() {
        // RFC 8489 Appendix B.1: USERHASH of "マトリックス" in realm "example.org".
        let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}".as_bytes();
        assert_eq!(
            hex(&userhash(user, b"example.org")),
            "4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704"
        );
    }

    #[test]
    fn rest_password_is_base64_hmac_sha1() {
        // HMAC-SHA1(key="key", "The quick brown fox jumps over the lazy dog")
        // = de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9
        let p = rest_password(b"key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(&p, b"3nybhbi3iqa8ino29wqQcBydtNk=");
        let p = rest_password(b"s3cret", b"1700000000:alice");
        assert_eq!(p.len(), 28);
        assert_eq!(p[27], b'=');
    }

    #[test]
    fn algorithm_numbers() {
        for a in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
            assert_eq!(PasswordAlgorithm::from_number(a.number()), Some(a));
        }
        assert_eq!(PasswordAlgorithm::Md5.number(), 1);
        assert_eq!(PasswordAlgorithm::Sha256.number(), 2);
        assert_eq!(PasswordAlgorithm::from_number(0), None);
        assert_eq!(PasswordAlgorithm::from_number(3), None);
    }
}
