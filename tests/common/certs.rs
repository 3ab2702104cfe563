//! Certificates made by a test: a CA of its own and server certificates
//! for "localhost" signed by it, written as PEM files (the key 0600).

use std::os::unix::fs::PermissionsExt;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256};

use super::*;

/// A test's certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate, PEM: what clients trust.
    pub pem: String,
}

/// A server certificate and its key.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The leaf certificate, DER (what a client sees).
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "uturn e2e test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        let pem = cert.pem();
        TestCa { cert, key, pem }
    }

    /// A certificate for "localhost" and 127.0.0.1 with a fresh key.
    pub fn issue(&self) -> ServerCert {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("server key");
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server certificate params");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server certificate");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl ServerCert {
    /// Writes the certificate and key to `cert` and `key` (0600), replacing
    /// what is there.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem)
            .unwrap_or_else(|e| panic!("write {}: {e}", cert.display()));
        write_private(key, self.key_pem.as_bytes());
    }
}

/// Writes `bytes` to `path` with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // A file that existed keeps its mode through `open`.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    f.write_all(bytes)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
