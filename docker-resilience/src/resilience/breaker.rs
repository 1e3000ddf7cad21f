//! A circuit breaker per source (a registry or a mirror): after a run of consecutive
//! failures the source is skipped for the rest of the run.

use std::collections::HashMap;
use std::sync::Mutex;

/// Counts consecutive failures per source; at the threshold the source is open
/// (skipped) for the rest of the run.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    failures: Mutex<HashMap<String, u32>>,
}

impl Breaker {
    /// A breaker that opens after `threshold` failures in a row (at least 1).
    pub fn new(threshold: u32) -> Self {
        Breaker {
            threshold: threshold.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a success: the run of failures ends.
    pub fn success(&self, source: &str) {
        self.counts().insert(source.to_owned(), 0);
    }

    /// Records a failure; true when this one opens the circuit.
    pub fn failure(&self, source: &str) -> bool {
        let mut counts = self.counts();
        let n = counts.entry(source.to_owned()).or_default();
        *n += 1;
        *n == self.threshold
    }

    /// Whether the source is skipped.
    pub fn is_open(&self, source: &str) -> bool {
        self.counts()
            .get(source)
            .is_some_and(|n| *n >= self.threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_a_run_of_failures_and_a_success_resets() {
        let b = Breaker::new(3);
        assert!(!b.failure("hub"));
        assert!(!b.failure("hub"));
        b.success("hub");
        assert!(!b.failure("hub"));
        assert!(!b.failure("hub"));
        assert!(b.failure("hub"), "the third in a row opens it");
        assert!(b.is_open("hub"));
        assert!(!b.is_open("mirror"));
    }
}
