//! Peer-address policy (SECURITY.md rules 6–8), quotas, and rate limits for
//! unauthenticated replies.

pub mod peer;
pub mod quota;
pub mod rate;

pub use peer::{PeerDenied, PeerPolicy};
pub use quota::{AllocationLedger, QuotaExceeded, Quotas};
pub use rate::RateLimiter;
