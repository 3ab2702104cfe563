//! Building responses: error codes with short fixed reason phrases, and the
//! common tail (SOFTWARE, integrity, FINGERPRINT).

use uturn_stun::{Class, EncodeError, Message, MessageWriter};

/// The STUN/TURN error codes the relay sends, with fixed short phrases
/// (SECURITY.md rule 12: no verbose reasons).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    TryAlternate,
    BadRequest,
    Unauthorized,
    Forbidden,
    UnknownAttribute,
    AllocationMismatch,
    StaleNonce,
    AddressFamilyNotSupported,
    WrongCredentials,
    UnsupportedTransport,
    PeerAddressFamilyMismatch,
    ConnectionAlreadyExists,
    ConnectionFailure,
    AllocationQuotaReached,
    InsufficientCapacity,
}

impl Code {
    pub(crate) fn number(self) -> u16 {
        match self {
            Code::TryAlternate => 300,
            Code::BadRequest => 400,
            Code::Unauthorized => 401,
            Code::Forbidden => 403,
            Code::UnknownAttribute => 420,
            Code::AllocationMismatch => 437,
            Code::StaleNonce => 438,
            Code::AddressFamilyNotSupported => 440,
            Code::WrongCredentials => 441,
            Code::UnsupportedTransport => 442,
            Code::PeerAddressFamilyMismatch => 443,
            Code::ConnectionAlreadyExists => 446,
            Code::ConnectionFailure => 447,
            Code::AllocationQuotaReached => 486,
            Code::InsufficientCapacity => 508,
        }
    }

    pub(crate) fn phrase(self) -> &'static str {
        match self {
            Code::TryAlternate => "Try Alternate",
            Code::BadRequest => "Bad Request",
            Code::Unauthorized => "Unauthorized",
            Code::Forbidden => "Forbidden",
            Code::UnknownAttribute => "Unknown Attribute",
            Code::AllocationMismatch => "Allocation Mismatch",
            Code::StaleNonce => "Stale Nonce",
            Code::AddressFamilyNotSupported => "Address Family not Supported",
            Code::WrongCredentials => "Wrong Credentials",
            Code::UnsupportedTransport => "Unsupported Transport Protocol",
            Code::PeerAddressFamilyMismatch => "Peer Address Family Mismatch",
            Code::ConnectionAlreadyExists => "Connection Already Exists",
            Code::ConnectionFailure => "Connection Timeout or Failure",
            Code::AllocationQuotaReached => "Allocation Quota Reached",
            Code::InsufficientCapacity => "Insufficient Capacity",
        }
    }
}

/// Starts a response (success or error) to `req` in `buf`.
pub(crate) fn start<'b>(
    buf: &'b mut [u8],
    req: &Message<'_>,
    class: Class,
) -> Result<MessageWriter<'b>, EncodeError> {
    MessageWriter::new(buf, req.method(), class, req.transaction_id())
}

/// Starts an error response carrying ERROR-CODE.
pub(crate) fn error<'b>(
    buf: &'b mut [u8],
    req: &Message<'_>,
    code: Code,
) -> Result<MessageWriter<'b>, EncodeError> {
    let mut w = start(buf, req, Class::Error)?;
    w.error_code(code.number(), code.phrase())?;
    Ok(w)
}
