//! What every simulated client was told, in order: the history the invariants are checked
//! against, and (rendered as text) what two runs of one seed must reproduce byte for byte.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

/// One operation a client invoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Revoke a token id (expiring at this unix second).
    Revoke(String, i64),
    /// Remove a token id.
    Unrevoke(String),
    /// Revoke every token of a subject issued before a time.
    AddRule(String),
    /// Remove that rule.
    RemoveRule(String),
    /// A linearizable check of a token id.
    Check(String),
    /// A membership change (adding a learner, changing the voters).
    Membership(String),
}

impl Op {
    /// The token id or subject the operation is about.
    pub fn key(&self) -> &str {
        match self {
            Op::Revoke(k, _)
            | Op::Unrevoke(k)
            | Op::AddRule(k)
            | Op::RemoveRule(k)
            | Op::Check(k)
            | Op::Membership(k) => k,
        }
    }
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The write was acknowledged, as committed at this revision.
    Written {
        /// The revision the outcome refers to.
        revision: u64,
        /// The revision of the entry that carried it.
        committed: u64,
    },
    /// The check answered.
    Checked {
        /// Whether the token is revoked.
        revoked: bool,
        /// The revision the answer was computed at.
        revision: u64,
    },
    /// The call failed: for a write, it may or may not have taken effect.
    Failed(String),
}

/// One completed operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Which client.
    pub client: String,
    /// What it asked.
    pub op: Op,
    /// When it asked (simulated milliseconds).
    pub invoked_ms: u64,
    /// When it was answered.
    pub completed_ms: u64,
    /// The answer.
    pub answer: Answer,
}

/// The shared history of one run. Cheap to clone.
#[derive(Clone, Default)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    records: Vec<Record>,
    /// Faults, heals and other events of the run, with their times.
    events: Vec<(u64, String)>,
    /// Invariant violations seen while the run was going.
    violations: Vec<String>,
    /// Keys of every write invoked, answered or not (rules as `rule:<subject>`).
    invoked: std::collections::BTreeSet<String>,
    /// Writes invoked and not answered yet.
    pending: Vec<Pending>,
}

/// A write invoked and not answered (yet): when the run ends, it may or may not have taken
/// effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Which client.
    pub client: String,
    /// What it asked.
    pub op: Op,
    /// When it asked (simulated milliseconds).
    pub invoked_ms: u64,
}

/// The simulated time, in milliseconds since the start of the run.
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

impl History {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a write by `client` as invoked, before its answer (which may never come: a
    /// write still pending when the run ends may or may not have taken effect).
    pub fn invoke(&self, client: &str, op: &Op) {
        let key = match op {
            Op::AddRule(k) | Op::RemoveRule(k) => format!("rule:{k}"),
            other => other.key().to_owned(),
        };
        let mut inner = self.lock();
        inner.invoked.insert(key);
        inner.pending.push(Pending {
            client: client.to_owned(),
            op: op.clone(),
            invoked_ms: now_ms(),
        });
    }

    /// Writes invoked and not answered (yet).
    pub fn pending(&self) -> Vec<Pending> {
        self.lock().pending.clone()
    }

    /// Keys of every write invoked so far.
    pub fn invoked(&self) -> std::collections::BTreeSet<String> {
        self.lock().invoked.clone()
    }

    /// Records a completed operation.
    pub fn record(&self, client: &str, op: Op, invoked_ms: u64, answer: Answer) {
        let mut inner = self.lock();
        if let Some(i) = inner
            .pending
            .iter()
            .position(|p| p.client == client && p.op == op)
        {
            inner.pending.remove(i);
        }
        inner.records.push(Record {
            client: client.to_owned(),
            op,
            invoked_ms,
            completed_ms: now_ms(),
            answer,
        });
    }

    /// Records an event (a fault, a heal) at time `at_ms`.
    pub fn event(&self, at_ms: u64, what: String) {
        self.lock().events.push((at_ms, what));
    }

    /// Records an invariant violation seen during the run.
    pub fn violation(&self, what: String) {
        let at = now_ms();
        self.lock().violations.push(format!("t={at}ms {what}"));
    }

    /// The records so far.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// Violations seen during the run.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// The whole history as text, one line per record or event in time order.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut lines: Vec<(u64, String)> = inner.events.clone();
        for p in &inner.pending {
            lines.push((
                p.invoked_ms,
                format!(
                    "{} {:?} invoked {}ms -> no answer by the end of the run",
                    p.client, p.op, p.invoked_ms
                ),
            ));
        }
        for r in &inner.records {
            let answer = match &r.answer {
                Answer::Written {
                    revision,
                    committed,
                } => format!("ok revision {revision} committed {committed}"),
                Answer::Checked { revoked, revision } => {
                    format!("revoked={revoked} at {revision}")
                }
                Answer::Failed(e) => format!("failed: {e}"),
            };
            lines.push((
                r.completed_ms,
                format!(
                    "{} {:?} invoked {}ms -> {answer}",
                    r.client, r.op, r.invoked_ms
                ),
            ));
        }
        lines.sort_by_key(|(t, _)| *t);
        let mut out = String::new();
        for (t, line) in lines {
            let _ = writeln!(out, "{t:>7}ms {line}");
        }
        out
    }
}
