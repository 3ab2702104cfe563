//! The clients' TLS configuration (rustls with the ring provider): TLS 1.3
//! and 1.2 offered, key exchange groups in a browser's order (X25519 first),
//! ALPN "stun.turn" (RFC 7443), no session resumption (so that every
//! connection pays a full handshake, as a new client would), and the
//! server's certificate checked only when a CA file is given.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// RFC 7443: the ALPN label of TURN over TLS.
pub const ALPN_TURN: &[u8] = b"stun.turn";

/// What every client's TLS session is made from.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// The outcome of a handshake, for the reports.
#[derive(serde::Serialize, Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// "TLSv1_3" or "TLSv1_2".
    pub version: String,
    pub cipher_suite: String,
    /// The key exchange group, e.g. "X25519" or "secp384r1".
    pub kx_group: Option<String>,
    /// The ALPN protocol the server chose, if any.
    pub alpn: Option<String>,
}

impl TlsInfo {
    /// The negotiated parameters of a finished handshake.
    pub(super) fn of(c: &ClientConnection) -> Option<TlsInfo> {
        if c.is_handshaking() {
            return None;
        }
        Some(TlsInfo {
            version: format!("{:?}", c.protocol_version()?),
            cipher_suite: format!("{:?}", c.negotiated_cipher_suite()?.suite()),
            kx_group: c
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name())),
            alpn: c
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        })
    }

    /// "TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519, ALPN stun.turn,
    /// certificate not verified"; `verified`: whether the certificate was
    /// checked (--tls-ca).
    pub fn describe(&self, verified: bool) -> String {
        format!(
            "{} {} {}, ALPN {}, certificate {}",
            self.version,
            self.cipher_suite,
            self.kx_group.as_deref().unwrap_or("-"),
            self.alpn.as_deref().unwrap_or("none"),
            if verified { "verified" } else { "not verified" }
        )
    }
}

impl TlsClient {
    /// The configuration for `server`: the certificate checked against
    /// `ca` (a PEM file) if given, against `sni` or else the server's IP
    /// address; with no `ca`, any certificate is accepted.
    pub fn new(server: IpAddr, ca: Option<&Path>, sni: Option<&str>) -> anyhow::Result<TlsClient> {
        // Deprecated in 0.23.48 only for having no post-quantum key
        // exchange; ring is the workspace's provider (the server's too).
        #[allow(deprecated)]
        let provider = Arc::new(CryptoProvider {
            // ring's default order puts secp384r1 first, so every TLS 1.3
            // ClientHello would carry a P-384 key share (generated at about
            // ten times X25519's cost, and wasted on a TLS 1.2 server):
            // X25519 first, as browsers send it.
            kx_groups: vec![
                ring::kx_group::X25519,
                ring::kx_group::SECP256R1,
                ring::kx_group::SECP384R1,
            ],
            ..ring::default_provider()
        });
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?;
        let mut config = match ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("reading --tls-ca {}", path.display()))?
                {
                    let cert =
                        cert.with_context(|| format!("a certificate in {}", path.display()))?;
                    roots
                        .add(cert)
                        .with_context(|| format!("a CA certificate in {}", path.display()))?;
                }
                if roots.is_empty() {
                    anyhow::bail!("--tls-ca {}: no certificate in the file", path.display());
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider))),
        }
        .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_TURN.to_vec()];
        // Every connection a new client: a full handshake each time.
        config.resumption = Resumption::disabled();
        let name = match sni {
            Some(n) => ServerName::try_from(n.to_string())
                .map_err(|_| anyhow::anyhow!("--tls-sni {n:?} is not a DNS name"))?,
            None => ServerName::IpAddress(server.into()),
        };
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }

    /// A new session, its ClientHello ready to send. Its buffers have no
    /// limit: what waits in them is bounded by the callers (one request,
    /// or one relay burst, per connection).
    pub fn session(&self) -> Result<ClientConnection, rustls::Error> {
        let mut c = ClientConnection::new(self.config.clone(), self.name.clone())?;
        c.set_buffer_limit(None);
        Ok(c)
    }
}

/// Accepts any certificate and any handshake signature: without --tls-ca
/// the server is not authenticated at all, which is what a load generator
/// on loopback needs (self-signed certificates, no CA set up).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
