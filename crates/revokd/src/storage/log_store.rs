//! The Raft log and vote, in sled.
//!
//! sled buffers writes in user space, so nothing is reported persisted before
//! `flush_async` returns: an append is acknowledged to openraft (and so counts toward a
//! quorum) only once it is on disk.
//!
//! Group commit: `append` only writes the entries into sled's buffers and hands openraft's
//! completion callback to a flusher task. While one flush is on its way to disk, later appends
//! queue up; the next flush then covers all of them at once, and their callbacks fire in
//! order. Durability costs one fsync per group, not one per request.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError};

use crate::consensus::typ::{Entry, LogId, StorageError, Vote};
use crate::consensus::TypeConfig;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The sled-backed Raft log store. Cheap to clone: clones share the same trees.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// Completion callbacks waiting for the next flush, in append order.
    flusher: tokio::sync::mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
    /// The flusher thread, joined on drop so the database is closed (and its lock released)
    /// when the store is.
    flush_thread: Option<std::thread::JoinHandle<()>>,
    /// Log entries keyed by big-endian index, so key order is log order.
    logs: sled::Tree,
    /// Vote, committed log id, last purged log id.
    meta: sled::Tree,
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
    /// Opens (or creates) the log in `db`.
    pub fn open(db: sled::Db) -> Result<Self, sled::Error> {
        let logs = db.open_tree("raft_log")?;
        let meta = db.open_tree("raft_meta")?;
        let (flusher, pending) = tokio::sync::mpsc::unbounded_channel();
        let flush_thread = std::thread::Builder::new()
            .name("revokd-log-flush".into())
            .spawn({
                let db = db.clone();
                move || flush_loop(db, pending)
            })?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                db,
                flusher,
                flush_thread: Some(flush_thread),
                logs,
                meta,
            }),
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.inner.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => postcard::from_bytes(&v).map(Some).map_err(read_err),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = postcard::to_stdvec(value).map_err(write_err)?;
        self.inner.meta.insert(key, bytes).map_err(write_err)?;
        Ok(())
    }

    /// Writes everything buffered to disk.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.inner.db.flush_async().await.map_err(write_err)?;
        Ok(())
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

/// Flushes sled whenever appends are waiting, then completes every callback that was queued
/// before the flush started. Runs on its own thread: fsync blocks.
fn flush_loop(
    db: sled::Db,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>,
) {
    while let Some(first) = pending.blocking_recv() {
        let mut group = vec![first];
        while let Ok(next) = pending.try_recv() {
            group.push(next);
        }
        let result = db.flush();
        if let Err(e) = &result {
            tracing::error!(error = %e, "storage: log flush failed; the node cannot make progress");
        }
        for cb in group {
            let r = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            cb.log_io_completed(r);
        }
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
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
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(key(*i)),
            Bound::Excluded(i) => Bound::Excluded(key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self.inner.logs.range((Bound::Included(key(start)), end)) {
            let (_, v) = kv.map_err(read_err)?;
            out.push(Self::decode(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = match self.inner.logs.last().map_err(read_err)? {
            Some((_, v)) => Some(Self::decode(&v)?.log_id),
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
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = postcard::to_stdvec(&entry).map_err(write_err)?;
            batch.insert(&key(entry.log_id.index), bytes);
        }
        self.inner.logs.apply_batch(batch).map_err(write_err)?;
        // Reported persisted by the flusher once the next flush covers these entries.
        self.inner
            .flusher
            .send(callback)
            .map_err(|_| write_err(std::io::Error::other("log flusher stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // One atomic batch: a crash leaves either the whole suffix or none of it, never a hole.
        let mut batch = sled::Batch::default();
        for kv in self.inner.logs.range(key(log_id.index)..) {
            let (k, _) = kv.map_err(read_err)?;
            batch.remove(k);
        }
        self.inner.logs.apply_batch(batch).map_err(write_err)?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: after a crash between the two steps, entries at or
        // below it are simply ignored.
        self.put_meta(LAST_PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for kv in self.inner.logs.range(..=key(log_id.index)) {
            let (k, _) = kv.map_err(read_err)?;
            batch.remove(k);
        }
        self.inner.logs.apply_batch(batch).map_err(write_err)?;
        self.flush().await
    }
}
