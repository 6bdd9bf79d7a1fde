//! The client's half of write order (`revokd_core::order`): every write of a [`Client`] gets
//! the next number of its sequence, and each attempt tells the cluster the lowest number still
//! waiting for its answer, so a write this client stopped waiting for never takes effect after
//! a later one.
//!
//! [`Client`]: super::Client

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use revokd_core::WriteOrder;

/// One client instance's write sequence.
pub(crate) struct Sequence {
    /// This client instance, random per process.
    client: u64,
    state: Mutex<Numbers>,
}

#[derive(Default)]
struct Numbers {
    next: u64,
    /// Writes still waiting for their answer.
    in_flight: BTreeSet<u64>,
}

impl Sequence {
    /// A sequence for a new client instance.
    pub(crate) fn new() -> Arc<Sequence> {
        Arc::new(Sequence {
            client: fastrand::u64(..),
            state: Mutex::default(),
        })
    }

    /// Numbers a new write. It counts as in flight until the ticket is dropped: answered,
    /// failed, or abandoned by its caller.
    pub(crate) fn begin(self: &Arc<Self>) -> Ticket {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let seq = s.next;
        s.next += 1;
        s.in_flight.insert(seq);
        Ticket {
            seq,
            sequence: self.clone(),
        }
    }
}

/// A write in flight; dropping it settles the write.
pub(crate) struct Ticket {
    seq: u64,
    sequence: Arc<Sequence>,
}

impl Ticket {
    /// The order to send with the next attempt: this write's number, and the lowest number
    /// still in flight (this one at most).
    pub(crate) fn order(&self) -> WriteOrder {
        let s = self
            .sequence
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        WriteOrder {
            client: self.sequence.client,
            seq: self.seq,
            settled_below: s.in_flight.first().copied().unwrap_or(self.seq),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self
            .sequence
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.in_flight.remove(&self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attempt_names_the_oldest_write_still_waiting() {
        let seq = Sequence::new();
        let a = seq.begin();
        let b = seq.begin();
        assert_eq!((b.order().seq, b.order().settled_below), (1, 0));
        drop(a);
        assert_eq!(b.order().settled_below, 1, "a settled: only b waits");
        let c = seq.begin();
        drop(b);
        assert_eq!((c.order().seq, c.order().settled_below), (2, 2));
        assert_eq!(c.order().client, seq.client);
        assert!(c.order().settled_below <= c.order().seq);
    }
}
