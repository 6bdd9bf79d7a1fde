//! The Raft log and vote, on a [`LogBackend`] (sled in `revokd`, memory in simulation).
//!
//! The backend may buffer writes, so nothing is reported persisted before a flush returns:
//! an append is acknowledged to openraft (and so counts toward a quorum) only once it is
//! durable.
//!
//! Group commit: `append` only writes the entries into the backend's buffers and hands
//! openraft's completion callback to a flusher. While one flush is on its way to disk, later
//! appends queue up; the next flush then covers all of them at once, and their callbacks fire
//! in order. Durability costs one fsync per group, not one per request. The flusher is a
//! thread for a backend whose flush blocks (sled's fsync), a task otherwise.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::disk::LogBackend;
use crate::typ::TypeConfig;
use crate::typ::{Entry, LogId, StorageError, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log store. Cheap to clone: clones share the same backend.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn LogBackend>,
    /// Completion callbacks waiting for the next flush, in append order.
    flusher: UnboundedSender<LogFlushed<TypeConfig>>,
    /// The flusher thread (blocking backends), joined on drop so the database is closed (and
    /// its lock released) when the store is.
    flush_thread: Option<std::thread::JoinHandle<()>>,
}

fn io_err(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    /// Opens the log on `backend`. A non-blocking backend needs a tokio runtime (its flusher
    /// is a task).
    pub fn open(backend: Arc<dyn LogBackend>) -> std::io::Result<Self> {
        let (flusher, pending) = tokio::sync::mpsc::unbounded_channel();
        let flush_thread = if backend.flush_blocks() {
            let backend = backend.clone();
            Some(
                std::thread::Builder::new()
                    .name("revokd-log-flush".into())
                    .spawn(move || {
                        flush_loop_blocking(backend.as_ref(), pending);
                    })?,
            )
        } else {
            tokio::spawn(flush_loop_async(backend.clone(), pending));
            None
        };
        Ok(LogStore {
            inner: Arc::new(Inner {
                backend,
                flusher,
                flush_thread,
            }),
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.inner.backend.get_meta(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => postcard::from_bytes(&v).map(Some).map_err(read_err),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = postcard::to_stdvec(value).map_err(write_err)?;
        self.inner.backend.put_meta(key, bytes).map_err(write_err)
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let backend = self.inner.backend.clone();
        if backend.flush_blocks() {
            tokio::task::spawn_blocking(move || backend.flush())
                .await
                .map_err(write_err)?
                .map_err(write_err)
        } else {
            if let Some(t) = backend.simulated_flush_time().filter(|t| !t.is_zero()) {
                tokio::time::sleep(t).await;
            }
            backend.flush().map_err(write_err)
        }
    }

    fn decode(v: &[u8]) -> Result<Entry, StorageError> {
        postcard::from_bytes(v).map_err(read_err)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the flusher after it has flushed what is pending.
        let (closed, _) = tokio::sync::mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.flusher, closed));
        if let Some(t) = self.flush_thread.take() {
            let _ = t.join();
        }
    }
}

/// Completes a group of callbacks with the result of the flush that covered them.
fn complete(group: Vec<LogFlushed<TypeConfig>>, result: &std::io::Result<()>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "storage: log flush failed; the node cannot make progress");
    }
    for cb in group {
        let r = match result {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        cb.log_io_completed(r);
    }
}

/// Flushes whenever appends are waiting, then completes every callback that was queued before
/// the flush started. Runs on its own thread: fsync blocks.
fn flush_loop_blocking(
    backend: &dyn LogBackend,
    mut pending: UnboundedReceiver<LogFlushed<TypeConfig>>,
) {
    while let Some(first) = pending.blocking_recv() {
        let mut group = vec![first];
        while let Ok(next) = pending.try_recv() {
            group.push(next);
        }
        complete(group, &backend.flush());
    }
}

/// The same for a backend whose flush does not block; a simulated flush time passes on the
/// runtime's clock before the flush takes effect.
async fn flush_loop_async(
    backend: Arc<dyn LogBackend>,
    mut pending: UnboundedReceiver<LogFlushed<TypeConfig>>,
) {
    while let Some(first) = pending.recv().await {
        if let Some(t) = backend.simulated_flush_time().filter(|t| !t.is_zero()) {
            tokio::time::sleep(t).await;
        }
        let mut group = vec![first];
        while let Ok(next) = pending.try_recv() {
            group.push(next);
        }
        complete(group, &backend.flush());
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = range.end_bound().cloned();
        self.inner
            .backend
            .entries(start, end)
            .map_err(read_err)?
            .iter()
            .map(|v| Self::decode(v))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = match self.inner.backend.last_entry().map_err(read_err)? {
            Some(v) => Some(Self::decode(&v)?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote).map_err(|_| {
            io_err(
                ErrorSubject::Vote,
                ErrorVerb::Write,
                std::io::Error::other("vote"),
            )
        })?;
        // A vote must survive a crash before it is reported: otherwise a node could vote twice
        // in one term.
        self.flush().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on its own: losing it only means re-learning the commit index from the
        // leader. It reaches disk with the next append or vote.
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = Vec::new();
        for entry in entries {
            let bytes = postcard::to_stdvec(&entry).map_err(write_err)?;
            batch.push((entry.log_id.index, bytes));
        }
        self.inner
            .backend
            .insert_entries(batch)
            .map_err(write_err)?;
        // Reported persisted by the flusher once the next flush covers these entries.
        self.inner
            .flusher
            .send(callback)
            .map_err(|_| write_err(std::io::Error::other("log flusher stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // One atomic removal: a crash leaves either the whole suffix or none of it, never a
        // hole.
        self.inner
            .backend
            .remove_from(log_id.index)
            .map_err(write_err)?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: after a crash between the two steps, entries at or
        // below it are simply ignored.
        self.put_meta(LAST_PURGED, &log_id)?;
        self.inner
            .backend
            .remove_through(log_id.index)
            .map_err(write_err)?;
        self.flush().await
    }
}
