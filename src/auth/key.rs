//! Key derivation: MD5 / SHA-256 long-term keys, USERHASH, REST passwords.
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

/// RFC 8489 §18.5 password algorithms.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    Md5,
    Sha256,
}

/// A derived long-term key: 16 bytes (MD5) or 32 bytes (SHA-256).
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; 32],
    len: u8,
}

impl Key {
    pub fn from_slice(bytes: &[u8]) -> Option<Key> {
        todo!()
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
    todo!()
}

/// RFC 8489 §14.4: USERHASH = SHA-256("username:realm").
pub fn userhash(username: &[u8], realm: &[u8]) -> [u8; 32] {
    todo!()
}

/// TURN REST password: base64(HMAC-SHA1(secret, username)); always 28 bytes.
pub fn rest_password(secret: &[u8], username: &[u8]) -> [u8; 28] {
    todo!()
}
