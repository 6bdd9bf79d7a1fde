//! Write order per client: a write its client has stopped waiting for never takes effect
//! after that client's later writes.
//!
//! A write whose answer was lost (the client's deadline passed while the request sat in a
//! partitioned link, a forwarding hop or a queue) may still reach a leader later and be
//! committed. Raft alone allows that, and the simulation found the harm (seed 3169): a client
//! was told its `RevokeRule` had failed, removed the rule, was told the removal had succeeded,
//! and then the held `RevokeRule` applied and the rule came back.
//!
//! This is the client-session scheme of the Raft dissertation (section 6.3), cut down to what
//! a set of idempotent writes needs. A client numbers its writes (`seq`) and sends with each
//! one `settled_below`: every write of its own numbered below it has been answered or given
//! up. The state machine keeps, per client, the highest `settled_below` it has applied (its
//! *floor*) and skips a write numbered below the floor, answering
//! [`Outcome::Superseded`](crate::Outcome::Superseded). So a write whose caller gave up can
//! only take effect before the client's next write applies, never after. Retries of one write
//! keep its number (still in flight, so at or above the floor) and stay idempotent.
//!
//! The table is bounded: at most [`MAX_WRITERS`] clients, the one that wrote least recently
//! (by revision, so the choice is the same on every replica) evicted first. Writes without an
//! order (older clients, other languages' clients that do not send the header) are applied as
//! before.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Most clients whose write order is remembered.
pub const MAX_WRITERS: usize = 16_384;

/// Where one write stands in its client's sequence, as the client sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WriteOrder {
    /// The client instance (random per process, so a restarted client starts afresh).
    pub client: u64,
    /// This write's number in the client's sequence (retries keep it).
    pub seq: u64,
    /// Every write of this client numbered below this was answered or abandoned.
    pub settled_below: u64,
}

impl WriteOrder {
    /// Parses the header form `client.seq.settled_below` (decimal). `settled_below` above
    /// `seq` is refused: the write itself is not settled while it is being sent.
    pub fn parse(s: &str) -> Result<WriteOrder, String> {
        let bad = || {
            format!(
                "write order {:?} is not `client.seq.settled_below` (three decimal numbers, \
                 settled_below at most seq)",
                s.chars().take(64).collect::<String>()
            )
        };
        let mut parts = s.split('.');
        let mut next =
            || -> Result<u64, String> { parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad) };
        let order = WriteOrder {
            client: next()?,
            seq: next()?,
            settled_below: next()?,
        };
        if parts.next().is_some() || order.settled_below > order.seq {
            return Err(bad());
        }
        Ok(order)
    }
}

impl fmt::Display for WriteOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.client, self.seq, self.settled_below)
    }
}

/// One client's floor, and when it last wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// The client instance.
    pub client: u64,
    /// Writes of this client numbered below this are skipped.
    pub floor: u64,
    /// The revision of its latest ordered write.
    pub seen: u64,
}

/// The floors of the clients that wrote recently: part of the replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writers {
    /// Per client: `(floor, seen)`.
    by_client: BTreeMap<u64, (u64, u64)>,
    /// `(seen, client)`: who is evicted first.
    by_seen: BTreeSet<(u64, u64)>,
}

impl Writers {
    /// Whether a write with `order`, applied at `revision`, takes effect; records its floor
    /// either way.
    pub fn admit(&mut self, order: &WriteOrder, revision: u64) -> bool {
        let (floor, seen) = self.by_client.get(&order.client).copied().unwrap_or((0, 0));
        let admitted = order.seq >= floor;
        self.by_seen.remove(&(seen, order.client));
        self.by_client
            .insert(order.client, (floor.max(order.settled_below), revision));
        self.by_seen.insert((revision, order.client));
        while self.by_client.len() > MAX_WRITERS {
            let Some((_, oldest)) = self.by_seen.pop_first() else {
                break;
            };
            self.by_client.remove(&oldest);
        }
        admitted
    }

    /// How many clients are remembered.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Every remembered client, by client id (the snapshot's order).
    pub fn iter(&self) -> impl Iterator<Item = Writer> + '_ {
        self.by_client
            .iter()
            .map(|(&client, &(floor, seen))| Writer {
                client,
                floor,
                seen,
            })
    }

    /// Rebuilds the table from a snapshot; refuses a client twice or more than
    /// [`MAX_WRITERS`].
    pub(crate) fn from_parts(writers: impl IntoIterator<Item = Writer>) -> Result<Self, String> {
        let mut w = Writers::default();
        for Writer {
            client,
            floor,
            seen,
        } in writers
        {
            if w.by_client.insert(client, (floor, seen)).is_some() {
                return Err(format!("write order of client {client} appears twice"));
            }
            w.by_seen.insert((seen, client));
        }
        if w.len() > MAX_WRITERS {
            return Err(format!(
                "write order of {} clients; the limit is {MAX_WRITERS}",
                w.len()
            ));
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(client: u64, seq: u64, settled_below: u64) -> WriteOrder {
        WriteOrder {
            client,
            seq,
            settled_below,
        }
    }

    #[test]
    fn a_write_given_up_on_is_skipped_once_a_later_write_of_its_client_applied() {
        let mut w = Writers::default();
        // Writes 0 and 1 in flight together; 1 applies first, 0 may still follow.
        assert!(w.admit(&order(7, 1, 0), 10));
        assert!(w.admit(&order(7, 0, 0), 11));
        // 2 was sent once 0 and 1 were answered (or abandoned): a late copy of 1 is skipped.
        assert!(w.admit(&order(7, 2, 2), 12));
        assert!(!w.admit(&order(7, 1, 0), 13));
        // A retry of 2 itself still applies (idempotent), and another client is unaffected.
        assert!(w.admit(&order(7, 2, 2), 14));
        assert!(w.admit(&order(8, 0, 0), 15));
        // A skipped write does not lower the floor.
        assert!(!w.admit(&order(7, 0, 0), 16));
        assert_eq!(
            w.iter().collect::<Vec<_>>(),
            vec![
                Writer {
                    client: 7,
                    floor: 2,
                    seen: 16
                },
                Writer {
                    client: 8,
                    floor: 0,
                    seen: 15
                }
            ]
        );
    }

    #[test]
    fn the_least_recent_writer_is_evicted_beyond_the_bound() {
        let mut w = Writers::default();
        for c in 0..MAX_WRITERS as u64 + 1 {
            w.admit(&order(c, 1, 1), c + 1);
        }
        assert_eq!(w.len(), MAX_WRITERS);
        assert!(
            w.iter().all(|x| x.client != 0),
            "client 0 wrote least recently"
        );
        let again = Writers::from_parts(w.iter()).unwrap();
        assert_eq!(again, w);
    }

    #[test]
    fn the_header_form_round_trips_and_bad_forms_say_what_is_expected() {
        let o = order(u64::MAX, 9, 3);
        assert_eq!(WriteOrder::parse(&o.to_string()), Ok(o));
        for bad in ["", "1.2", "1.2.3.4", "a.b.c", "1.2.3 ", "1.2.5", "-1.2.1"] {
            let err = WriteOrder::parse(bad).unwrap_err();
            assert!(err.contains("client.seq.settled_below"), "{bad:?}: {err}");
        }
    }
}
