//! Allocation quotas shared by all shards (control path only).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Limits; 0 means "no limit" for none of them — every limit is enforced.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub allocations_per_user: u32,
    pub total_allocations: u32,
    pub permissions_per_allocation: u32,
    pub channels_per_allocation: u32,
    /// TCP allocations (RFC 6062): peer connections at once, and of those
    /// the ones not yet bound to a data connection (connecting, or waiting
    /// for the client's ConnectionBind).
    pub peer_connections_per_allocation: u32,
    pub pending_connections_per_allocation: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            allocations_per_user: 10,
            total_allocations: 10_000,
            permissions_per_allocation: 32,
            channels_per_allocation: 32,
            peer_connections_per_allocation: 16,
            pending_connections_per_allocation: 8,
        }
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
///
/// Shared through an `Arc`; touched only when an allocation is created or
/// deleted, so a mutex is fine. A user's entry is removed when their count
/// drops to zero: memory is bounded by the number of live allocations.
pub struct AllocationLedger {
    /// The per-user and total limits; replaced by `set_limits` on reload.
    per_user: AtomicU32,
    max_total: AtomicU32,
    users: Mutex<HashMap<Box<[u8]>, u32>>,
    /// Written only under `users`' lock; read lock-free by `active`.
    total: AtomicU32,
}

impl AllocationLedger {
    pub fn new(limits: Quotas) -> Self {
        AllocationLedger {
            per_user: AtomicU32::new(limits.allocations_per_user),
            max_total: AtomicU32::new(limits.total_allocations),
            users: Mutex::new(HashMap::new()),
            total: AtomicU32::new(0),
        }
    }

    /// Takes one allocation for `user`, or says which quota is full.
    pub fn acquire(&self, user: &[u8]) -> Result<(), QuotaExceeded> {
        let mut users = self.lock();
        let per_user = self.per_user.load(Ordering::Relaxed);
        // RFC 8656 §7.2: server out of capacity → 508; checked first.
        if self.total.load(Ordering::Relaxed) >= self.max_total.load(Ordering::Relaxed) {
            return Err(QuotaExceeded::Total);
        }
        // RFC 8656 §7.2: per-user quota reached → 486.
        match users.get_mut(user) {
            Some(n) if *n >= per_user => return Err(QuotaExceeded::User),
            Some(n) => *n += 1,
            None if per_user == 0 => return Err(QuotaExceeded::User),
            None => {
                users.insert(user.into(), 1);
            }
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Gives one back (allocation deleted or expired). Releasing for a user
    /// that holds nothing is ignored, so a double release cannot drive the
    /// counts below what is really live.
    pub fn release(&self, user: &[u8]) {
        let mut users = self.lock();
        let Some(n) = users.get_mut(user) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n == 0 {
            users.remove(user);
        }
        let total = self.total.load(Ordering::Relaxed);
        self.total.store(total.saturating_sub(1), Ordering::Relaxed);
    }

    /// Replaces the per-user and total limits (reload). Allocations already
    /// over a lowered limit stay; new ones wait until the count is below it.
    pub fn set_limits(&self, limits: Quotas) {
        let _users = self.lock();
        self.per_user
            .store(limits.allocations_per_user, Ordering::Relaxed);
        self.max_total
            .store(limits.total_allocations, Ordering::Relaxed);
    }

    /// The live allocations one user may hold.
    pub fn per_user_limit(&self) -> u32 {
        self.per_user.load(Ordering::Relaxed)
    }

    /// The live allocations all users may hold together.
    pub fn total_limit(&self) -> u32 {
        self.max_total.load(Ordering::Relaxed)
    }

    /// Live allocations in total.
    pub fn active(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// Live allocations of `user`.
    pub fn active_for(&self, user: &[u8]) -> u32 {
        self.lock().get(user).copied().unwrap_or(0)
    }

    /// Users holding at least one allocation.
    pub fn users(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, u32>> {
        // A panic elsewhere while holding the lock leaves the map consistent
        // (every update is a single step), so a poisoned lock is still usable.
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limits(per_user: u32, total: u32) -> Quotas {
        Quotas {
            allocations_per_user: per_user,
            total_allocations: total,
            ..Quotas::default()
        }
    }

    #[test]
    fn limits_change_on_reload_and_live_allocations_stay() {
        let l = AllocationLedger::new(limits(2, 10));
        l.acquire(b"u").unwrap();
        l.acquire(b"u").unwrap();
        assert_eq!(l.acquire(b"u"), Err(QuotaExceeded::User));
        l.set_limits(limits(3, 10));
        l.acquire(b"u").unwrap();
        // Lowered below what is live: nothing is taken away, nothing new is given.
        l.set_limits(limits(1, 2));
        assert_eq!(l.active_for(b"u"), 3);
        assert_eq!(l.acquire(b"v"), Err(QuotaExceeded::Total));
        l.release(b"u");
        l.release(b"u");
        assert_eq!(l.acquire(b"u"), Err(QuotaExceeded::User));
        l.acquire(b"v").unwrap();
    }

    #[test]
    fn per_user_limit_then_release() {
        let l = AllocationLedger::new(limits(2, 100));
        assert_eq!(l.acquire(b"alice"), Ok(()));
        assert_eq!(l.acquire(b"alice"), Ok(()));
        assert_eq!(l.acquire(b"alice"), Err(QuotaExceeded::User));
        assert_eq!(l.acquire(b"bob"), Ok(()));
        assert_eq!(l.active(), 3);
        assert_eq!(l.active_for(b"alice"), 2);
        l.release(b"alice");
        assert_eq!(l.acquire(b"alice"), Ok(()));
        assert_eq!(l.active(), 3);
    }

    #[test]
    fn total_limit_checked_before_user_limit() {
        let l = AllocationLedger::new(limits(1, 2));
        assert_eq!(l.acquire(b"a"), Ok(()));
        assert_eq!(l.acquire(b"b"), Ok(()));
        // Both quotas are full for "a": the server-wide one wins (508).
        assert_eq!(l.acquire(b"a"), Err(QuotaExceeded::Total));
        assert_eq!(l.acquire(b"c"), Err(QuotaExceeded::Total));
        l.release(b"b");
        assert_eq!(l.acquire(b"a"), Err(QuotaExceeded::User));
        assert_eq!(l.acquire(b"c"), Ok(()));
    }

    #[test]
    fn zero_limits_refuse_everything() {
        let l = AllocationLedger::new(limits(0, 10));
        assert_eq!(l.acquire(b"a"), Err(QuotaExceeded::User));
        let l = AllocationLedger::new(limits(10, 0));
        assert_eq!(l.acquire(b"a"), Err(QuotaExceeded::Total));
        assert_eq!(l.active(), 0);
        assert_eq!(l.users(), 0);
    }

    #[test]
    fn entries_removed_at_zero_and_unknown_release_ignored() {
        let l = AllocationLedger::new(limits(5, 100));
        l.acquire(b"u").expect("room");
        l.acquire(b"v").expect("room");
        assert_eq!(l.users(), 2);
        l.release(b"u");
        assert_eq!(l.users(), 1);
        l.release(b"u");
        l.release(b"nobody");
        assert_eq!(l.active(), 1);
        l.release(b"v");
        assert_eq!(l.active(), 0);
        assert_eq!(l.users(), 0);
    }

    #[test]
    fn poisoned_lock_still_works() {
        let l = Arc::new(AllocationLedger::new(limits(5, 100)));
        l.acquire(b"u").expect("room");
        let l2 = Arc::clone(&l);
        let r = std::thread::spawn(move || {
            let _guard = l2.users.lock();
            panic!("poison the ledger");
        })
        .join();
        assert!(r.is_err());
        assert!(l.users.is_poisoned());
        assert_eq!(l.acquire(b"u"), Ok(()));
        l.release(b"u");
        assert_eq!(l.active_for(b"u"), 1);
    }

    #[test]
    fn concurrent_acquire_release() {
        const THREADS: usize = 8;
        const ROUNDS: usize = 2_000;
        let l = Arc::new(AllocationLedger::new(limits(3, 16)));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    let user = [b'u', (t % 4) as u8];
                    let mut held = 0u32;
                    for i in 0..ROUNDS {
                        if i % 3 == 2 && held > 0 {
                            l.release(&user);
                            held -= 1;
                        } else if l.acquire(&user).is_ok() {
                            held += 1;
                        }
                        assert!(l.active() <= 16);
                    }
                    for _ in 0..held {
                        l.release(&user);
                    }
                    held
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(l.active(), 0);
        assert_eq!(l.users(), 0);
    }

    #[test]
    fn concurrent_limits_hold() {
        // Many threads race for the last slots: never more than the limits.
        let l = Arc::new(AllocationLedger::new(limits(5, 20)));
        let handles: Vec<_> = (0..10u8)
            .map(|t| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    let user = [t % 2];
                    (0..50).filter(|_| l.acquire(&user).is_ok()).count()
                })
            })
            .collect();
        let granted: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(granted, 10); // two users × 5 each, under the total of 20
        assert_eq!(l.active(), 10);
    }
}
