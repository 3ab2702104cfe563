//! TLS for the client leg: the server configuration every TLS connection of
//! a shard starts from, built from PEM files or made up for a demo.
//!
//! rustls with the `ring` crypto provider. ring builds with a C compiler
//! only (aws-lc-rs, rustls's default, needs CMake and a longer build on
//! every CI run), is small, and covers what a TURN server negotiates:
//! ECDHE with X25519 or P-256, AES-GCM and ChaCha20-Poly1305, ECDSA, Ed25519
//! and RSA certificates. Nothing here needs FIPS, the one reason to prefer
//! aws-lc-rs. Only TLS 1.2 and 1.3 exist in rustls, so older versions are
//! refused by construction.
//!
//! Cipher suites: the server's order decides, AES-128-GCM first, then
//! ChaCha20-Poly1305, then AES-256-GCM (rustls's own order puts AES-256
//! first and follows the client's). What a TURN connection carries is
//! already end-to-end encrypted media plus TURN's own messages; 128-bit
//! AES-GCM, TLS 1.3's mandatory suite, protects those as well as 256-bit
//! does, for about a quarter less CPU per byte, and the relay encrypts
//! every relayed packet. ChaCha20 stays ahead of AES-256 for clients
//! without AES instructions, which put it first themselves.
//!
//! ALPN: `stun.turn` (RFC 7443) is the one protocol offered; a client that
//! offers it gets it, one that offers none still connects, and one that
//! offers only other protocols is refused (RFC 7301 §3.2: no overlap).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

/// RFC 7443: the ALPN protocol id of STUN and TURN.
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";

/// A server certificate and what it is built into.
#[derive(Clone)]
pub struct Identity {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), for logs and demo output.
    pub fingerprint: [u8; 32],
    /// The chain and key as DER, for DTLS (which another library serves
    /// with the same certificate).
    pub der: Arc<IdentityDer>,
}

/// A certificate chain (leaf first) and its private key, as DER.
pub struct IdentityDer {
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC), as the key file had it.
    pub key: Vec<u8>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &fingerprint_hex(&self.fingerprint))
            .finish()
    }
}

/// Why a certificate or key could not be used; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Reads a certificate chain (leaf first) and its private key from PEM
/// files and builds the server configuration.
pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{}: no CERTIFICATE block in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("{}: no usable private key: {e}", key.display())))?;
    identity(chain, key)
}

/// The server configuration for `chain` and `key`: TLS 1.2 and 1.3, no
/// client certificates, ALPN `stun.turn`.
pub fn identity(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Identity, TlsError> {
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError("an empty certificate chain".into()))?;
    let fingerprint: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
    let der = Arc::new(IdentityDer {
        chain: chain.iter().map(|c| c.as_ref().to_vec()).collect(),
        key: key.secret_der().to_vec(),
    });
    // Deprecated for lacking post-quantum key exchange only (see above).
    #[allow(deprecated)]
    let mut provider = provider::default_provider();
    provider.cipher_suites.sort_by_key(suite_rank);
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("the key does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
    config.ignore_client_order = true;
    // Session tickets would let a resumed client skip the certificate; a
    // relay's clients reconnect rarely, and stateless tickets need a key
    // to rotate. Not offered.
    config.send_tls13_tickets = 0;
    Ok(Identity {
        config: Arc::new(config),
        fingerprint,
        der,
    })
}

/// Where a cipher suite comes in the server's order (lower first): by bulk
/// cipher, TLS 1.3 before TLS 1.2 within each, and otherwise as rustls
/// lists them (the sort is stable).
fn suite_rank(suite: &rustls::SupportedCipherSuite) -> (u8, u8) {
    let name = format!("{:?}", suite.suite());
    let cipher = if name.contains("AES_128_GCM") {
        0
    } else if name.contains("CHACHA20") {
        1
    } else {
        2
    };
    (cipher, u8::from(suite.tls13().is_none()))
}

/// A self-signed certificate for `names` (DNS names or IP addresses), made
/// now with a fresh ECDSA P-256 key: for a first start without
/// configuration, so that TLS can be tried at once. Also returns the
/// certificate as PEM (for a client to trust).
pub fn self_signed(names: &[String]) -> Result<(Identity, String), TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError(format!("making a demo key: {e}")))?;
    let params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| TlsError(format!("demo certificate names: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError(format!("making a demo certificate: {e}")))?;
    let pem = cert.pem();
    let der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| TlsError(format!("demo key: {e}")))?;
    let id = identity(vec![cert.der().clone()], der)?;
    Ok((id, pem))
}

/// `AB:CD:…`, the way browsers and `openssl x509 -fingerprint -sha256`
/// print a certificate's fingerprint.
pub fn fingerprint_hex(fp: &[u8; 32]) -> String {
    let mut s = String::with_capacity(95);
    for (i, b) in fp.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_identity_loads_back_from_pem_files() {
        let (id, cert_pem) = self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("uturn-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &cert_pem).unwrap();
        // A second pair, to check a key that does not fit is refused.
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        std::fs::write(&key, other.key_pair.serialize_pem()).unwrap();
        let e = load(&cert, &key).unwrap_err();
        assert!(e.0.contains("does not fit"), "{e}");
        std::fs::write(&key, "").unwrap();
        let e = load(&cert, &key).unwrap_err();
        assert!(e.0.contains("key.pem"), "{e}");
        std::fs::write(&cert, "not pem").unwrap();
        let e = load(&cert, &key).unwrap_err();
        assert!(e.0.contains("no CERTIFICATE"), "{e}");
        // The right pair loads, with the same fingerprint as made.
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.key_pair.serialize_pem()).unwrap();
        let loaded = load(&cert, &key).unwrap();
        let want: [u8; 32] = Sha256::digest(pair.cert.der().as_ref()).into();
        assert_eq!(loaded.fingerprint, want);
        assert_eq!(loaded.config.alpn_protocols, vec![b"stun.turn".to_vec()]);
        assert_ne!(id.fingerprint, loaded.fingerprint);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_server_prefers_aes_128_gcm_then_chacha20() {
        let (id, _) = self_signed(&["localhost".into()]).unwrap();
        assert!(id.config.ignore_client_order);
        #[allow(deprecated)]
        let mut p = provider::default_provider();
        p.cipher_suites.sort_by_key(suite_rank);
        let names: Vec<String> = p
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(names[0], "TLS13_AES_128_GCM_SHA256");
        assert_eq!(names[1], "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
        let chacha = names.iter().position(|n| n.contains("CHACHA20")).unwrap();
        let aes256 = names.iter().position(|n| n.contains("AES_256")).unwrap();
        assert!(chacha < aes256, "{names:?}");
        assert_eq!(names.len(), 9, "every suite kept: {names:?}");
    }

    #[test]
    fn fingerprints_print_as_colon_separated_hex() {
        let mut fp = [0u8; 32];
        fp[0] = 0xAB;
        fp[31] = 0x01;
        let s = fingerprint_hex(&fp);
        assert_eq!(s.len(), 95);
        assert!(s.starts_with("AB:00:") && s.ends_with(":01"));
    }
}
