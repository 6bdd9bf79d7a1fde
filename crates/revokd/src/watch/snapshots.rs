//! `Snapshot` streams without a copy of the set per caller: every stream started at the same
//! revision shares one immutable copy, taken once under the state lock; at most
//! [`MAX_SNAPSHOT_STREAMS`] streams run at once; and a stream whose reader takes nothing for
//! the stall timeout is ended, like a stalled `Watch`. A flood of callers that never read
//! therefore holds one copy of the set and a bounded number of chunks, not one copy each.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use revokd_core::{RevocationSet, StoredToken};
use revokd_proto::v1 as pb;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::error::Error;
use revokd_proto::convert::{rule_pb, token_pb};

/// Most `Snapshot` streams a node serves at once. Validators take a snapshot when they start
/// or fall out of the watch window, so this many at once is already a fleet restarting.
pub const MAX_SNAPSHOT_STREAMS: usize = 32;
/// The retry hint given to a caller refused for [`MAX_SNAPSHOT_STREAMS`].
const BUSY_RETRY: Duration = Duration::from_millis(500);
/// Largest chunk a caller may ask for, in tokens.
pub const MAX_CHUNK: usize = 100_000;
/// Chunk size when the caller asks for none (the proto's documented default).
pub const DEFAULT_CHUNK: usize = 10_000;
/// A chunk also ends once it holds about this much token data, whatever the caller asked:
/// what a stalled reader pins is a few chunks, so their size must not be the caller's choice.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// About what `t` costs in a chunk (its text, its numbers, framing).
fn approx_size(t: &StoredToken) -> usize {
    t.jti().len() + t.reason().len() + t.subject().len() + t.revoked_by().len() + 32
}

/// The set at one revision, shared by every stream that started at that revision. The tokens
/// are the set's own entries, shared (a pointer each), not copies of their text.
struct Copy {
    revision: u64,
    tokens: Vec<StoredToken>,
    rules: Vec<pb::Rule>,
}

/// The node's snapshot streams: the shared copy and the stream slots.
pub struct Snapshots {
    slots: Arc<Semaphore>,
    /// The latest copy taken. Held while a copy is taken, so concurrent callers at a new
    /// revision wait for one copy instead of each taking their own.
    latest: Mutex<Option<Arc<Copy>>>,
    /// Streams ended because their reader took nothing for the stall timeout.
    stalled: AtomicU64,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots {
            slots: Arc::new(Semaphore::new(MAX_SNAPSHOT_STREAMS)),
            latest: Mutex::default(),
            stalled: AtomicU64::new(0),
        }
    }
}

/// A stream slot and the copy it sends.
pub struct Reservation {
    copy: Arc<Copy>,
    _slot: OwnedSemaphorePermit,
}

impl Snapshots {
    /// Takes a stream slot and the copy of the set at the current revision (shared when one
    /// was already taken at that revision). Busy when every slot is taken.
    pub fn reserve<S: Deref<Target = RevocationSet>>(
        &self,
        read: impl FnOnce() -> S,
    ) -> Result<Reservation, Error> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::SnapshotsBusy {
                max: MAX_SNAPSHOT_STREAMS,
                retry_after: BUSY_RETRY,
            })?;
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let set = read();
        let copy = match latest.as_ref() {
            Some(c) if c.revision == set.revision() => c.clone(),
            _ => {
                let copy = Arc::new(Copy {
                    revision: set.revision(),
                    tokens: set.tokens().cloned().collect(),
                    rules: set.rules().map(rule_pb).collect(),
                });
                // Dropping the previous copy here frees it unless a stream still sends it.
                *latest = Some(copy.clone());
                copy
            }
        };
        drop(set);
        Ok(Reservation { copy, _slot: slot })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        MAX_SNAPSHOT_STREAMS - self.slots.available_permits()
    }

    /// Streams ended so far because their reader stalled.
    pub fn stalled(&self) -> u64 {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Records a stream ended for stalling.
    pub fn record_stalled(&self) {
        self.stalled.fetch_add(1, Ordering::Relaxed);
    }
}

impl Reservation {
    /// The revision of the state this reservation sends.
    pub fn revision(&self) -> u64 {
        self.copy.revision
    }

    /// Sends the copy in chunks of at most `chunk` tokens and about [`MAX_CHUNK_BYTES`] (the
    /// rules ride with the first) until the last chunk is taken, the reader leaves, or the
    /// reader takes nothing for `stall`.
    /// Returns whether the stream was ended for stalling.
    pub async fn send(
        self,
        chunk: usize,
        stall: Duration,
        tx: mpsc::Sender<Result<pb::SnapshotChunk, tonic::Status>>,
    ) -> bool {
        let copy = &self.copy;
        let tokens = &copy.tokens;
        let total_tokens = tokens.len() as u64;
        let total_rules = copy.rules.len() as u64;
        let chunk = chunk.max(1);
        let (mut start, mut first) = (0, true);
        loop {
            let (mut end, mut bytes) = (start, 0);
            while end < tokens.len()
                && end - start < chunk
                && (end == start || bytes < MAX_CHUNK_BYTES)
            {
                bytes += approx_size(&tokens[end]);
                end += 1;
            }
            let last = end >= tokens.len();
            let msg = pb::SnapshotChunk {
                revision: copy.revision,
                tokens: tokens[start..end].iter().map(token_pb).collect(),
                rules: if first {
                    copy.rules.clone()
                } else {
                    Vec::new()
                },
                last,
                total_tokens,
                total_rules,
            };
            first = false;
            start = end;
            match tokio::time::timeout(stall, tx.send(Ok(msg))).await {
                Err(_) => return true,
                Ok(Err(_)) => return false,
                Ok(Ok(())) if last => return false,
                Ok(Ok(())) => {}
            }
        }
    }
}

/// The chunk size to use for a request's `chunk_size`.
pub fn chunk_size(asked: u32) -> usize {
    match asked {
        0 => DEFAULT_CHUNK,
        n => (n as usize).min(MAX_CHUNK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_bounded() {
        assert_eq!(chunk_size(0), DEFAULT_CHUNK);
        assert_eq!(chunk_size(7), 7);
        assert_eq!(chunk_size(u32::MAX), MAX_CHUNK);
    }
}
