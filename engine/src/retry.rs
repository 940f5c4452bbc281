//! The back-off policy: exponential back-off with full jitter, bounded attempts, and the small
//! seedable random source the jitter draws from.
//!
//! Full jitter (the delay before retry `k` is uniform in `[0, min(cap, base * 2^k))`) spreads
//! the retries of many hosts that failed together (a DC hiccup, a saturated link) instead of
//! sending them back in lock step. Only transient failures are retried (timeouts, resets,
//! quota faults, 503); a permanent failure (credentials, DNS, certificate, missing session
//! configuration) fails fast. Which failure is which is the job's call; [`is_transient_io`] and
//! [`is_transient_http_status`] are the shared rules so every job decides the same way.
//!
//! The random source is a splitmix64 sequence (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", OOPSLA 2014): statistically fine for jitter, eight bytes of
//! state, lock free, and seedable so tests replay the same delays. It is not for secrets.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How many times, and how long apart, a host's work is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts that may end in a transient failure: after this many the job fails with
    /// its last error. `1` means no retries. Quota faults are counted apart
    /// ([`RetryPolicy::max_quota_retries`]).
    pub max_attempts: u32,
    /// Back-off between transient failures.
    pub transient: Backoff,
    /// Most requeues after quota faults before the job ends as `QuotaExceeded`.
    pub max_quota_retries: u32,
    /// Back-off between quota requeues: longer, since a shell held by someone else lasts as
    /// long as their command.
    pub quota: Backoff,
}

impl Default for RetryPolicy {
    /// Three attempts 0.5 s, 1 s apart at most (before jitter) for transient failures; ten
    /// quota requeues starting at 1 s and capped at 30 s (about five minutes in all before
    /// jitter, long enough for a typical script holding the slot to finish).
    fn default() -> Self {
        Self {
            max_attempts: 3,
            transient: Backoff {
                base: Duration::from_millis(500),
                cap: Duration::from_secs(30),
            },
            max_quota_retries: 10,
            quota: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(30),
            },
        }
    }
}

/// Exponential back-off with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// The largest ceiling; also the most a server's `Retry-After` is honoured for.
    pub cap: Duration,
}

impl Backoff {
    /// The ceiling of the delay before retry number `retry` (0 for the first retry):
    /// `min(cap, base * 2^retry)`, saturating.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `retry`: uniform in `[0, ceiling]` (full jitter), but at
    /// least the server's `Retry-After` (itself capped at [`Backoff::cap`], so one bad header
    /// cannot park a host for an hour).
    pub fn delay(&self, retry: u32, jitter: &Jitter, retry_after: Option<Duration>) -> Duration {
        let jittered = jitter.below(self.ceiling(retry));
        match retry_after {
            Some(after) => jittered.max(after.min(self.cap)),
            None => jittered,
        }
    }
}

/// A lock-free, seedable splitmix64 sequence shared by every task of a run.
#[derive(Debug)]
pub struct Jitter {
    state: AtomicU64,
}

/// splitmix64's increment (the odd integer closest to 2^64 / golden ratio).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl Jitter {
    /// A sequence from `seed`: the same seed gives the same draws in the same order.
    pub fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A sequence seeded from the clock and the process id (runs differ; not for secrets).
    pub fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self::new(nanos ^ u64::from(std::process::id()).rotate_left(32))
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration uniform in `[0, max]` at nanosecond resolution.
    pub fn below(&self, max: Duration) -> Duration {
        let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if max_nanos == 0 {
            return Duration::ZERO;
        }
        // Multiply-shift maps 64 random bits onto [0, max_nanos] without a modulo bias worth
        // caring about for a back-off delay.
        let scaled = (u128::from(self.next_u64()) * (u128::from(max_nanos) + 1)) >> 64;
        Duration::from_nanos(u64::try_from(scaled).unwrap_or(max_nanos))
    }
}

/// Whether a socket error is worth retrying: the connection was reset, aborted or timed out
/// part way (a busy host, a flapping link). Refused connections are not (nothing listens:
/// `InvalidPort`), nor are resolution failures (`InvalidDNS`).
pub fn is_transient_io(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::Interrupted
    )
}

/// Whether an HTTP status from the listener is worth retrying: 503 (the WinRM service is
/// starting or overloaded), 502 and 504 (a proxy or load balancer in between), 429 and 408.
/// 500 is not retried as such: it carries a WS-Man fault the job classifies (a quota fault
/// there is retried as a quota fault, MS-WSMV 3.1.4.5.2.1).
pub fn is_transient_http_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_the_base_and_stop_at_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        };
        let ceilings: Vec<u128> = (0..9).map(|k| b.ceiling(k).as_millis()).collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        // Far beyond 2^31 the shift saturates instead of overflowing.
        assert_eq!(b.ceiling(200), Duration::from_secs(30));
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_spread_over_it() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        let jitter = Jitter::new(7);
        let draws: Vec<Duration> = (0..10_000).map(|_| b.delay(2, &jitter, None)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(4)));
        // Full jitter: every quarter of [0, 4 s] is hit roughly a quarter of the time.
        for q in 0..4u64 {
            let lo = Duration::from_secs(q);
            let hi = Duration::from_secs(q + 1);
            let n = draws.iter().filter(|d| **d >= lo && **d < hi).count();
            assert!((2_200..2_800).contains(&n), "quarter {q}: {n}");
        }
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_secs(5),
        };
        let jitter = Jitter::new(1);
        assert_eq!(
            b.delay(0, &jitter, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            b.delay(0, &jitter, Some(Duration::from_secs(3600))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn the_same_seed_replays_the_same_draws() {
        let a = Jitter::new(42);
        let b = Jitter::new(42);
        let c = Jitter::new(43);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        // The published splitmix64 sequence for seed 0 starts with this value.
        assert_eq!(Jitter::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(Jitter::new(0).below(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn transient_rules() {
        assert!(is_transient_io(io::ErrorKind::ConnectionReset));
        assert!(is_transient_io(io::ErrorKind::TimedOut));
        assert!(!is_transient_io(io::ErrorKind::ConnectionRefused));
        assert!(!is_transient_io(io::ErrorKind::PermissionDenied));
        assert!(is_transient_http_status(503));
        assert!(!is_transient_http_status(500));
        assert!(!is_transient_http_status(401));
    }
}
