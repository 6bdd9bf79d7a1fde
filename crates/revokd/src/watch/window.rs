//! The change window: the recent change sets a `Watch` can resume from, and the live feed
//! that carries new ones to every open stream, with no gap between the two.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use revokd_core::ChangeSet;
use tokio::sync::broadcast;

/// Change sets the live feed buffers for a watcher that is busy; one that falls further
/// behind picks up again from the window, which keeps far more.
const FEED_BUFFER: usize = 4096;

/// What a watcher receives from the live feed.
#[derive(Clone, Debug)]
pub enum WatchItem {
    /// The changes of one revision.
    Changes(Arc<ChangeSet>),
    /// A snapshot replaced the state at this revision: changes before it are not available.
    Reset(u64),
}

/// Why a watch cannot start at the requested revision.
#[derive(Debug, Clone, Copy)]
pub struct WindowMissed {
    /// The oldest revision a watch can start after.
    pub window_start: u64,
}

/// The bounded history behind the lock.
struct History {
    /// Every change set with a revision above `start` is in `items`.
    start: u64,
    items: VecDeque<Arc<ChangeSet>>,
    events: usize,
    max_events: usize,
}

/// The window of recent change sets and the live feed. The state machine publishes into it
/// as it applies; watch streams subscribe to it.
pub struct ChangeWindow {
    history: Mutex<History>,
    feed: broadcast::Sender<WatchItem>,
}

impl ChangeWindow {
    /// An empty window starting at `revision`, keeping about `max_events` events.
    pub fn new(revision: u64, max_events: usize) -> Self {
        let (feed, _) = broadcast::channel(FEED_BUFFER);
        ChangeWindow {
            history: Mutex::new(History {
                start: revision,
                items: VecDeque::new(),
                events: 0,
                max_events: max_events.max(1),
            }),
            feed,
        }
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The oldest revision a watch can start after.
    pub fn start(&self) -> u64 {
        self.history().start
    }

    /// Starts a watch after `from`: the buffered change sets above `from` and the live feed
    /// from there on, with no gap between them.
    pub fn watch_from(
        &self,
        from: u64,
    ) -> Result<(Vec<Arc<ChangeSet>>, broadcast::Receiver<WatchItem>), WindowMissed> {
        let history = self.history();
        if from < history.start {
            return Err(WindowMissed {
                window_start: history.start,
            });
        }
        let rx = self.feed.subscribe();
        let backlog = history
            .items
            .iter()
            .filter(|c| c.revision > from)
            .cloned()
            .collect();
        Ok((backlog, rx))
    }

    /// Adds freshly applied change sets and sends them to every open stream.
    pub fn publish(&self, changes: Vec<ChangeSet>) {
        if changes.is_empty() {
            return;
        }
        let mut w = self.history();
        for cs in changes {
            let cs = Arc::new(cs);
            w.events += cs.events.len();
            w.items.push_back(cs.clone());
            // No receivers is fine: nobody is watching.
            let _ = self.feed.send(WatchItem::Changes(cs));
        }
        while w.events > w.max_events && w.items.len() > 1 {
            if let Some(old) = w.items.pop_front() {
                w.events -= old.events.len();
                w.start = old.revision;
            }
        }
    }

    /// A snapshot replaced the state at `revision`: forgets the history and tells every
    /// stream that changes before it are gone.
    pub fn reset(&self, revision: u64) {
        let mut w = self.history();
        w.items.clear();
        w.events = 0;
        w.start = revision;
        let _ = self.feed.send(WatchItem::Reset(revision));
    }
}
