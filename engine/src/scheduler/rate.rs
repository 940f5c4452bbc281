//! Rate limits on new connections: a global one and a per-host one, both governor GCRA
//! limiters (dependencies.md, "governor").
//!
//! What they govern: new TCP connections. A job that connects through the scheduler's gate
//! (every fleet job: `HostJob::connects_through_gate`) spends one token of each limiter right
//! before each `TcpStream::connect` ([`super::AttemptGate`], awaited by the transport after
//! name resolution), for every new connection: a sweep's unauthenticated Identify and its
//! authenticated connection take one each, a reconnect takes one, a request on the
//! kept-alive connection none. Other jobs spend one set just before each attempt.
//!
//! The limiters read tokio's clock, so a paused test runtime drives them in virtual time, and
//! they are waited on with `check` loops and `tokio::time::sleep` rather than governor's
//! `until_ready` (which sleeps on a real-time timer). The global limiter is checked first and
//! the per-host one second: a token is only ever spent at the moment the connection is made,
//! so neither bound can be exceeded by a token taken early while waiting on the other limiter.
//! The price is a wasted global token when the host's own limit refuses; a per-host gate lets
//! one job per host wait at a time, so that waste is at most one token per refusal.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// A rate: `count` new connections per `per`, with bursts of up to `burst` back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Connections per period.
    pub count: NonZeroU32,
    /// The period (one second, minute or hour).
    pub per: Duration,
    /// Connections allowed back to back before the spacing applies (1: evenly spaced).
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `count` per second, evenly spaced (burst 1).
    pub fn per_second(count: NonZeroU32) -> Self {
        Self {
            count,
            per: Duration::from_secs(1),
            burst: NonZeroU32::MIN,
        }
    }

    /// The same rate with bursts of up to `burst`.
    pub fn with_burst(self, burst: NonZeroU32) -> Self {
        Self { burst, ..self }
    }

    /// The governor quota: one token every `per / count`, `burst` of them banked.
    pub fn quota(&self) -> Option<Quota> {
        let interval = self.per.checked_div(self.count.get())?;
        Some(Quota::with_period(interval)?.allow_burst(self.burst))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)?;
        if self.burst.get() > 1 {
            write!(f, ":{}", self.burst)?;
        }
        Ok(())
    }
}

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {input:?}: {reason} (expected COUNT[/s|/m|/h][:BURST], e.g. 50/s or 300/m:20)"
)]
pub struct RateParseError {
    /// The text given.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl FromStr for RateLimit {
    type Err = RateParseError;

    /// `COUNT[/UNIT][:BURST]`: `50` and `50/s` are fifty a second, `300/m` three hundred a
    /// minute, `50/s:10` allows bursts of ten. Counts and bursts are positive integers.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| RateParseError {
            input: s.to_owned(),
            reason,
        };
        let text = s.trim();
        let (rate, burst) = match text.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (text, None),
        };
        let (count, unit) = match rate.split_once('/') {
            Some((count, unit)) => (count, unit),
            None => (rate, "s"),
        };
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(err("the unit must be s, m or h")),
        };
        let positive = |t: &str, what| t.trim().parse::<NonZeroU32>().map_err(|_| err(what));
        let count = positive(count, "the count must be a positive integer")?;
        let burst = match burst {
            Some(b) => positive(b, "the burst must be a positive integer")?,
            None => NonZeroU32::MIN,
        };
        let limit = Self { count, per, burst };
        limit
            .quota()
            .map(|_| limit)
            .ok_or_else(|| err("the rate is too high"))
    }
}

/// governor's clock on tokio's time, so paused test runtimes run the limiters virtually.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type GlobalLimiter =
    RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;
type HostLimiter = RateLimiter<
    Arc<str>,
    DefaultKeyedStateStore<Arc<str>>,
    TokioClock,
    NoOpMiddleware<std::time::Instant>,
>;

/// The two limiters of one scheduler.
#[derive(Debug)]
pub(crate) struct Limiters {
    global: Option<GlobalLimiter>,
    /// Waiters on the global limiter line up here (tokio's mutex is fair), so one sleeps on
    /// it at a time: without it every waiter (up to `forks` of them) woke at each token and
    /// all but one went back to sleep, thousands of wake-ups a second that delayed the
    /// connections themselves on a busy machine.
    global_queue: tokio::sync::Mutex<()>,
    per_host: Option<HostLimiter>,
}

impl Limiters {
    /// Limiters for the configured rates (`None`: unlimited). Fails on a rate governor cannot
    /// represent (zero-length interval).
    pub(crate) fn new(
        global: Option<RateLimit>,
        per_host: Option<RateLimit>,
    ) -> Result<Self, RateLimit> {
        let global = match global {
            Some(rate) => Some(GlobalLimiter::direct_with_clock(
                rate.quota().ok_or(rate)?,
                TokioClock,
            )),
            None => None,
        };
        let per_host = match per_host {
            Some(rate) => Some(HostLimiter::dashmap_with_clock(
                rate.quota().ok_or(rate)?,
                TokioClock,
            )),
            None => None,
        };
        Ok(Self {
            global,
            global_queue: tokio::sync::Mutex::new(()),
            per_host,
        })
    }

    /// Whether a per-host limit is configured (the caller then serialises per host).
    pub(crate) fn has_per_host(&self) -> bool {
        self.per_host.is_some()
    }

    /// Waits until both limiters let one new connection to `host` through, and spends their
    /// tokens at that moment.
    pub(crate) async fn until_ready(&self, host: &Arc<str>) {
        loop {
            if let Some(global) = &self.global {
                let _first_in_line = self.global_queue.lock().await;
                while let Err(not_until) = global.check() {
                    tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await;
                }
            }
            if let Some(per_host) = &self.per_host
                && let Err(not_until) = per_host.check_key(host)
            {
                tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await;
                continue;
            }
            return;
        }
    }

    /// Drops per-host states that have gone back to fresh (governor keeps one per key seen).
    pub(crate) fn retain_recent(&self) {
        if let Some(per_host) = &self.per_host {
            per_host.retain_recent();
            per_host.shrink_to_fit();
        }
    }

    /// Per-host states held.
    pub(crate) fn keys(&self) -> usize {
        self.per_host.as_ref().map_or(0, HostLimiter::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn rates_parse_and_print() {
        let r: RateLimit = "50/s".parse().unwrap();
        assert_eq!(r, RateLimit::per_second(nz(50)));
        assert_eq!("50".parse::<RateLimit>().unwrap(), r);
        let r: RateLimit = " 300/m:20 ".parse().unwrap();
        assert_eq!(
            (r.count.get(), r.per.as_secs(), r.burst.get()),
            (300, 60, 20)
        );
        assert_eq!(r.to_string(), "300/m:20");
        assert_eq!("7/h".parse::<RateLimit>().unwrap().to_string(), "7/h");
        for bad in ["", "0/s", "x/s", "5/d", "5/s:0", "5/s:", "-1", "5/s:2:3"] {
            let err = bad.parse::<RateLimit>().unwrap_err();
            assert_eq!(err.input, bad, "{bad:?}");
        }
        // One token per nanosecond is the finest governor can do; beyond that is refused.
        assert!("1000000000/s".parse::<RateLimit>().is_ok());
        assert!("4000000000/s".parse::<RateLimit>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_limit_spaces_connections_in_virtual_time() {
        let limiters =
            Limiters::new(Some(RateLimit::per_second(nz(50)).with_burst(nz(5))), None).unwrap();
        let host: Arc<str> = Arc::from("h");
        let start = tokio::time::Instant::now();
        for _ in 0..105 {
            limiters.until_ready(&host).await;
        }
        // Five go at once, the other hundred 20 ms apart.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn per_host_limits_are_independent_and_forgotten_when_fresh() {
        let limiters = Limiters::new(None, Some(RateLimit::per_second(nz(2)))).unwrap();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            limiters.until_ready(&a).await;
            limiters.until_ready(&b).await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(limiters.keys(), 2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        limiters.retain_recent();
        assert_eq!(limiters.keys(), 0);
    }
}
