//! Warnings a client can cause at will are written at most once per
//! [`INTERVAL`] per kind, with the number left out since the last line: an attacker
//! must not be able to fill a node's disk, or hide real events, through our log.
//!
//! Our own such warnings (failed accepts, refused drain requests, response bodies
//! failing) go through a [`Limit`]. The libraries' warnings about misbehaving peers
//! (h2's rapid-reset and flow-control complaints, one per connection) go through
//! [`ForeignWarnings`], a filter on the log output that lets one event per call site
//! through per interval. Lifecycle lines (info) are never limited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// The shortest time between two lines of one kind.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One kind of warning, written at most once per [`INTERVAL`].
#[derive(Debug)]
pub(crate) struct Limit {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Limit {
    pub(crate) const fn new() -> Self {
        Self {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were left out
    /// since the last one; `None` (counted) otherwise.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let Ok(mut last) = self.last.lock() else {
            return Some(0);
        };
        match *last {
            Some(at) if now.duration_since(at) < INTERVAL => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// Lets through at most one warning or error per call site and [`INTERVAL`] from
/// targets outside the sidecar; everything else passes.
#[derive(Debug, Default)]
pub struct ForeignWarnings {
    last: Mutex<HashMap<Identifier, Instant>>,
}

impl ForeignWarnings {
    fn limited(metadata: &Metadata<'_>) -> bool {
        metadata.is_event()
            && *metadata.level() <= Level::WARN
            && !metadata.target().starts_with(env!("CARGO_CRATE_NAME"))
    }
}

impl<S> Filter<S> for ForeignWarnings {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        if !Self::limited(metadata) {
            return true;
        }
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        let now = Instant::now();
        match last.insert(metadata.callsite(), now) {
            Some(at) if now.duration_since(at) < INTERVAL => {
                // Keep the time of the line that was written.
                last.insert(metadata.callsite(), at);
                false
            }
            _ => true,
        }
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if Self::limited(metadata) {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let limit = Limit::new();
        let start = Instant::now();
        assert_eq!(limit.allow_at(start), Some(0));
        for n in 1..=99 {
            assert_eq!(limit.allow_at(start + Duration::from_millis(n)), None);
        }
        assert_eq!(limit.allow_at(start + INTERVAL), Some(99));
        assert_eq!(limit.allow_at(start + INTERVAL), None);
    }
}
