//! openraft's storage conformance suite, run against the real sled log and state machine on
//! disk and against the in-memory disk the simulation uses, plus the crash-safety properties
//! the suite does not cover.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder};
use revokd::storage::{self, LogStore, MemDisk, StateMachineStore};
use revokd::typ::{StorageError, TypeConfig};
use revokd_core::{Command, TokenSpec};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = storage::open(dir.path(), 1_000).expect("open storage");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(SledBuilder)
}

/// The simulation's disk: memory, with flushes that take (simulated) time.
struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore> for MemBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        let disk = MemDisk::new(std::time::Duration::from_millis(1));
        let (log, sm) = storage::open_disk(&disk.disk(), 1_000).expect("open storage");
        Ok(((), log, sm))
    }
}

#[test]
fn openraft_storage_suite_on_the_memory_disk() -> Result<(), StorageError> {
    Suite::test_all(MemBuilder)
}

/// On the memory disk, a crash keeps what was acknowledged durable (appends reported flushed,
/// the vote) and loses what was only buffered (the committed index is not flushed on its own).
#[tokio::test]
async fn a_crash_keeps_what_was_acknowledged() {
    let disk = MemDisk::new(std::time::Duration::from_millis(2));
    {
        let (mut log, _sm) = storage::open_disk(&disk.disk(), 100).unwrap();
        let entries: Vec<_> = (1..=3)
            .map(|i| revoke_entry(1, i, &format!("t{i}")))
            .collect();
        log.blocking_append(entries).await.unwrap();
        log.save_vote(&openraft::Vote::new(2, 1)).await.unwrap();
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
    }
    assert_eq!(disk.crash(), 1, "only the committed index was unflushed");
    let (mut log, _sm) = storage::open_disk(&disk.disk(), 100).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new(2, 1))
    );
    assert_eq!(log.read_committed().await.unwrap(), None);
    let got = log.try_get_log_entries(1..=3).await.unwrap();
    assert_eq!(got.len(), 3);
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn revoke_entry(term: u64, index: u64, jti: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::Revoke {
            tokens: vec![TokenSpec {
                jti: jti.into(),
                expires_at: i64::MAX,
                reason: String::new(),
                subject: String::new(),
            }],
            now: 0,
            by: "test".into(),
        }),
    }
}

/// The log and a built snapshot survive reopening, and the state machine comes back from the
/// snapshot at the same revision with the same content.
#[tokio::test]
async fn log_and_snapshot_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut sm) = storage::open(dir.path(), 100).unwrap();
        let entries: Vec<_> = (1..=5)
            .map(|i| revoke_entry(1, i, &format!("t{i}")))
            .collect();
        log.blocking_append(entries.clone()).await.unwrap();
        sm.apply(entries).await.unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 5)));
        log.truncate(log_id(1, 4)).await.unwrap();
        log.flush().await.unwrap();
    }
    let (mut log, mut sm) = storage::open(dir.path(), 100).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(
        state.last_log_id,
        Some(log_id(1, 3)),
        "truncation persisted"
    );
    let got = log.try_get_log_entries(1..4).await.unwrap();
    assert_eq!(got.len(), 3);
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 5)));
    let st = sm.read();
    assert_eq!(st.set.token_count(), 5);
    assert_eq!(st.set.revision(), 5);
}

/// A snapshot file damaged on disk stops the node at start instead of being served.
#[tokio::test]
async fn corrupt_snapshot_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = storage::open(dir.path(), 100).unwrap();
        sm.apply(vec![revoke_entry(1, 1, "a")]).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let path = dir.path().join("snapshots/current.snap");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = storage::open(dir.path(), 100).err().expect("must refuse");
    assert!(err.to_string().contains("checksum"), "{err}");
}

/// A snapshot received from a leader is verified before it replaces the state.
#[tokio::test]
async fn corrupt_received_snapshot_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = storage::open(dir.path(), 100).unwrap();
    sm.apply(vec![revoke_entry(1, 1, "keep")]).await.unwrap();
    let mut snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut data = snap.snapshot.into_inner();
    let last = data.len() - 1;
    data[last] ^= 0x01;
    snap.meta.last_log_id = Some(log_id(2, 10));
    let res = sm
        .install_snapshot(&snap.meta, Box::new(std::io::Cursor::new(data)))
        .await;
    assert!(res.is_err());
    assert_eq!(sm.read().set.revision(), 1, "state untouched");
    assert!(sm.read().set.token("keep").is_some());
}
