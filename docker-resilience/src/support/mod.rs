//! Small helpers every stage may use: byte streams produced on blocking threads, event
//! sinks, lock and time helpers.
//!
//! May import: nothing of this crate.

#[cfg(feature = "engine")]
pub(crate) mod chunks;

#[cfg(feature = "engine")]
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
#[cfg(feature = "registry")]
use std::time::Duration;

#[cfg(feature = "registry")]
/// Milliseconds of a duration, saturating (reports count time this way).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(feature = "engine")]
/// A relative path with `/` between its parts, whatever the host's separator (names in
/// a build context's tar, paths in BuildKit's file sync).
pub(crate) fn slash_path(path: &std::path::Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Locks a mutex, going on after a panic elsewhere poisoned it (the data is counters
/// and caches: still usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(feature = "registry")]
/// An error and its sources, `: `-joined (`error sending request: connection refused`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(feature = "engine")]
/// Where a long-running stage hands its events (progress bars, logs, `cargo:` lines);
/// called from the stage's tasks, so it must be quick.
pub(crate) struct EventSink<T>(Option<Handler<T>>);

#[cfg(feature = "engine")]
type Handler<T> = Arc<dyn Fn(&T) + Send + Sync>;

#[cfg(feature = "engine")]
impl<T> EventSink<T> {
    pub(crate) fn none() -> Self {
        EventSink(None)
    }

    pub(crate) fn new(f: impl Fn(&T) + Send + Sync + 'static) -> Self {
        EventSink(Some(Arc::new(f)))
    }

    pub(crate) fn emit(&self, event: &T) {
        if let Some(f) = &self.0 {
            f(event);
        }
    }
}

#[cfg(feature = "engine")]
impl<T> Clone for EventSink<T> {
    fn clone(&self) -> Self {
        EventSink(self.0.clone())
    }
}

#[cfg(feature = "engine")]
impl<T> std::fmt::Debug for EventSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "EventSink(set)"
        } else {
            "EventSink(none)"
        })
    }
}

#[cfg(all(test, feature = "registry"))]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_sources_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "error sending request: connection refused");
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }
}
