//! The Raft state machine: the revocation set in memory and its snapshots on disk. What it
//! applies is published to the change window ([`crate::watch`]) that `Watch` serves.
//!
//! The set is rebuilt at start from the newest snapshot plus the committed log after it
//! (openraft replays it). Snapshots are replaced atomically on a [`SnapshotBackend`] (a file
//! written to a temporary file, synced and renamed, in `revokd`), and carry checksums that are
//! verified before a snapshot is loaded or installed: a corrupt snapshot stops the node
//! instead of being served.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use revokd_core::frame::{FrameError, FrameReader, FrameWriter};
use revokd_core::{Applied, Outcome, RevocationSet};
use tokio::sync::watch;

use super::disk::SnapshotBackend;
use crate::typ::TypeConfig;
use crate::typ::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership};
use crate::watch::ChangeWindow;

const SNAPSHOT_MAGIC: &[u8; 4] = b"RVKF";

/// The state behind the lock.
#[derive(Debug, Default)]
pub struct SmState {
    /// The revocation set.
    pub set: RevocationSet,
    /// The last applied log id.
    pub last_applied: Option<LogId>,
    /// The last applied membership.
    pub membership: StoredMembership,
}

struct Shared {
    state: RwLock<SmState>,
    window: Arc<ChangeWindow>,
    applied: watch::Sender<u64>,
    snapshots: Arc<dyn SnapshotBackend>,
    snapshot_seq: AtomicU64,
    /// Items skipped because their client had given up on them (`revokd_core::order`).
    superseded: AtomicU64,
}

/// Read access to the revocation set, held like [`StateMachineStore::read`].
pub struct SetGuard<'a>(RwLockReadGuard<'a, SmState>);

impl std::ops::Deref for SetGuard<'_> {
    type Target = RevocationSet;

    fn deref(&self) -> &RevocationSet {
        &self.0.set
    }
}

/// The state machine store. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn snap_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_snapshot(None, AnyError::new(&e)).into()
}

fn snap_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

/// Errors opening the state machine.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The snapshot could not be read, or its directory created.
    #[error("storage: snapshot {path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The snapshot on disk is corrupt; the node refuses to serve from it.
    #[error("storage: snapshot {path} is unreadable ({reason}); refusing to start. Move the data directory aside and let the node receive a snapshot from the leader.")]
    Corrupt {
        /// Where.
        path: String,
        /// Why.
        reason: String,
    },
}

impl StateMachineStore {
    /// Opens the state machine on `snapshots`, loading the current snapshot if there is one.
    /// `window_events` bounds the number of recent change events kept for `Watch`.
    pub fn open(
        snapshots: Arc<dyn SnapshotBackend>,
        window_events: usize,
    ) -> Result<Self, OpenError> {
        let path = snapshots.describe();
        let state = match snapshots.read() {
            Ok(Some(bytes)) => {
                let (meta, data) = decode_file(&bytes).map_err(|reason| OpenError::Corrupt {
                    path: path.clone(),
                    reason,
                })?;
                let set = RevocationSet::decode_snapshot(data).map_err(|e| OpenError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                SmState {
                    set,
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership,
                }
            }
            Ok(None) => SmState::default(),
            Err(source) => return Err(OpenError::Io { path, source }),
        };
        let revision = state.set.revision();
        let (applied, _) = watch::channel(revision);
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                window: Arc::new(ChangeWindow::new(revision, window_events)),
                applied,
                snapshots,
                snapshot_seq: AtomicU64::new(0),
                superseded: AtomicU64::new(0),
            }),
        })
    }

    /// Read access to the current state. Hold it briefly: applying waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, SmState> {
        // A poisoned lock means a panic while applying: the state may be half-updated, and
        // serving from it would be wrong. Fail-stop.
        self.shared
            .state
            .read()
            .unwrap_or_else(|_| panic!("state machine lock poisoned: a previous apply panicked"))
    }

    /// Read access to the revocation set alone (what `Snapshot` streams copy).
    pub fn read_set(&self) -> SetGuard<'_> {
        SetGuard(self.read())
    }

    /// How many write items this process applied as skipped, because their client had given
    /// up on them and a later write of that client was applied first (`revokd_core::order`).
    pub fn superseded(&self) -> u64 {
        self.shared.superseded.load(Ordering::Relaxed)
    }

    /// The applied revision, updated after every applied batch.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    /// The window of recent changes that `Watch` streams follow.
    pub fn window(&self) -> &Arc<ChangeWindow> {
        &self.shared.window
    }

    fn write_snapshot_file(&self, meta: &SnapshotMeta, data: &[u8]) -> std::io::Result<()> {
        let meta_bytes = postcard::to_stdvec(meta).map_err(std::io::Error::other)?;
        let file = FrameWriter::with_capacity(12 + meta_bytes.len() + data.len())
            .bytes(SNAPSHOT_MAGIC)
            .u32(meta_bytes.len() as u32)
            .checked(&meta_bytes)
            .bytes(data)
            .finish();
        self.shared.snapshots.write(&file)
    }

    async fn persist_snapshot(
        &self,
        meta: SnapshotMeta,
        data: Arc<Vec<u8>>,
    ) -> Result<(), StorageError> {
        let written = if self.shared.snapshots.blocks() {
            let (this, m) = (self.clone(), meta.clone());
            tokio::task::spawn_blocking(move || this.write_snapshot_file(&m, &data))
                .await
                .map_err(snap_write_err)?
        } else {
            self.write_snapshot_file(&meta, &data)
        };
        written.map_err(|e| {
            StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)).into()
        })
    }
}

/// Splits a snapshot file into its metadata and the core snapshot bytes (which carry their own
/// checksum). Layout ([`revokd_core::frame`]): `b"RVKF"`, the metadata's length (u32 LE), its
/// CRC-32, the postcard-encoded metadata, then the core snapshot.
fn decode_file(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8]), String> {
    let mut frame = FrameReader::new(bytes);
    frame
        .magic(SNAPSHOT_MAGIC)
        .map_err(|_| "not a revokd snapshot file")?;
    let len = frame.u32().map_err(|_| "not a revokd snapshot file")?;
    let meta_bytes = frame.checked(u64::from(len)).map_err(|e| match e {
        FrameError::Checksum { .. } => "metadata checksum mismatch",
        FrameError::BadMagic | FrameError::Truncated { .. } => "truncated metadata",
    })?;
    let meta = postcard::from_bytes(meta_bytes).map_err(|e| format!("metadata: {e}"))?;
    Ok((meta, frame.rest()))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (data, meta) = {
            let st = self.read();
            let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let id = match st.last_applied {
                Some(l) => format!(
                    "{}-{}-{}-{seq}",
                    l.leader_id.term, l.leader_id.node_id, l.index
                ),
                None => format!("0-0-0-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.membership.clone(),
                snapshot_id: id,
            };
            (st.set.encode_snapshot(), meta)
        };
        let data = Arc::new(data);
        self.persist_snapshot(meta.clone(), data.clone()).await?;
        let data = Arc::try_unwrap(data).unwrap_or_else(|d| (*d).clone());
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "storage: snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.read();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        let mut changes = Vec::new();
        let revision = {
            let mut st = self
                .shared
                .state
                .write()
                .map_err(|_| sm_err(std::io::Error::other("state lock poisoned")))?;
            for entry in entries {
                let rev = entry.log_id.index;
                st.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Normal(cmd) => {
                        let (applied, cs) = st.set.apply(rev, &cmd);
                        let skipped = applied
                            .outcomes
                            .iter()
                            .filter(|o| **o == Outcome::Superseded)
                            .count();
                        if skipped > 0 {
                            self.shared
                                .superseded
                                .fetch_add(skipped as u64, Ordering::Relaxed);
                        }
                        replies.push(applied);
                        if !cs.events.is_empty() {
                            changes.push(cs);
                        }
                    }
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(entry.log_id), m);
                        st.set.advance(rev);
                        replies.push(Applied {
                            revision: rev,
                            outcomes: Vec::new(),
                        });
                    }
                    EntryPayload::Blank => {
                        st.set.advance(rev);
                        replies.push(Applied {
                            revision: rev,
                            outcomes: Vec::new(),
                        });
                    }
                }
            }
            st.set.revision()
        };
        self.shared.window.publish(changes);
        self.shared.applied.send_replace(revision);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // Verify before touching anything: a corrupt snapshot is an error, not a new state.
        let set = RevocationSet::decode_snapshot(&data).map_err(|e| {
            tracing::error!(snapshot = %meta.snapshot_id, error = %e, "storage: refusing corrupt snapshot");
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))
        })?;
        self.persist_snapshot(meta.clone(), Arc::new(data)).await?;
        let revision = set.revision();
        {
            let mut st = self
                .shared
                .state
                .write()
                .map_err(|_| sm_err(std::io::Error::other("state lock poisoned")))?;
            st.set = set;
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
        }
        self.shared.window.reset(revision);
        self.shared.applied.send_replace(revision);
        tracing::info!(snapshot = %meta.snapshot_id, revision, "storage: snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let snapshots = self.shared.snapshots.clone();
        let read = if snapshots.blocks() {
            tokio::task::spawn_blocking(move || snapshots.read())
                .await
                .map_err(snap_read_err)?
        } else {
            snapshots.read()
        };
        let Some(bytes) = read.map_err(snap_read_err)? else {
            return Ok(None);
        };
        let (meta, data) =
            decode_file(&bytes).map_err(|e| snap_read_err(std::io::Error::other(e)))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}
