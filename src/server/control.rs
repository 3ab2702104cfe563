//! The main thread once the shards run: it waits for signals and
//! control-socket requests and carries them out (reload, drain, status),
//! and notices a shard that stops on its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::startup::own_addresses;
use super::Event;
use crate::config::{Config, Reloadable, RunArgs};
use crate::logging::LogControl;
use crate::metrics::ControlState;
use crate::policy::AllocationLedger;
use crate::shard::{collect_reports, ShardCommand, ShardHandle};

/// How often a drain checks whether the allocations have ended.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// How often a drain says how many allocations are left.
const DRAIN_PROGRESS: Duration = Duration::from_secs(10);
/// How long the control thread waits for shards' counters.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// How the main loop ended.
pub(super) enum Outcome {
    /// Asked to stop, drain done (or cut short).
    Stopped,
    /// A shard stopped on its own: it failed.
    ShardStopped(usize),
}

/// A drain under way.
pub(super) struct Drain {
    deadline: Instant,
    next_progress: Instant,
}

/// The main thread's state once the shards run: reloads and drains.
pub(super) struct Control<'a> {
    pub(super) args: &'a RunArgs,
    /// The configuration in force (restart-only keys as at start-up).
    pub(super) current: Config,
    /// Kept across reloads, so that nonces already handed out stay valid.
    pub(super) nonce_key: [u8; 32],
    pub(super) bound: Vec<SocketAddr>,
    pub(super) ledger: Arc<AllocationLedger>,
    pub(super) log: Option<LogControl>,
    pub(super) controls: &'a [ShardHandle],
    pub(super) state: Arc<ControlState>,
    pub(super) drain: Option<Drain>,
}

impl Control<'_> {
    pub(super) fn serve(
        &mut self,
        events: &Receiver<Event>,
        done: &Receiver<usize>,
        shutdown: &AtomicBool,
    ) -> Outcome {
        loop {
            let tick = if self.drain.is_some() {
                DRAIN_POLL
            } else {
                Duration::from_secs(3600)
            };
            crossbeam_channel::select! {
                recv(events) -> ev => match ev {
                    Ok(Event::Stop(sig)) => {
                        // Also set by the signal handler; set here for the
                        // control socket's sake and for tests.
                        shutdown.store(true, Ordering::SeqCst);
                        if self.drain.is_none() {
                            self.start_drain(sig);
                        }
                    }
                    Ok(Event::Reload { by, reply }) => {
                        let result = self.reload(by);
                        if let Some(reply) = reply {
                            let _ = reply.send(result);
                        }
                    }
                    Ok(Event::Status(reply)) => {
                        let _ = reply.send(Ok(self.status()));
                    }
                    // Only the signal thread holds no sender when the
                    // control socket is off; it never ends on its own.
                    Err(_) => std::thread::sleep(DRAIN_POLL),
                },
                // Shards stop on their own only when they fail.
                recv(done) -> index => return Outcome::ShardStopped(index.unwrap_or(0)),
                default(tick) => {}
            }
            if self.drain.is_some() && self.drain_finished() {
                return Outcome::Stopped;
            }
        }
    }

    fn start_drain(&mut self, sig: &'static str) {
        let timeout = self.current.reloadable.drain.timeout;
        let alternate = self.current.reloadable.drain.alternate_server;
        self.state.draining.store(true, Ordering::Relaxed);
        for c in self.controls {
            c.send(ShardCommand::Drain(alternate));
        }
        let now = Instant::now();
        self.drain = Some(Drain {
            deadline: now + timeout,
            next_progress: now + DRAIN_PROGRESS,
        });
        let refusal = alternate.map_or("508".to_string(), |a| {
            format!("300 with ALTERNATE-SERVER {a} (508 for the other address family)")
        });
        tracing::info!(
            signal = sig,
            timeout_secs = timeout.as_secs(),
            "draining: new allocations get {refusal}; existing ones are served until they end \
             or the timeout passes; a second signal exits at once"
        );
    }

    /// True when every allocation has ended or the drain timed out.
    fn drain_finished(&mut self) -> bool {
        let Some(d) = &mut self.drain else {
            return false;
        };
        let now = Instant::now();
        if now >= d.deadline {
            let left = live_allocations(self.controls);
            tracing::info!(
                allocations_left = left.map_or("unknown".to_string(), |n| n.to_string()),
                "drain timeout reached: stopping"
            );
            return true;
        }
        match live_allocations(self.controls) {
            Some(0) => {
                tracing::info!("drained: every allocation has ended; stopping");
                true
            }
            left => {
                if now >= d.next_progress {
                    d.next_progress = now + DRAIN_PROGRESS;
                    tracing::info!(
                        allocations_left = left.map_or("unknown".to_string(), |n| n.to_string()),
                        secs_to_timeout = d.deadline.saturating_duration_since(now).as_secs(),
                        "draining"
                    );
                }
                false
            }
        }
    }

    fn status(&self) -> String {
        let live = live_allocations(self.controls).map_or("unknown".to_string(), |n| n.to_string());
        let draining = self.drain.is_some();
        format!(
            "allocations {live}; draining {}; reloads ok {}, failed {}",
            if draining { "yes" } else { "no" },
            self.state.reloads_ok.load(Ordering::Relaxed),
            self.state.reloads_failed.load(Ordering::Relaxed)
        )
    }

    /// Reads the configuration again and hands shards the new credentials,
    /// peer policy and quotas. Nothing changes when the new file is invalid.
    fn reload(&mut self, by: &'static str) -> Result<String, String> {
        let result = self.try_reload();
        match &result {
            Ok(summary) => {
                self.state.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(by, "configuration reloaded: {summary}");
            }
            Err(e) => {
                self.state.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    by,
                    "reload rejected, the running configuration stays in force: {e}"
                );
            }
        }
        result
    }

    fn try_reload(&mut self) -> Result<String, String> {
        if self.args.config.is_none() {
            return Err(
                "uturn was started without --config: there is no file to reload".to_string(),
            );
        }
        let new = Config::load(self.args).map_err(|e| e.to_string())?;
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        let next = &new.reloadable;
        // The peer policy refuses the relay's own addresses as they run.
        let own = own_addresses(&self.current.network, &self.bound);
        let settings = next.relay_settings(self.nonce_key, &own);
        self.ledger.set_limits(settings.quotas);
        let mut missed = 0;
        let tls = next.tls.reload_config();
        // Built before any shard is told, so that a certificate OpenSSL
        // refuses refuses the whole reload.
        let dtls = if self.current.streams.listen_dtls.is_empty() {
            None
        } else {
            next.tls.reload_dtls()?
        };
        for c in self.controls {
            if !c.send(ShardCommand::Reload(settings.clone(), tls.clone())) {
                missed += 1;
            }
            if let Some(d) = &dtls {
                c.send(ShardCommand::Dtls(d.clone()));
            }
        }
        crate::logging::set_client_details(next.logging.client_details);
        let level = match &self.log {
            Some(log) => log.set_level(&next.logging.level)?,
            None => format!("log level {}", next.logging.level),
        };
        let alternate = next.drain.alternate_server;
        if self.drain.is_some() && alternate != self.current.reloadable.drain.alternate_server {
            for c in self.controls {
                c.send(ShardCommand::Drain(alternate));
            }
        }
        // From here on the restart-only sections keep their running values.
        let needs_restart = self.current.reload(new);
        let Reloadable {
            auth,
            policy,
            logging,
            drain,
            tls,
        } = &self.current.reloadable;
        let q = &policy.quotas;
        let mut summary = format!(
            "realm {:?}, {} static users, {} REST secrets, peers allow {} / deny {} prefixes, \
             quotas {}/user {} total {} permissions {} channels, max lifetime {} s, \
             unauthenticated replies {}/s burst {}, {level}, client details in logs {}, \
             drain timeout {} s",
            auth.realm,
            auth.users.len(),
            auth.rest_secrets.len(),
            policy.allow_peers.len(),
            policy.deny_peers.len(),
            q.allocations_per_user,
            q.total_allocations,
            q.permissions_per_allocation,
            q.channels_per_allocation,
            policy.max_lifetime.as_secs(),
            policy.unauth_per_second,
            policy.unauth_burst,
            if logging.client_details { "on" } else { "off" },
            drain.timeout.as_secs(),
        );
        if let crate::config::Tls::Files { identity, .. } = tls {
            summary.push_str(&format!(
                ", TLS certificate SHA-256 {}",
                crate::stream::tls::fingerprint_hex(&identity.fingerprint)
            ));
        }
        if !needs_restart.is_empty() {
            summary.push_str(&format!(
                "; changed but kept until a restart: {}",
                needs_restart.join(", ")
            ));
        }
        if missed > 0 {
            summary.push_str(&format!("; {missed} workers did not take it (stopping?)"));
        }
        Ok(summary)
    }
}

/// Live allocations on every shard; None when a shard did not answer.
fn live_allocations(controls: &[ShardHandle]) -> Option<u64> {
    collect_reports(controls, STATS_TIMEOUT)
        .iter()
        .map(|r| r.as_ref().map(|r| r.gauges.allocations))
        .sum()
}
