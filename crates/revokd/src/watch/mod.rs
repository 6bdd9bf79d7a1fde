//! What a validator's replica follows: the `Snapshot` stream it bootstraps from
//! ([`snapshots`]), then the change window the state machine publishes into ([`window`]) and
//! the `Watch` stream that feeds one watcher from it ([`feed`]), with the count of open
//! watch streams ([`Watchers`]).
//!
//! Change sets stay core types in the window and become protobuf in each stream: tonic's
//! generated service takes owned messages, so converting once at publish would still cost a
//! deep copy per watcher (and would put the conversion on the apply path when nobody
//! watches).

pub mod feed;
pub mod snapshots;
pub mod window;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

pub use feed::Feed;
pub use snapshots::Snapshots;
pub use window::{ChangeWindow, WatchItem, WindowMissed};

/// Counts open `Watch` streams and those dropped for not reading.
#[derive(Debug, Default)]
pub struct Watchers {
    open: AtomicUsize,
    dropped: AtomicU64,
}

/// Held by a `Watch` stream's task: counts it as open until dropped.
pub struct WatcherGuard(Arc<Watchers>);

impl Watchers {
    /// Counts a new stream until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> WatcherGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        WatcherGuard(self.clone())
    }

    /// Open streams.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Streams dropped because their watcher stopped reading.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records a stream dropped for not reading.
    pub fn record_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
