//! The proposer: coalesces concurrent writes into one Raft log entry.
//!
//! Each log entry costs a replication round and an fsync on a quorum, whatever it carries.
//! While up to `max_in_flight` entries are on their way, new requests wait in a queue; the
//! next entry then carries all of them as one [`Command::Batch`]. A lone client still gets a
//! one-command entry at once, so batching adds no latency when there is nothing to batch.

use std::sync::Arc;

use revokd_core::{Applied, Command};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::Error;
use crate::typ::Raft;

/// Most queued requests before callers wait (backpressure).
const QUEUE: usize = 16_384;
/// Most bytes of commands coalesced into one entry: a log entry must replicate within a
/// heartbeat interval.
const MAX_ENTRY_BYTES: usize = 512 * 1024;

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<Applied, Error>>,
}

/// Handle to the batching task. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the batching task for `raft`: at most `max_in_flight` entries outstanding, at
    /// most `max_items` outcomes (tokens) per entry.
    pub fn start(raft: Raft, max_in_flight: usize, max_items: usize) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx, max_in_flight.max(1), max_items.max(1)));
        Proposer { tx }
    }

    /// Proposes `cmd` and waits until it is committed and applied. [`Error::NotLeader`] when
    /// this node is not (or no longer) the leader.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, Error> {
        let (reply, rx) = oneshot::channel();
        let stopped = || Error::Stopped("proposer stopped");
        self.tx
            .send(Pending { cmd, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>, max_in_flight: usize, max_items: usize) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // A queued write whose caller has gone (its deadline passed while it waited for a
        // slot) is dropped unproposed: its caller was told it failed, so it must not happen.
        let first = loop {
            let Some(p) = rx.recv().await else { return };
            if !p.reply.is_closed() {
                break p;
            }
        };
        let mut items = first.cmd.outcome_count();
        let mut bytes = first.cmd.approx_size();
        let mut batch = vec![first];
        while items < max_items && bytes < MAX_ENTRY_BYTES {
            match rx.try_recv() {
                Ok(p) if p.reply.is_closed() => {}
                Ok(p) => {
                    items += p.cmd.outcome_count();
                    bytes += p.cmd.approx_size();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (cmds, mut replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
            let counts: Vec<usize> = cmds.iter().map(Command::outcome_count).collect();
            let cmd = if cmds.len() == 1 {
                cmds.into_iter()
                    .next()
                    .unwrap_or(Command::Batch(Vec::new()))
            } else {
                Command::Batch(cmds)
            };
            // The slot is held while somebody waits for the outcome, and no longer: every
            // caller has a deadline. openraft may never answer a write at all: a leader that
            // accepted writes while cut off, then installed the new leader's snapshot over
            // them, keeps their responders forever (seed 1289 of the simulation). Holding the
            // slot until openraft answered would then stop this node from proposing anything,
            // also once it is elected leader again.
            let written = {
                let everyone_gone = async {
                    for reply in replies.iter_mut() {
                        reply.closed().await;
                    }
                };
                tokio::select! {
                    written = raft.client_write(cmd) => Some(written),
                    () = everyone_gone => None,
                }
            };
            let Some(written) = written else {
                tracing::debug!("proposer: every caller gave up on a write; its slot is free");
                return;
            };
            match written {
                Ok(resp) => {
                    let revision = resp.data.revision;
                    let mut outcomes = resp.data.outcomes.into_iter();
                    for (reply, n) in replies.into_iter().zip(counts) {
                        let _ = reply.send(Ok(Applied {
                            revision,
                            outcomes: outcomes.by_ref().take(n).collect(),
                        }));
                    }
                }
                Err(e) => {
                    let err = Error::from(e);
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}
