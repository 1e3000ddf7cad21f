//! The health of each source (a registry, a mirror): how long to wait before the next
//! attempt depends on how the source is doing, not only on one image's attempt count.
//!
//! - A source that served another request a moment ago, or one of its last five, is
//!   *glitching*: a failure is retried at once (after a few milliseconds of jitter).
//! - A source failing as a whole (no success lately) backs off exponentially with
//!   jitter, counted over all its requests: forty images waiting on a dead mirror do
//!   not make forty schedules of their own, forty requests failing at once are one
//!   step, and while the backoff runs no request is sent to the source (a success
//!   that a request already under way brings ends it).
//! - A `429` closes the source to every request until its `Retry-After` (or the
//!   policy's rate-limit delay) has passed: one budget per source, so retries never
//!   multiply against a rate limit. The exception is a lone `429` from a source that
//!   served a request since its last one (a mirror relaying its upstream's limit for
//!   one image while serving the rest): only that image waits its `Retry-After`; a
//!   second `429` with no success between closes the source. A manifest that a request
//!   already under way brings after that reopens it: rate limits are counted on
//!   manifests, so one served proves the limit is not on the source as a whole (the
//!   images answered `429` still wait their own `Retry-After`). A blob does not reopen
//!   it: registries serve blobs while they limit manifests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::classify::ErrorClass;
use super::retry::RetryPolicy;

/// How recent a success must be for a failure to count as a glitch.
const GLITCH_WINDOW: Duration = Duration::from_secs(3);
/// A failure is a glitch, too, when one of the source's last this many outcomes was a
/// success, however long ago: after a quiet spell (every request waiting out a
/// backoff) the first failure of a source that serves most requests is not a sign of
/// an outage, and taking the backoff a step further on it made the tail of runs
/// under 30% faults (waits of 1, 2, 4 s with no request on the wire to end them).
const GLITCH_OUTCOMES: u32 = 5;

/// The longest jittered wait before retrying a glitch.
const GLITCH_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct SourceState {
    /// Backoff steps taken since the last success (whole failures only).
    consecutive_failures: u32,
    /// The end of the source's current backoff: a failure before it (a request sent
    /// before the backoff was decided, one of a burst) joins it rather than doubling it.
    backoff_until: Option<Instant>,
    last_success: Option<Instant>,
    /// The source's last outcomes, newest in bit 0 (1: served).
    recent: u8,
    last_rate_limited: Option<Instant>,
    closed_until: Option<Instant>,
}

impl SourceState {
    fn record(&mut self, served: bool) {
        self.recent = (self.recent << 1) | u8::from(served);
    }

    /// Whether a failure now is a glitch rather than a sign the source is down.
    fn glitching(&self, now: Instant) -> bool {
        let lately = self
            .last_success
            .is_some_and(|t| now.saturating_duration_since(t) < GLITCH_WINDOW);
        let mask = (1u8 << GLITCH_OUTCOMES) - 1;
        lately || self.recent & mask != 0
    }
}

/// What a failure means for the next request to its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// How long to wait.
    pub wait: Duration,
    /// Whether it took the source's backoff a step further (a whole failure, not one of
    /// a burst): what the breaker counts.
    pub escalated: bool,
    /// Whether the wait is the source's backoff (a transient failure with no success
    /// lately), which a success of another request ends at once
    /// ([`Health::wait_out`]); not a glitch's jitter or a `Retry-After`.
    pub backoff: bool,
}

/// The health of every source of a run.
#[derive(Debug)]
pub struct Health {
    min_delay: Duration,
    max_delay: Duration,
    rate_limit_delay: Duration,
    jitter: bool,
    sources: Mutex<HashMap<String, SourceState>>,
    /// Wakes the requests waiting on a closed source when it reopens.
    reopened: tokio::sync::Notify,
}

impl Health {
    /// Health tracking with the delays of `policy`.
    pub fn new(policy: &RetryPolicy) -> Self {
        Health {
            min_delay: policy.min_delay,
            max_delay: policy.max_delay.max(policy.min_delay),
            rate_limit_delay: policy.rate_limit_delay,
            jitter: policy.jitter,
            sources: Mutex::new(HashMap::new()),
            reopened: tokio::sync::Notify::new(),
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, SourceState>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a request to `source` must wait before it may be sent (a rate limit
    /// or a backoff still running); `None` when it may go now.
    pub fn wait(&self, source: &str) -> Option<Duration> {
        let now = Instant::now();
        self.states()
            .get(source)
            .and_then(|s| match (s.closed_until, s.backoff_until) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            })
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Waits until a request to `source` may be sent.
    pub async fn ready(&self, source: &str) {
        while self.wait(source).is_some() {
            self.ready_or_reopened(source).await;
        }
    }

    /// Waits until a request to `source` may be sent, or until any source's backoff
    /// ends (a success): the caller then chooses again, as another source may be the
    /// better one now.
    pub async fn ready_or_reopened(&self, source: &str) {
        let reopened = self.reopened.notified();
        let Some(wait) = self.wait(source) else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = reopened => {}
        }
    }

    /// Waits until `deadline`, or until `source` serves a request (its backoff ends):
    /// for a request that failed into the source's backoff, which should not sleep on
    /// once the source works again (a burst of failures, then successes of other
    /// requests a moment later).
    pub async fn wait_out(&self, source: &str, deadline: Instant) {
        loop {
            // Registered before the check, so a success in between is not missed.
            let reopened = self.reopened.notified();
            let backing_off = self
                .states()
                .get(source)
                .is_some_and(|s| s.backoff_until.is_some());
            if !backing_off || Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                () = reopened => {}
            }
        }
    }

    /// Whether `source` is *glitching* rather than failing: it served a request a
    /// moment ago, so a failure now is retried at once.
    pub fn glitching(&self, source: &str) -> bool {
        let now = Instant::now();
        self.states().get(source).is_some_and(|s| s.glitching(now))
    }

    /// Records a request `source` answered.
    pub fn success(&self, source: &str) {
        self.served(source, false);
    }

    /// Records a manifest `source` served: a success, and proof that no rate limit
    /// holds the source as a whole (it reopens, if a `429` had closed it).
    pub fn manifest_served(&self, source: &str) {
        self.served(source, true);
    }

    /// A request `source` answered; `reopen`: and it proves no rate limit holds it.
    fn served(&self, source: &str, reopen: bool) {
        let mut states = self.states();
        let s = states.entry(source.to_owned()).or_default();
        s.consecutive_failures = 0;
        s.last_success = Some(Instant::now());
        s.record(true);
        // It serves: its backoff is over, and (a manifest) no rate limit holds it.
        let backed_off = s.backoff_until.take().is_some();
        let reopened = reopen && s.closed_until.take().is_some();
        if backed_off || reopened {
            drop(states);
            self.reopened.notify_waiters();
        }
    }

    /// Records a failed request; returns how long the image it was for should wait
    /// before its next attempt.
    pub fn failure(
        &self,
        source: &str,
        class: ErrorClass,
        retry_after: Option<Duration>,
    ) -> Duration {
        self.record_failure(source, class, retry_after).wait
    }

    /// Records a failed request: how long to wait before the next request to `source`
    /// for it, and whether this failure took the source's backoff a step further (a
    /// glitch, a `429`, a permanent answer and a failure inside the current backoff
    /// window do not: forty requests failing at once are one step, not forty).
    pub fn record_failure(
        &self,
        source: &str,
        class: ErrorClass,
        retry_after: Option<Duration>,
    ) -> Backoff {
        let wait = |wait| Backoff {
            wait,
            escalated: false,
            backoff: false,
        };
        let now = Instant::now();
        let mut states = self.states();
        let s = states.entry(source.to_owned()).or_default();
        match class {
            ErrorClass::Permanent => wait(Duration::ZERO),
            ErrorClass::RateLimited => {
                let wait = retry_after.unwrap_or(self.rate_limit_delay);
                let served_since = s.last_success.is_some_and(|t| {
                    now.saturating_duration_since(t) < GLITCH_WINDOW
                        && s.last_rate_limited.is_none_or(|r| t > r)
                });
                s.last_rate_limited = Some(now);
                if served_since {
                    return Backoff {
                        wait,
                        escalated: false,
                        backoff: false,
                    };
                }
                let until = now + wait;
                let until = s.closed_until.map_or(until, |u| u.max(until));
                s.closed_until = Some(until);
                Backoff {
                    wait: until - now,
                    escalated: false,
                    backoff: false,
                }
            }
            ErrorClass::Transient => {
                let glitch = s.glitching(now);
                s.record(false);
                if glitch {
                    return Backoff {
                        wait: self.jittered(GLITCH_DELAY, true),
                        escalated: false,
                        backoff: false,
                    };
                }
                if let Some(until) = s.backoff_until.filter(|u| *u > now) {
                    // One of a burst: it waits out the backoff already decided.
                    return Backoff {
                        wait: until - now + self.jittered(GLITCH_DELAY, true),
                        escalated: false,
                        backoff: true,
                    };
                }
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                let exponent = s.consecutive_failures.saturating_sub(1).min(20);
                let delay = self
                    .min_delay
                    .saturating_mul(1u32 << exponent)
                    .min(self.max_delay);
                let delay = self.jittered(delay, false);
                s.backoff_until = Some(now + delay);
                Backoff {
                    wait: delay,
                    escalated: true,
                    backoff: true,
                }
            }
        }
    }

    /// `delay` with jitter: anywhere up to it for a glitch, between half and all of
    /// it for a backoff (when the policy has jitter).
    fn jittered(&self, delay: Duration, full: bool) -> Duration {
        if !self.jitter || delay.is_zero() {
            return delay;
        }
        let low = if full { 0.0 } else { 0.5 };
        delay.mul_f64(rand::rng().random_range(low..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(&RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_glitch_on_a_serving_source_is_retried_at_once() {
        let h = health();
        h.success("mirror");
        let wait = h.failure("mirror", ErrorClass::Transient, None);
        assert!(wait <= GLITCH_DELAY, "{wait:?}");
        // Still serving others: the next failure is a glitch too.
        let wait = h.failure("mirror", ErrorClass::Transient, None);
        assert!(wait <= GLITCH_DELAY, "{wait:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_source_backs_off_over_all_its_requests() {
        let h = health();
        let mut waits = Vec::new();
        for _ in 0..7 {
            let wait = h.failure("dead", ErrorClass::Transient, None);
            waits.push(wait.as_secs());
            tokio::time::advance(wait).await;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        // A success long ago counts among the last five outcomes: the next five
        // failures are glitches, then the source backs off again from the start.
        h.success("dead");
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            let wait = h.failure("dead", ErrorClass::Transient, None);
            assert!(wait <= GLITCH_DELAY, "{wait:?}");
            tokio::time::advance(wait).await;
        }
        assert_eq!(h.failure("dead", ErrorClass::Transient, None).as_secs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_failures_is_one_step_of_backoff() {
        let h = health();
        // Forty requests under way fail at once: one step, not forty.
        let burst: Vec<Backoff> = (0..40)
            .map(|_| h.record_failure("mirror", ErrorClass::Transient, None))
            .collect();
        assert!(burst[0].escalated && burst[0].wait == Duration::from_secs(1));
        assert!(burst[1..].iter().all(|b| !b.escalated));
        assert!(burst[1..]
            .iter()
            .all(|b| b.wait >= Duration::from_secs(1)
                && b.wait <= Duration::from_secs(1) + GLITCH_DELAY));
        // After the window, the next failure is the next step.
        tokio::time::advance(Duration::from_secs(1)).await;
        let next = h.record_failure("mirror", ErrorClass::Transient, None);
        assert_eq!((next.wait, next.escalated), (Duration::from_secs(2), true));
        // Glitches, 429s and permanent answers are no steps.
        h.success("mirror");
        for class in [
            ErrorClass::Transient,
            ErrorClass::RateLimited,
            ErrorClass::Permanent,
        ] {
            assert!(!h.record_failure("mirror", class, None).escalated);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_closes_the_source_to_every_request() {
        let h = health();
        let wait = h.failure("hub", ErrorClass::RateLimited, Some(Duration::from_secs(2)));
        assert_eq!(wait, Duration::from_secs(2));
        assert_eq!(h.wait("hub"), Some(Duration::from_secs(2)));
        assert_eq!(h.wait("mirror"), None, "other sources stay open");
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(h.wait("hub"), Some(Duration::from_millis(500)));
        let started = Instant::now();
        h.ready("hub").await;
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert_eq!(h.wait("hub"), None);
        // Without Retry-After, the policy's rate-limit delay.
        let wait = h.failure("hub", ErrorClass::RateLimited, None);
        assert_eq!(wait, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_429_amid_successes_holds_only_its_image() {
        let h = std::sync::Arc::new(health());
        h.success("mirror");
        let wait = h.failure(
            "mirror",
            ErrorClass::RateLimited,
            Some(Duration::from_secs(1)),
        );
        assert_eq!(
            wait,
            Duration::from_secs(1),
            "the image waits its Retry-After"
        );
        assert_eq!(h.wait("mirror"), None, "the others go on");
        // A second 429 with no success between: the source is rate-limited as a whole.
        let wait = h.failure(
            "mirror",
            ErrorClass::RateLimited,
            Some(Duration::from_secs(1)),
        );
        assert_eq!(wait, Duration::from_secs(1));
        assert_eq!(h.wait("mirror"), Some(Duration::from_secs(1)));
        // A blob served meanwhile does not reopen it; a manifest does.
        tokio::time::advance(Duration::from_millis(10)).await;
        h.success("mirror");
        assert_eq!(h.wait("mirror"), Some(Duration::from_millis(990)));
        let waiter = {
            let h = std::sync::Arc::clone(&h);
            tokio::spawn(async move {
                let started = Instant::now();
                h.ready("mirror").await;
                started.elapsed()
            })
        };
        tokio::task::yield_now().await;
        h.manifest_served("mirror");
        assert_eq!(h.wait("mirror"), None);
        assert_eq!(
            waiter.await.unwrap(),
            Duration::ZERO,
            "a waiting request goes at once"
        );
        // The next 429 is a lone one again: only its image waits.
        let wait = h.failure(
            "mirror",
            ErrorClass::RateLimited,
            Some(Duration::from_secs(1)),
        );
        assert_eq!(wait, Duration::from_secs(1));
        assert_eq!(h.wait("mirror"), None);
    }
}
