//! What the server sends the test client: STUN responses (`Reply`, parsed
//! on access), what a peer sent through the relay (`Relayed`), and the
//! assertions tests make on them.

use super::*;

/// A STUN message received from the server (owned bytes, parsed on access).
#[derive(Clone)]
pub struct Reply {
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("Reply holds a parsed message")
    }
    pub fn method(&self) -> Method {
        self.msg().method()
    }
    pub fn class(&self) -> Class {
        self.msg().class()
    }
    pub fn tid(&self) -> TransactionId {
        *self.msg().transaction_id()
    }
    pub fn is_success(&self) -> bool {
        self.class() == Class::Success
    }
    /// The raw value of the first trusted attribute of type `typ`.
    pub fn raw(&self, typ: u16) -> Option<Vec<u8>> {
        self.msg().get(typ).map(|a| a.value.to_vec())
    }
    pub fn has(&self, typ: u16) -> bool {
        self.msg().get(typ).is_some()
    }
    fn decoded<T>(&self, typ: u16, f: impl FnOnce(Attribute<'_>) -> Option<T>) -> Option<T> {
        let m = self.msg();
        let raw = m.get(typ)?;
        match Attribute::decode(raw, m.transaction_id()) {
            Ok(a) => f(a),
            Err(e) => panic!(
                "attribute 0x{typ:04x} in {} does not decode: {e:?}",
                self.describe()
            ),
        }
    }
    /// ERROR-CODE number (e.g. 401).
    pub fn error_code(&self) -> Option<u16> {
        self.decoded(attr::ERROR_CODE, |a| match a {
            Attribute::ErrorCode { code, .. } => Some(code),
            _ => None,
        })
    }
    pub fn error_reason(&self) -> String {
        self.decoded(attr::ERROR_CODE, |a| match a {
            Attribute::ErrorCode { reason, .. } => {
                Some(String::from_utf8_lossy(reason).into_owned())
            }
            _ => None,
        })
        .unwrap_or_default()
    }
    /// An XOR-ed address attribute.
    pub fn xor_addr(&self, typ: u16) -> Option<SocketAddr> {
        let m = self.msg();
        let raw = m.get(typ)?;
        Some(
            attr::decode_xor_address(raw.value, m.transaction_id()).unwrap_or_else(|e| {
                panic!("0x{typ:04x} in {} does not decode: {e:?}", self.describe())
            }),
        )
    }
    /// ALTERNATE-SERVER (a plain, not XOR-ed, address).
    pub fn alternate_server(&self) -> Option<SocketAddr> {
        self.decoded(attr::ALTERNATE_SERVER, |a| match a {
            Attribute::AlternateServer(s) => Some(s),
            _ => None,
        })
    }
    pub fn lifetime(&self) -> Option<u32> {
        self.decoded(attr::LIFETIME, |a| match a {
            Attribute::Lifetime(v) => Some(v),
            _ => None,
        })
    }
    /// e.g. "Allocate Error 401 (Unauthorized)".
    pub fn describe(&self) -> String {
        let m = match Message::parse(&self.bytes) {
            Ok(m) => m,
            Err(e) => return format!("unparseable ({e:?}) {}", show(&self.bytes)),
        };
        let mut s = format!("{:?} {:?}", m.method(), m.class());
        if let Some(raw) = m.get(attr::ERROR_CODE) {
            match Attribute::decode(raw, m.transaction_id()) {
                Ok(Attribute::ErrorCode { code, reason }) => {
                    s += &format!(" {code} ({})", String::from_utf8_lossy(reason))
                }
                other => s += &format!(" ERROR-CODE undecodable: {other:?}"),
            }
        }
        let types: Vec<String> = m
            .raw_attributes()
            .map(|a| format!("0x{:04x}", a.typ))
            .collect();
        s += &format!(" attrs [{}]", types.join(" "));
        s
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What the client received from a peer through the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayed {
    /// A Data indication (RFC 8656 §11.6).
    Data { peer: SocketAddr, data: Vec<u8> },
    /// A ChannelData message (RFC 8656 §12.4).
    Channel { number: u16, data: Vec<u8> },
}

/// Decodes a datagram from the server as a Data indication or ChannelData.
pub fn parse_relayed(d: &[u8]) -> Option<Relayed> {
    match d.first() {
        Some(0x40..=0x4f) => {
            let cd = ChannelData::parse(d)
                .unwrap_or_else(|e| panic!("bad ChannelData from server ({e:?}): {}", show(d)));
            Some(Relayed::Channel {
                number: cd.number,
                data: cd.payload.to_vec(),
            })
        }
        Some(0x00..=0x03) => {
            let m = Message::parse(d).ok()?;
            if m.method() != Method::Data || m.class() != Class::Indication {
                return None;
            }
            let tid = m.transaction_id();
            let peer = m
                .get(attr::XOR_PEER_ADDRESS)
                .map(|a| attr::decode_xor_address(a.value, tid));
            let data = m.get(attr::DATA).map(|a| a.value.to_vec());
            match (peer, data) {
                (Some(Ok(peer)), Some(data)) => Some(Relayed::Data { peer, data }),
                _ => panic!(
                    "Data indication without a valid XOR-PEER-ADDRESS and DATA: {}",
                    show(d)
                ),
            }
        }
        _ => None,
    }
}

/// A one-line description of raw STUN bytes (for failure messages).
pub fn describe_bytes(d: &[u8]) -> String {
    Reply { bytes: d.to_vec() }.describe()
}

/// Panics with a description unless `r` is a success response.
#[track_caller]
pub fn assert_success(r: &Reply, what: &str) {
    assert!(
        r.is_success(),
        "{what}: expected success, got {}",
        r.describe()
    );
}

/// Panics unless `r` is an error response with one of `codes`.
#[track_caller]
pub fn assert_error(r: &Reply, codes: &[u16], what: &str) -> u16 {
    let code = r.error_code();
    assert!(
        r.class() == Class::Error && code.is_some_and(|c| codes.contains(&c)),
        "{what}: expected error {codes:?}, got {}",
        r.describe()
    );
    code.unwrap()
}
