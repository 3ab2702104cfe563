//! Allocation quotas shared by all shards (control path only).
// STUB: signatures are the contract; bodies are being written.
#![allow(unused_variables, dead_code)]

/// Limits; 0 means "no limit" for none of them — every limit is enforced.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub allocations_per_user: u32,
    pub total_allocations: u32,
    pub permissions_per_allocation: u32,
    pub channels_per_allocation: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { allocations_per_user: 10, total_allocations: 10_000, permissions_per_allocation: 32, channels_per_allocation: 32 }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// The user has too many allocations: 486.
    User,
    /// The server is full: 508.
    Total,
}

/// Counts live allocations per user and in total, across shards.
pub struct AllocationLedger {
    limits: Quotas,
}

impl AllocationLedger {
    pub fn new(limits: Quotas) -> Self {
        todo!()
    }
    /// Takes one allocation for `user`, or says which quota is full.
    pub fn acquire(&self, user: &[u8]) -> Result<(), QuotaExceeded> {
        todo!()
    }
    /// Gives one back (allocation deleted or expired).
    pub fn release(&self, user: &[u8]) {
        todo!()
    }
    pub fn active(&self) -> u32 {
        todo!()
    }
}
