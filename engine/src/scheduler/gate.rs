//! The gate an attempt's connections pass ([`AttemptGate`], the scheduler's side of
//! [`http::ConnectGate`]): the rate-limit tokens are spent right before each new TCP connect,
//! so the limits count connections, not attempts.
//!
//! Why at the connect and not when the attempt starts: between the two the attempt journals
//! `host_started` (an fsync) and builds its client, which took 200-500 ms on a loaded 2-core
//! machine at 256 forks; tokens spent that early let connections bunch up past the rate
//! (busiest seconds of 63-77 connections at `50/s:10`, tests/integration/rate.rs).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{CancelToken, Shared};
use crate::http::{self, GateFuture};

/// One attempt's gate: hand it to every client the attempt connects with
/// (`HostClient::with_connect_gate`). Each new TCP connection (a reconnect too; not a
/// kept-alive one) waits for the global and per-host rate limits just before its connect.
pub struct AttemptGate {
    shared: Arc<Shared>,
    host: Arc<str>,
    /// The host's per-host rate turn, when a per-host limit is configured.
    turn: Option<Arc<tokio::sync::Mutex<()>>>,
    cancel: CancelToken,
    /// Connections let through so far.
    connections: AtomicU32,
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
    ) -> Self {
        Self {
            shared,
            host,
            turn,
            cancel,
            connections: AtomicU32::new(0),
        }
    }

    /// Connections the gate let through (each spent its rate tokens).
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Waits for the rate limiters. A cancelled attempt that never connected gives up at
    /// once (nothing to clean up on the host); one that did connect still waits, because
    /// its cleanup (stop the pipeline, delete the shell) may need a new connection, and ops
    /// bounds that cleanup itself.
    async fn admit(&self) -> io::Result<()> {
        let pass = self
            .shared
            .pass_rate_limits(&self.host, self.turn.as_deref());
        if self.connections() == 0 {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(cancelled()),
                () = pass => {}
            }
        } else {
            pass.await;
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl http::ConnectGate for AttemptGate {
    fn before_connect(&self) -> GateFuture<'_> {
        Box::pin(self.admit())
    }

    fn after_connect(&self) -> GateFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The refusal of a cancelled attempt's first connection.
fn cancelled() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "the attempt was cancelled before it connected",
    )
}
