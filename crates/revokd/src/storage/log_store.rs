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
//!
//! Every entry and metadata value is a sealed [`record`]. A crash can tear the last write
//! that had not been flushed (so was never reported durable): a torn last entry is dropped
//! when the store opens, and metadata is written to two slots in turn, so a torn value leaves
//! the one before it to read. A corrupt record (whole, wrong checksum) is an error: the node
//! stops rather than serve from it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::disk::LogBackend;
use super::record::{self, RecordError};
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
    /// Per metadata key, the sequence number of its newest copy (read lazily).
    meta_seqs: Mutex<BTreeMap<&'static [u8], u64>>,
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
        repair_tail(backend.as_ref())?;
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
                meta_seqs: Mutex::default(),
            }),
        })
    }

    /// The newest whole copy of metadata `key`, with its sequence number (0 for a value
    /// written before copies were kept in slots).
    fn newest_meta(&self, key: &'static [u8]) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let backend = &self.inner.backend;
        let mut newest: Option<(u64, Vec<u8>)> = None;
        for slot in 0..2 {
            let Some(v) = backend.get_meta(&slot_key(key, slot)).map_err(read_err)? else {
                continue;
            };
            match record::open(&v) {
                Ok(body) if body.len() >= 8 => {
                    let (seq, value) = body.split_at(8);
                    let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default());
                    if newest.as_ref().is_none_or(|(s, _)| seq > *s) {
                        newest = Some((seq, value.to_vec()));
                    }
                }
                Ok(_) => return Err(read_err(meta_err(key, "a slot without its sequence"))),
                // The write a crash interrupted: never reported durable, the other slot
                // holds the value before it.
                Err(e @ RecordError::Torn { .. }) => {
                    tracing::warn!(key = %String::from_utf8_lossy(key), slot, error = %e, "storage: a torn metadata write; reading the copy before it");
                }
                Err(e) => return Err(read_err(meta_err(key, &e.to_string()))),
            }
        }
        match newest {
            Some(n) => Ok(Some(n)),
            None => Ok(backend
                .get_meta(key)
                .map_err(read_err)?
                .map(|legacy| (0, legacy))),
        }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static [u8],
    ) -> Result<Option<T>, StorageError> {
        let newest = self.newest_meta(key)?;
        self.seqs()
            .insert(key, newest.as_ref().map_or(0, |(s, _)| *s));
        match newest {
            None => Ok(None),
            Some((_, v)) => postcard::from_bytes(&v).map(Some).map_err(read_err),
        }
    }

    /// Writes `value` as the next copy of `key`, into the slot the newest copy is not in.
    fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static [u8],
        value: &T,
    ) -> Result<(), StorageError> {
        let last = match self.seqs().get(key).copied() {
            Some(seq) => seq,
            None => self.newest_meta(key)?.map_or(0, |(s, _)| s),
        };
        let seq = last + 1;
        let mut body = seq.to_le_bytes().to_vec();
        body.extend(postcard::to_stdvec(value).map_err(write_err)?);
        self.inner
            .backend
            .put_meta(&slot_key(key, seq % 2), record::seal(&body))
            .map_err(write_err)?;
        self.seqs().insert(key, seq);
        Ok(())
    }

    fn seqs(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static [u8], u64>> {
        self.inner
            .meta_seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
        postcard::from_bytes(record::open(v).map_err(read_err)?).map_err(read_err)
    }
}

/// The backend key of copy `slot` (0 or 1) of metadata `key`.
fn slot_key(key: &[u8], slot: u64) -> Vec<u8> {
    [key, b"/", slot.to_string().as_bytes()].concat()
}

fn meta_err(key: &[u8], what: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "metadata {:?}: {what}",
        String::from_utf8_lossy(key)
    ))
}

/// Drops the last entry if a crash tore it (it was never flushed, so never acknowledged), and
/// refuses to open a log whose last entry is corrupt.
fn repair_tail(backend: &dyn LogBackend) -> std::io::Result<()> {
    let Some((index, bytes)) = backend.last_entry()? else {
        return Ok(());
    };
    match record::open(&bytes) {
        Ok(_) => Ok(()),
        Err(e @ RecordError::Torn { .. }) => {
            tracing::warn!(index, error = %e, "storage: the last log entry was torn by a crash (it was never acknowledged); dropping it");
            backend.remove_from(index)?;
            backend.flush()?;
            match backend.last_entry()? {
                Some((index, bytes)) if record::open(&bytes).is_err() => {
                    Err(std::io::Error::other(format!(
                        "log entry {index} is damaged too, under a torn last entry: more than one write was lost; the node stops rather than serve from this log (remove its data directory and add it back to the cluster)"
                    )))
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(std::io::Error::other(format!(
            "log entry {index} is {e}; the node stops rather than serve from a damaged log (remove its data directory and add it back to the cluster)"
        ))),
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

    /// What replication reads. openraft 0.9 sends whatever comes back as the entries that
    /// follow `start - 1`, so entries purged while a stream reads (a leader compacts behind a
    /// new snapshot) must not leave a gap, which the follower would store as a hole in its
    /// log: only the run that starts exactly at `start` is returned, and nothing if `start`
    /// is gone (openraft then treats the round as a heartbeat, and sends the snapshot once it
    /// sees the follower needs purged entries).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut entries = self.try_get_log_entries(start..end).await?;
        let run = entries
            .iter()
            .zip(start..)
            .take_while(|(e, index)| e.log_id.index == *index)
            .count();
        entries.truncate(run);
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = match self.inner.backend.last_entry().map_err(read_err)? {
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
        let mut batch = Vec::new();
        for entry in entries {
            let bytes = postcard::to_stdvec(&entry).map_err(write_err)?;
            batch.push((entry.log_id.index, record::seal(&bytes)));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::storage::disk::MemDisk;

    fn entry(index: u64) -> (u64, Vec<u8>) {
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        };
        (index, record::seal(&postcard::to_stdvec(&e).unwrap()))
    }

    async fn last_index(store: &mut LogStore) -> Option<u64> {
        store
            .get_log_state()
            .await
            .unwrap()
            .last_log_id
            .map(|l| l.index)
    }

    #[tokio::test]
    async fn replication_never_reads_across_a_gap_left_by_a_purge() {
        let disk = MemDisk::new(Duration::ZERO);
        let mut store = LogStore::open(disk.clone()).unwrap();
        disk.insert_entries((1..=10).map(entry).collect()).unwrap();
        let purged = LogId::new(CommittedLeaderId::new(1, 1), 6);
        store.purge(purged).await.unwrap();
        let indexes = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        // A stream that was at 3 when the purge came: nothing, not 7..=10 after 2.
        assert!(store
            .limited_get_log_entries(3, 11)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            indexes(store.limited_get_log_entries(7, 11).await.unwrap()),
            [7, 8, 9, 10]
        );
        assert_eq!(
            indexes(store.limited_get_log_entries(8, 10).await.unwrap()),
            [8, 9]
        );
    }

    #[tokio::test]
    async fn what_a_crash_tore_is_dropped_and_what_went_bad_stops_the_node() {
        let disk = MemDisk::new(Duration::ZERO);
        let mut store = LogStore::open(disk.clone()).unwrap();
        disk.insert_entries(vec![entry(1), entry(2)]).unwrap();
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        assert_eq!(last_index(&mut store).await, Some(2));

        // Entries 3 and 4 not flushed yet: the crash tears the batch inside entry 4.
        disk.insert_entries(vec![entry(3), entry(4)]).unwrap();
        // 60%: entry 3 arrives whole, entry 4 is cut short.
        disk.crash_torn(600);
        let mut store = LogStore::open(disk.clone()).unwrap();
        assert_eq!(last_index(&mut store).await, Some(3));

        // A vote not flushed yet, torn: the one before it is read (never reported durable,
        // so nobody was told of the new one).
        store.put_meta(VOTE, &Vote::new(2, 2)).unwrap();
        disk.crash_torn(500);
        let mut store = LogStore::open(disk.clone()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
        // Both slots in turn keep working after it.
        for term in 3..6 {
            store.save_vote(&Vote::new(term, 2)).await.unwrap();
            let mut reopened = LogStore::open(disk.clone()).unwrap();
            assert_eq!(
                reopened.read_vote().await.unwrap(),
                Some(Vote::new(term, 2))
            );
        }

        // A whole last entry with a flipped byte is damage, not a torn write.
        let (index, mut bytes) = entry(3);
        let at = bytes.len() - 1;
        bytes[at] ^= 0x40;
        disk.insert_entries(vec![(index, bytes)]).unwrap();
        disk.flush().unwrap();
        let err = LogStore::open(disk.clone())
            .err()
            .expect("a corrupt entry refused");
        assert!(err.to_string().contains("log entry 3 is corrupt"), "{err}");
    }

    #[tokio::test]
    async fn values_written_before_records_were_sealed_still_read() {
        let disk = MemDisk::new(Duration::ZERO);
        let old = Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), 1),
            payload: EntryPayload::Blank,
        };
        disk.insert_entries(vec![(1, postcard::to_stdvec(&old).unwrap())])
            .unwrap();
        disk.put_meta(VOTE, postcard::to_stdvec(&Vote::new(2, 1)).unwrap())
            .unwrap();
        disk.flush().unwrap();
        let mut store = LogStore::open(disk.clone()).unwrap();
        assert_eq!(last_index(&mut store).await, Some(1));
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        store.save_vote(&Vote::new(3, 1)).await.unwrap();
        let mut store = LogStore::open(disk.clone()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    }
}
