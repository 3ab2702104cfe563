//! TURN over DTLS (RFC 7350) for the client leg, sans-IO: datagrams in,
//! datagrams out; no sockets, no clock (callers pass the time), no threads,
//! no `unsafe`.
//!
//! Two parts:
//!
//! * [`front`]: the front door of a DTLS listener, for datagrams from an
//!   address that has no session. It is stateless: a ClientHello without a
//!   valid cookie gets a HelloVerifyRequest (RFC 6347 §4.2.1) and nothing
//!   is kept; one with a valid cookie (an HMAC over the client's address,
//!   keyed by a secret that rotates, [`cookie`]) is the only thing that may
//!   make a session. Everything else is dropped. Its parser ([`record`])
//!   reads only what the cookie check needs and never panics.
//! * [`session`]: one client's DTLS 1.2 session, an OpenSSL `SSL` object
//!   fed whole datagrams through a memory pipe.
//!
//! Why OpenSSL and not `dimpl`: dimpl (pure Rust, sans-IO) is the nicer
//! fit in shape, but (0.9) its server makes its cookie inside each
//! per-client instance, from the ClientHello's random only, so a session
//! object must exist before the cookie is checked, and the cookie does not
//! prove the address (one cookie, replayed from spoofed sources, would pass);
//! a fresh instance cannot take over from an outside cookie check either,
//! since it expects the ClientHello's message_seq to be 0. It also signs
//! with ECDSA keys only, while the TLS certificate that DTLS shares may be
//! RSA. OpenSSL (Debian's libssl, 3.0) serves DTLS 1.2 with any key type
//! rustls accepts, is what coturn and its clients speak, and lets the cookie
//! exchange be ours: see [`session`] for how a session starts from a
//! ClientHello whose cookie the front door already checked. OpenSSL 3.0 has
//! no DTLS 1.3, so neither has uturn yet.
#![forbid(unsafe_code)]

pub mod cookie;
pub mod front;
pub mod record;
pub mod session;

pub use cookie::CookieKey;
pub use front::{Front, Verdict};
pub use session::{DtlsContext, Session, SessionError};

#[cfg(test)]
mod tests;
