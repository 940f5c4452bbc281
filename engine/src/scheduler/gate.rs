//! The gate an attempt's connections pass ([`AttemptGate`], the scheduler's side of
//! [`http::ConnectGate`]). It does two things around each new TCP connect:
//!
//! - **Rate limits.** The tokens are spent right before the connect, so the limits count
//!   connections, not attempts. Between the start of an attempt and its connect, the attempt
//!   journals `host_started` (an fsync) and builds its client, which took 200-500 ms on a
//!   loaded 2-core machine at 256 forks; tokens spent that early let connections bunch up
//!   past the rate (busiest seconds of 63-77 connections at `50/s:10`,
//!   tests/integration/rate.rs).
//! - **Forks.** The attempt holds its fork in the gate. When its first connect stays pending
//!   for `connect_handoff_after` (a host that does not answer the SYN), the scheduler gives
//!   the fork back and the attempt waits on one of the `connecting` slots instead; once the
//!   connection is open, [`http::ConnectGate::after_connect`] takes a fork again before TLS,
//!   authentication or any request. So `forks` still bounds the attempts doing WinRM work,
//!   and hosts that never answer no longer hold the forks healthy hosts need (issue 7: a
//!   sweep with 30% of the fleet blackholed). Only the first connect hands off: a later one
//!   (a reconnect, a cleanup) keeps the fork, because the attempt may have a shell to delete.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::{CancelToken, Shared};
use crate::http::{self, GateFuture};

/// One attempt's gate: hand it to every client the attempt connects with
/// (`HostClient::with_connect_gate`). Each new TCP connection (a reconnect too; not a
/// kept-alive one) waits for the global and per-host rate limits just before its connect,
/// and holds a fork from the moment it is open.
pub struct AttemptGate {
    shared: Arc<Shared>,
    host: Arc<str>,
    /// The host's per-host rate turn, when a per-host limit is configured.
    turn: Option<Arc<tokio::sync::Mutex<()>>>,
    cancel: CancelToken,
    /// Connections let through so far.
    connections: AtomicU32,
    slots: Mutex<Slots>,
    /// Wakes [`AttemptGate::handoff_due`] when the first connect begins.
    connect_began: Notify,
}

/// What the attempt holds: a fork, or (after a hand-off) a connecting slot.
#[derive(Default)]
struct Slots {
    fork: Option<OwnedSemaphorePermit>,
    connecting: Option<OwnedSemaphorePermit>,
    /// When the first connect began, while it is pending and has not been handed off.
    pending_since: Option<Instant>,
}

impl std::fmt::Debug for AttemptGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptGate")
            .field("host", &self.host)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl AttemptGate {
    pub(super) fn new(
        shared: Arc<Shared>,
        host: Arc<str>,
        turn: Option<Arc<tokio::sync::Mutex<()>>>,
        cancel: CancelToken,
        fork: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            shared,
            host,
            turn,
            cancel,
            connections: AtomicU32::new(0),
            slots: Mutex::new(Slots {
                fork: Some(fork),
                ..Slots::default()
            }),
            connect_began: Notify::new(),
        }
    }

    /// Connections the gate let through (each spent its rate tokens).
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Whether the attempt holds a fork now (false while a slow first connect is pending
    /// after a hand-off).
    pub fn holds_fork(&self) -> bool {
        self.slots().fork.is_some()
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the rate limiters. A cancelled attempt that never connected gives up at
    /// once (nothing to clean up on the host); one that did connect still waits, because
    /// its cleanup (stop the pipeline, delete the shell) may need a new connection, and ops
    /// bounds that cleanup itself.
    async fn admit(&self) -> io::Result<()> {
        let pass = self
            .shared
            .pass_rate_limits(&self.host, self.turn.as_deref());
        let first = self.connections() == 0;
        if first {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(cancelled()),
                () = pass => {}
            }
        } else {
            pass.await;
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        if first {
            self.slots().pending_since = Some(Instant::now());
            self.connect_began.notify_one();
        }
        Ok(())
    }

    /// The connection is open: from here on the attempt does WinRM work, so it needs a fork.
    /// An attempt that handed its fork off waits for one (in line with the jobs waiting to
    /// start); cancelled meanwhile, it gives up, which is safe because it never sent a
    /// request on any connection.
    async fn connected(&self) -> io::Result<()> {
        {
            let mut slots = self.slots();
            slots.pending_since = None;
            if slots.fork.is_some() {
                return Ok(());
            }
        }
        let fork = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(cancelled()),
            fork = Arc::clone(&self.shared.forks).acquire_owned() => fork.map_err(|_| cancelled())?,
        };
        let mut slots = self.slots();
        slots.fork = Some(fork);
        if slots.connecting.take().is_some() {
            self.shared
                .counters
                .connecting
                .fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Resolves once the first connect has been pending for `after`.
    pub(super) async fn handoff_due(&self, after: Duration) {
        loop {
            let since = self.slots().pending_since;
            match since {
                // `notify_one` keeps a permit, so a connect that begins between the check
                // and the wait is not missed.
                None => self.connect_began.notified().await,
                Some(since) => {
                    tokio::time::sleep_until(since + after).await;
                    if self.slots().pending_since == Some(since) {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the fork back for a connecting slot, if one is free (else the attempt keeps its
    /// fork). Once per attempt: the first connect's pending time is consumed either way.
    pub(super) fn hand_off(&self) {
        let mut slots = self.slots();
        if slots.pending_since.take().is_none() || slots.fork.is_none() {
            return;
        }
        let Ok(slot) = Arc::clone(&self.shared.connecting).try_acquire_owned() else {
            return;
        };
        slots.connecting = Some(slot);
        slots.fork = None;
        let counters = &self.shared.counters;
        let now = counters.connecting.fetch_add(1, Ordering::Relaxed) + 1;
        let now = usize::try_from(now).unwrap_or(usize::MAX);
        counters.max_connecting.fetch_max(now, Ordering::Relaxed);
    }

    /// The attempt is over: its fork or connecting slot goes back.
    pub(super) fn release(&self) {
        let mut slots = self.slots();
        slots.fork = None;
        slots.pending_since = None;
        if slots.connecting.take().is_some() {
            self.shared
                .counters
                .connecting
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl http::ConnectGate for AttemptGate {
    fn before_connect(&self) -> GateFuture<'_> {
        Box::pin(self.admit())
    }

    fn after_connect(&self) -> GateFuture<'_> {
        Box::pin(self.connected())
    }
}

/// The refusal of a cancelled attempt's connection.
fn cancelled() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "the attempt was cancelled before it connected",
    )
}
