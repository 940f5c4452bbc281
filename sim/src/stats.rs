//! Network-layer counters per host (requests, authentication failures, refused plaintext,
//! resets, ...), readable while the fleet runs and written to `stats.json`.
//!
//! Counters are relaxed atomics: each is a monotone count read for reporting, never used
//! to synchronise anything.
//!
//! [`ConnectionLog`] is the fleet-wide log of accepted TCP connections with their times, so
//! a test can check a client's connection rate limit against what the "hosts" saw.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Counters of one host's listeners.
#[derive(Debug, Default)]
pub struct HostStats {
    connections: AtomicU64,
    requests: AtomicU64,
    auth_failures: AtomicU64,
    authentications: AtomicU64,
    unauthenticated_identify: AtomicU64,
    plaintext_refused: AtomicU64,
    too_large: AtomicU64,
    resets: AtomicU64,
    empty_500: AtomicU64,
    service_replies: AtomicU64,
    tls_failures: AtomicU64,
    not_tls: AtomicU64,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A TCP connection was accepted.
    Connection,
    /// An HTTP request arrived.
    Request,
    /// A client's credentials or token were refused (a 401 after a token or Basic
    /// credentials, not the bare 401 of an unauthenticated first request).
    AuthFailure,
    /// A connection or request authenticated.
    Authentication,
    /// An unauthenticated Identify was answered.
    UnauthenticatedIdentify,
    /// A plaintext body was refused with an empty 500 (AllowUnencrypted=false).
    PlaintextRefused,
    /// A request was refused with 413.
    TooLarge,
    /// A response was cut off (flaky link).
    Reset,
    /// A request got an empty 500 by chance (flaky service).
    Empty500,
    /// A request reached the WS-Man service and got its answer.
    ServiceReply,
    /// A TLS handshake failed.
    TlsFailure,
    /// Plain HTTP (or other non-TLS bytes) reached a TLS listener; closed unanswered.
    NotTls,
}

/// A snapshot of [`HostStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostStatsSnapshot {
    /// TCP connections accepted.
    pub connections: u64,
    /// HTTP requests received.
    pub requests: u64,
    /// Refused credentials or tokens.
    pub auth_failures: u64,
    /// Successful authentications.
    pub authentications: u64,
    /// Unauthenticated Identify requests answered.
    pub unauthenticated_identify: u64,
    /// Plaintext bodies refused (HTTP 500, empty body).
    pub plaintext_refused: u64,
    /// Requests refused with 413.
    pub too_large: u64,
    /// Responses cut off mid-body.
    pub resets: u64,
    /// Random empty 500 answers.
    pub empty_500: u64,
    /// Requests answered by the WS-Man service.
    pub service_replies: u64,
    /// Failed TLS handshakes.
    pub tls_failures: u64,
    /// Non-TLS connections to a TLS listener, closed unanswered.
    pub not_tls: u64,
}

impl HostStats {
    /// Adds one to `counter`.
    pub fn bump(&self, counter: Counter) {
        self.cell(counter).fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> HostStatsSnapshot {
        let get = |c| self.cell(c).load(Ordering::Relaxed);
        HostStatsSnapshot {
            connections: get(Counter::Connection),
            requests: get(Counter::Request),
            auth_failures: get(Counter::AuthFailure),
            authentications: get(Counter::Authentication),
            unauthenticated_identify: get(Counter::UnauthenticatedIdentify),
            plaintext_refused: get(Counter::PlaintextRefused),
            too_large: get(Counter::TooLarge),
            resets: get(Counter::Reset),
            empty_500: get(Counter::Empty500),
            service_replies: get(Counter::ServiceReply),
            tls_failures: get(Counter::TlsFailure),
            not_tls: get(Counter::NotTls),
        }
    }

    fn cell(&self, counter: Counter) -> &AtomicU64 {
        match counter {
            Counter::Connection => &self.connections,
            Counter::Request => &self.requests,
            Counter::AuthFailure => &self.auth_failures,
            Counter::Authentication => &self.authentications,
            Counter::UnauthenticatedIdentify => &self.unauthenticated_identify,
            Counter::PlaintextRefused => &self.plaintext_refused,
            Counter::TooLarge => &self.too_large,
            Counter::Reset => &self.resets,
            Counter::Empty500 => &self.empty_500,
            Counter::ServiceReply => &self.service_replies,
            Counter::TlsFailure => &self.tls_failures,
            Counter::NotTls => &self.not_tls,
        }
    }
}

impl HostStatsSnapshot {
    /// Adds `other` into `self` (fleet totals).
    pub fn add(&mut self, other: &HostStatsSnapshot) {
        self.connections += other.connections;
        self.requests += other.requests;
        self.auth_failures += other.auth_failures;
        self.authentications += other.authentications;
        self.unauthenticated_identify += other.unauthenticated_identify;
        self.plaintext_refused += other.plaintext_refused;
        self.too_large += other.too_large;
        self.resets += other.resets;
        self.empty_500 += other.empty_500;
        self.service_replies += other.service_replies;
        self.tls_failures += other.tls_failures;
        self.not_tls += other.not_tls;
    }

    /// True when nothing was counted.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// Most connection times a [`ConnectionLog`] keeps (8 MiB of `u64`); later connections are
/// only counted.
pub const CONNECTION_LOG_CAP: usize = 1_000_000;

/// Every TCP connection the fleet accepted, as microseconds since the fleet started: when
/// the kernel completed its handshake, not when an accept task got
/// to it (`server::handshake_age`); bounded by [`CONNECTION_LOG_CAP`].
#[derive(Debug, Default)]
pub struct ConnectionLog {
    times: Mutex<Vec<u64>>,
    dropped: AtomicU64,
}

impl ConnectionLog {
    /// Records one connection accepted `at` after the fleet started.
    pub fn record(&self, at: Duration) {
        let micros = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
        // A poisoned lock only means another accept task panicked mid-push; the Vec is intact.
        let mut times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        if times.len() < CONNECTION_LOG_CAP {
            times.push(micros);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A copy of the log, sorted by time; `origin` is the instant the times count from.
    pub fn snapshot(&self, origin: Instant) -> ConnectionLogSnapshot {
        let mut times: Vec<u64> = self.times.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Accept tasks run in parallel and times are the kernel's: pushes land out of order.
        times.sort_unstable();
        ConnectionLogSnapshot {
            origin,
            times: times.into_iter().map(Duration::from_micros).collect(),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A copy of a [`ConnectionLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLogSnapshot {
    /// The instant `times` count from (the fleet's start), to line them up with a client's
    /// own clock.
    pub origin: Instant,
    /// Connection times since the fleet started, ascending.
    pub times: Vec<Duration>,
    /// Connections accepted after the log was full (not in `times`).
    pub dropped: u64,
}

impl ConnectionLogSnapshot {
    /// Connections recorded (`times.len()`; `dropped` not included).
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// True when no connection was recorded.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The most connections in any half-open window `[t, t + window)`, and the `t` (the time
    /// of the window's first connection) where that maximum is first reached.
    pub fn max_in_window(&self, window: Duration) -> (usize, Duration) {
        let mut best = (0, Duration::ZERO);
        let mut start = 0;
        for (end, &time) in self.times.iter().enumerate() {
            // Drop connections that are `window` or more before this one.
            while let Some(&first) = self.times.get(start) {
                if time.saturating_sub(first) >= window {
                    start += 1;
                } else {
                    break;
                }
            }
            let count = end + 1 - start;
            if count > best.0 {
                best = (count, self.times.get(start).copied().unwrap_or_default());
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_log_windows_count_half_open_seconds() {
        let log = ConnectionLog::default();
        // Out of order on purpose: the snapshot sorts.
        for ms in [1_500, 0, 10, 999, 1_000, 1_001, 2_600] {
            log.record(Duration::from_millis(ms));
        }
        let origin = Instant::now();
        let snap = log.snapshot(origin);
        assert_eq!(snap.origin, origin);
        assert_eq!(snap.len(), 7);
        assert_eq!(snap.dropped, 0);
        assert_eq!(snap.times[0], Duration::ZERO);
        assert_eq!(snap.times[6], Duration::from_millis(2_600));
        // [10 ms, 1010 ms) holds 10, 999, 1000, 1001; [0, 1000) holds only three.
        assert_eq!(
            snap.max_in_window(Duration::from_secs(1)),
            (4, Duration::from_millis(10))
        );
        assert_eq!(
            snap.max_in_window(Duration::from_millis(2)),
            (2, Duration::from_millis(999))
        );
        assert_eq!(
            ConnectionLog::default()
                .snapshot(origin)
                .max_in_window(Duration::from_secs(1)),
            (0, Duration::ZERO)
        );
    }

    #[test]
    fn connection_log_counts_what_it_cannot_keep() {
        let log = ConnectionLog::default();
        for i in 0..CONNECTION_LOG_CAP as u64 + 3 {
            log.record(Duration::from_micros(i));
        }
        let snap = log.snapshot(Instant::now());
        assert_eq!((snap.len(), snap.dropped), (CONNECTION_LOG_CAP, 3));
        assert_eq!(
            snap.max_in_window(Duration::from_millis(1)),
            (1_000, Duration::ZERO)
        );
    }

    #[test]
    fn bumps_show_in_snapshots_and_totals() {
        let stats = HostStats::default();
        stats.bump(Counter::Request);
        stats.bump(Counter::Request);
        stats.bump(Counter::AuthFailure);
        let snap = stats.snapshot();
        assert_eq!((snap.requests, snap.auth_failures), (2, 1));
        let mut total = HostStatsSnapshot::default();
        assert!(total.is_zero());
        total.add(&snap);
        total.add(&snap);
        assert_eq!(total.requests, 4);
        assert!(!total.is_zero());
    }
}
