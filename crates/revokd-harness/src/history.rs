//! The record of a run: what every writer asked for and was told, what checkers saw, when
//! replicas saw each acknowledged write, leader changes and faults. Invariants and figures
//! are computed from it afterwards, never asserted on the fly.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// An acknowledged revoke.
#[derive(Clone, Debug, Serialize)]
pub struct Ack {
    /// The token id.
    pub jti: String,
    /// The writer's region.
    pub region: String,
    /// When it was sent (ms since the run started).
    pub sent_ms: f64,
    /// When the acknowledgement arrived.
    pub ack_ms: f64,
    /// The revision the cluster gave it.
    pub revision: u64,
}

/// Something that happened to the cluster, for the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// When (ms since the run started).
    pub at_ms: f64,
    /// When it ended, for faults with a duration.
    pub end_ms: Option<f64>,
    /// `fault` or `leader`.
    pub kind: String,
    /// What happened.
    pub what: String,
    /// For faults: from the fault to the acknowledgement of a write sent right after it.
    pub failover_ms: Option<f64>,
}

/// A linearizable check that said "not revoked" for a token acknowledged before it began.
#[derive(Clone, Debug, Serialize)]
pub struct StaleRead {
    /// The token id.
    pub jti: String,
    /// When its revoke was acknowledged.
    pub ack_ms: f64,
    /// When the check started.
    pub check_ms: f64,
    /// The revision the check was answered at.
    pub revision: u64,
}

/// A replica's first sight of an acknowledged write.
#[derive(Clone, Debug, Serialize)]
pub struct Sighting {
    /// The replica's region.
    pub region: String,
    /// When the write was acknowledged.
    pub ack_ms: f64,
    /// Acknowledgement to visibility in the replica (0 when it was visible first).
    pub delay_ms: f64,
}

/// Everything recorded, behind one lock (a few thousand writes per minute: contention is
/// not a concern, simplicity is).
#[derive(Debug, Default)]
pub struct Record {
    /// Every token id any writer sent (acknowledged or not).
    pub attempted: HashSet<String>,
    /// Acknowledged revokes, in order of acknowledgement.
    pub acks: Vec<Ack>,
    /// Failed writes by error kind.
    pub write_errors: BTreeMap<String, u64>,
    /// Timeline events.
    pub events: Vec<Event>,
    /// Linearizable checks answered.
    pub checks: u64,
    /// Linearizable checks that failed (unavailable during faults, for example).
    pub check_errors: u64,
    /// Checks that broke linearizability.
    pub stale_reads: Vec<StaleRead>,
    /// Checks of ids nobody wrote that said "revoked".
    pub phantom_reads: Vec<String>,
    /// Replica sightings.
    pub sightings: Vec<Sighting>,
    /// Worst staleness seen per replica, in ms.
    pub staleness_peak_ms: BTreeMap<String, f64>,
    /// Leader samples (ms, leader a majority agrees on).
    pub leader_samples: Vec<(f64, Option<u64>)>,
}

/// A run's shared history.
#[derive(Debug)]
pub struct History {
    start: Instant,
    record: Mutex<Record>,
}

impl History {
    /// Starts the clock.
    pub fn new() -> History {
        History {
            start: Instant::now(),
            record: Mutex::new(Record::default()),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// The instant `ms` after the start.
    pub fn instant(&self, ms: f64) -> Instant {
        self.start + Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }

    /// Runs `f` on the record.
    pub fn with<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        f(&mut self.record.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records a timeline event; returns its index (to end it later).
    pub fn event(&self, kind: &str, what: impl Into<String>) -> usize {
        let at_ms = self.now_ms();
        self.with(|r| {
            r.events.push(Event {
                at_ms,
                end_ms: None,
                kind: kind.into(),
                what: what.into(),
                failover_ms: None,
            });
            r.events.len() - 1
        })
    }

    /// Marks a timeline event as ended now.
    pub fn end_event(&self, index: usize) {
        let now = self.now_ms();
        self.with(|r| {
            if let Some(e) = r.events.get_mut(index) {
                e.end_ms = Some(now);
            }
        })
    }

    /// The fault that began last before `ms`, to name in a failure.
    pub fn fault_before(&self, ms: f64) -> String {
        self.with(|r| {
            r.events
                .iter()
                .rfind(|e| e.kind == "fault" && e.at_ms <= ms)
                .map(|e| format!("{} (at {:.1} s)", e.what, e.at_ms / 1000.0))
                .unwrap_or_else(|| "no fault before it".into())
        })
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}
