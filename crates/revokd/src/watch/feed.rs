//! One `Watch` stream: the change sets after the revision it started from, then every new
//! one as it is applied, and progress messages that say how far this node has applied. A
//! watcher that takes nothing for the stall timeout while messages wait is ended; one that
//! falls behind the live feed picks up again from the window.

use std::sync::Arc;
use std::time::Duration;

use revokd_core::ChangeSet;
use revokd_proto::convert::event_pb;
use revokd_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;

use super::window::{ChangeWindow, WatchItem, WindowMissed};
use super::Watchers;
use crate::error::Error;
use crate::replicas::Sending;

/// Messages queued for one watcher before the stream waits for it to read.
const STREAM_BUFFER: usize = 256;

/// The messages of one stream, as tonic sends them.
pub type Messages = mpsc::Receiver<Result<pb::WatchResponse, Status>>;

/// A watch subscribed to the window, not yet streaming.
pub struct Feed {
    window: Arc<ChangeWindow>,
    applied: watch::Receiver<u64>,
    /// The highest revision sent.
    last: u64,
    /// Change sets received but not sent yet.
    backlog: Vec<Arc<ChangeSet>>,
    live: broadcast::Receiver<WatchItem>,
}

fn missed(from: u64) -> impl FnOnce(WindowMissed) -> Error {
    move |m| Error::OutOfRange {
        from,
        start: m.window_start,
    }
}

impl Feed {
    /// Subscribes after `from`; OUT_OF_RANGE when the window no longer reaches back to it.
    pub fn subscribe(
        window: Arc<ChangeWindow>,
        applied: watch::Receiver<u64>,
        from: u64,
    ) -> Result<Feed, Error> {
        let (backlog, live) = window.watch_from(from).map_err(missed(from))?;
        Ok(Feed {
            window,
            applied,
            last: from,
            backlog,
            live,
        })
    }

    /// Streams from a task of its own, counted in `watchers` while it lasts, and returns what
    /// the stream sends. `sending` records how far it got (heartbeat plausibility).
    pub fn spawn(self, watchers: Arc<Watchers>, stall: Duration, sending: Sending) -> Messages {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            let _open = watchers.enter();
            let mut stream = Stream {
                feed: self,
                tx,
                stall,
                sending,
            };
            if let Err(Gone::Stalled) = stream.run().await {
                watchers.record_dropped();
                tracing::warn!(
                    ?stall,
                    revision = stream.feed.last,
                    "watch: ended a stream whose reader took nothing"
                );
            }
        });
        rx
    }
}

/// Why a watch stream ended early.
enum Gone {
    /// The watcher disconnected.
    Left,
    /// The watcher read nothing for the stall timeout while messages waited.
    Stalled,
}

/// A feed being streamed to one watcher.
struct Stream {
    feed: Feed,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    /// How long a message may wait for the watcher to take it.
    stall: Duration,
    /// Records how far this stream has sent the set.
    sending: Sending,
}

impl Stream {
    /// Streams until the watcher leaves, stalls, or the node stops.
    async fn run(&mut self) -> Result<(), Gone> {
        // Say at once how far this node has applied, even if no change comes: a watcher
        // starting below it learns it is current.
        self.feed.applied.mark_changed();
        loop {
            self.flush().await?;
            let step = tokio::select! {
                biased;
                item = self.feed.live.recv() => self.feed.take(item),
                changed = self.feed.applied.changed() => match changed {
                    Err(_) => Err(Status::unavailable("revokd: node is shutting down")),
                    Ok(()) => {
                        // Every change set up to `revision` was published before the
                        // applied revision moved: take them all, then say so.
                        let revision = *self.feed.applied.borrow_and_update();
                        self.feed.drain().map(|()| Some(revision))
                    }
                },
            };
            match step {
                Err(status) => {
                    let _ = self.send(Err(status)).await;
                    return Ok(());
                }
                Ok(None) => {}
                Ok(Some(revision)) => {
                    self.flush().await?;
                    if revision > self.feed.last {
                        self.feed.last = revision;
                        let progress = pb::WatchResponse {
                            revision,
                            events: Vec::new(),
                        };
                        self.send(Ok(progress)).await?;
                    }
                }
            }
        }
    }

    /// Queues one message for the watcher, waiting at most the stall timeout for room.
    async fn send(&self, msg: Result<pb::WatchResponse, Status>) -> Result<(), Gone> {
        if let Ok(m) = &msg {
            self.sending.advance(m.revision);
        }
        match self.tx.send_timeout(msg, self.stall).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(Gone::Stalled),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Gone::Left),
        }
    }

    /// Sends the backlog in order, skipping what was already sent.
    async fn flush(&mut self) -> Result<(), Gone> {
        for cs in std::mem::take(&mut self.feed.backlog) {
            if cs.revision <= self.feed.last {
                continue;
            }
            self.feed.last = cs.revision;
            let msg = pb::WatchResponse {
                revision: cs.revision,
                events: cs.events.iter().map(event_pb).collect(),
            };
            self.send(Ok(msg)).await?;
        }
        Ok(())
    }
}

impl Feed {
    /// Takes one item from the live feed into the backlog.
    fn take(
        &mut self,
        item: Result<WatchItem, broadcast::error::RecvError>,
    ) -> Result<Option<u64>, Status> {
        match item {
            Ok(WatchItem::Changes(cs)) => self.backlog.push(cs),
            Ok(WatchItem::Reset(at)) if at > self.last => {
                return Err(Error::OutOfRange {
                    from: self.last,
                    start: at,
                }
                .into());
            }
            Ok(WatchItem::Reset(_)) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // This watcher fell behind the live feed: pick up again from the window, which
                // keeps far more history than the feed's buffer.
                let (backlog, live) = self
                    .window
                    .watch_from(self.last)
                    .map_err(missed(self.last))?;
                self.backlog = backlog;
                self.live = live;
            }
            Err(broadcast::error::RecvError::Closed) => {
                return Err(Status::unavailable("revokd: node is shutting down"));
            }
        }
        Ok(None)
    }

    /// Takes everything already in the live feed.
    fn drain(&mut self) -> Result<(), Status> {
        loop {
            let item = match self.live.try_recv() {
                Ok(item) => Ok(item),
                Err(broadcast::error::TryRecvError::Empty) => return Ok(()),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    Err(broadcast::error::RecvError::Closed)
                }
            };
            self.take(item)?;
        }
    }
}
