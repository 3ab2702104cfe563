//! The events an observer is told about, in order, with what it needs to
//! write a useful log line (and nothing the relay had to allocate for it).

use std::sync::{Arc, Mutex};

use super::*;
use crate::policy::PeerDenied;

/// Keeps every event it is handed, as text.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Observer for Recorder {
    fn event(&mut self, event: Event<'_>) {
        let line = match event {
            Event::AllocationCreated {
                user,
                client,
                relay,
            } => format!(
                "created {} {client} {}",
                String::from_utf8_lossy(user),
                relay.ip()
            ),
            Event::AllocationEnded { user, client, why } => {
                format!("ended {} {client} {why}", String::from_utf8_lossy(user))
            }
            Event::QuotaReached {
                quota_id,
                client,
                quota,
                limit,
                code,
            } => format!(
                "quota {} {client} {quota}={limit} {code}",
                String::from_utf8_lossy(quota_id)
            ),
            Event::PeerRefused { peer, why } => format!("peer {peer} {why:?}"),
        };
        self.0.lock().unwrap().push(line);
    }
}

#[test]
fn an_allocations_life_reaches_the_observer() {
    let quotas = Quotas {
        allocations_per_user: 1,
        ..Opts::default().quotas
    };
    let mut h = Harness::with(Opts {
        quotas,
        ..Opts::default()
    });
    let seen = Recorder::default();
    h.relay.set_observer(Box::new(seen.clone()));

    let mut a1 = Client::new("203.0.113.41:1", md5("alice", "alice-pw"));
    let mut a2 = Client::new("203.0.113.41:2", md5("alice", "alice-pw"));
    a1.allocate(&mut h);
    assert_eq!(a2.request(&mut h, Method::Allocate, &udp).code(), Some(486));
    assert_eq!(a1.permit(&mut h, "10.0.0.1:80").code(), Some(403));
    assert_eq!(a1.permit(&mut h, "198.51.100.7:0").code(), Some(403));
    a1.refresh(&mut h, 0);
    let mut b = Client::new("203.0.113.42:1", md5("bob", "bob-pw"));
    b.allocate(&mut h);
    h.advance(3600);

    assert_eq!(
        *seen.0.lock().unwrap(),
        [
            "created alice 203.0.113.41:1 192.0.2.1",
            "quota alice 203.0.113.41:2 quotas.allocations_per_user=1 486",
            format!("peer 10.0.0.1:80 {:?}", PeerDenied::Denied).as_str(),
            format!("peer 198.51.100.7:0 {:?}", PeerDenied::BadPort).as_str(),
            "ended alice 203.0.113.41:1 deleted by the client",
            "created bob 203.0.113.42:1 192.0.2.1",
            "ended bob 203.0.113.42:1 expired",
        ]
    );
}
