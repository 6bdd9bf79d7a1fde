//! The snapshot format: the whole revocation set at one revision, checksummed.
//!
//! Layout ([`crate::frame`]): `b"RVKS"`, format version (u32 LE), body length (u64 LE), CRC-32
//! of the body (u32 LE), then the postcard-encoded body. The checksum is verified before
//! anything is decoded, so a corrupt snapshot is refused instead of installed.
//!
//! Version 2 adds the purge watermark ([`RevocationSet::purged_through`]) after the revision.
//! Version 1 snapshots (written before it existed) still decode, with a watermark of 0.
//! Version 3 adds each recent client's write order ([`crate::order`]) after the rules;
//! version 2 snapshots still decode, with no client remembered.

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::error::SnapshotError;
use crate::frame::{FrameError, FrameReader, FrameWriter};
use crate::order::{Writer, Writers};
use crate::state::RevocationSet;
use crate::stored::StoredToken;
use crate::types::Rule;

const MAGIC: &[u8; 4] = b"RVKS";
const VERSION: u32 = 3;
/// The version before the write order, still read.
const VERSION_2: u32 = 2;
/// The version before the purge watermark, still read.
const VERSION_1: u32 = 1;
const HEADER_LEN: usize = 4 + 4 + 8 + 4;

/// Borrowing view used to encode without copying the set.
struct BodyRef<'a>(&'a RevocationSet);

impl Serialize for BodyRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let set = self.0;
        let mut tokens: Vec<&StoredToken> = set.tokens().collect();
        // Deterministic bytes: the same state always encodes the same way.
        tokens.sort_unstable_by(|a, b| a.jti().cmp(b.jti()));
        let mut st = s.serialize_struct("Body", 5)?;
        st.serialize_field("revision", &set.revision())?;
        st.serialize_field("purged_through", &set.purged_through())?;
        st.serialize_field("tokens", &tokens)?;
        st.serialize_field("rules", &set.rules().collect::<Vec<_>>())?;
        st.serialize_field("writers", &set.writers().iter().collect::<Vec<_>>())?;
        st.end()
    }
}

#[derive(Deserialize)]
struct Body {
    revision: u64,
    purged_through: i64,
    tokens: Vec<StoredToken>,
    rules: Vec<Rule>,
    writers: Vec<Writer>,
}

/// The body of a version 2 snapshot.
#[derive(Deserialize)]
struct BodyV2 {
    revision: u64,
    purged_through: i64,
    tokens: Vec<StoredToken>,
    rules: Vec<Rule>,
}

/// The body of a version 1 snapshot.
#[derive(Deserialize)]
struct BodyV1 {
    revision: u64,
    tokens: Vec<StoredToken>,
    rules: Vec<Rule>,
}

impl RevocationSet {
    /// Encodes the set with its header and checksum.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(&BodyRef(self))
            // Serializing plain structs of strings and integers into a Vec cannot fail.
            .unwrap_or_default();
        FrameWriter::with_capacity(HEADER_LEN + body.len())
            .bytes(MAGIC)
            .u32(VERSION)
            .u64(body.len() as u64)
            .checked(&body)
            .finish()
    }

    /// Verifies the checksum and decodes a snapshot made by [`RevocationSet::encode_snapshot`].
    pub fn decode_snapshot(bytes: &[u8]) -> Result<RevocationSet, SnapshotError> {
        if bytes.len() < HEADER_LEN {
            return Err(SnapshotError::BadMagic);
        }
        let mut frame = FrameReader::new(bytes);
        frame.magic(MAGIC).map_err(|_| SnapshotError::BadMagic)?;
        let version = frame.u32().map_err(|_| SnapshotError::BadMagic)?;
        if ![VERSION, VERSION_2, VERSION_1].contains(&version) {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let expected = frame.u64().map_err(|_| SnapshotError::BadMagic)?;
        // What follows the checksum is the body, all of it and nothing more.
        let found = (frame.remaining() - 4) as u64;
        if found != expected {
            return Err(SnapshotError::Truncated { expected, found });
        }
        let body = frame.checked(expected).map_err(|e| match e {
            FrameError::Checksum { stored, computed } => SnapshotError::Checksum {
                expected: stored,
                computed,
            },
            FrameError::BadMagic | FrameError::Truncated { .. } => {
                SnapshotError::Truncated { expected, found }
            }
        })?;
        let body: Body = match version {
            VERSION_1 => {
                let v1: BodyV1 = postcard::from_bytes(body)?;
                Body {
                    revision: v1.revision,
                    purged_through: 0,
                    tokens: v1.tokens,
                    rules: v1.rules,
                    writers: Vec::new(),
                }
            }
            VERSION_2 => {
                let v2: BodyV2 = postcard::from_bytes(body)?;
                Body {
                    revision: v2.revision,
                    purged_through: v2.purged_through,
                    tokens: v2.tokens,
                    rules: v2.rules,
                    writers: Vec::new(),
                }
            }
            _ => postcard::from_bytes(body)?,
        };
        let writers = Writers::from_parts(body.writers).map_err(SnapshotError::Inconsistent)?;
        RevocationSet::from_parts(
            body.revision,
            body.purged_through,
            body.tokens,
            body.rules,
            writers,
        )
        .map_err(SnapshotError::Inconsistent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::types::{RevokedToken, RuleKind, TokenSpec};

    fn token(jti: &str, expires_at: i64) -> RevokedToken {
        RevokedToken {
            jti: jti.into(),
            expires_at,
            reason: String::new(),
            subject: String::new(),
            revoked_by: "a".into(),
            revision: 1,
        }
    }

    fn rule(value: &str) -> Rule {
        Rule {
            kind: RuleKind::Subject,
            value: value.into(),
            not_before: 10,
            reason: String::new(),
            revoked_by: "a".into(),
            revision: 1,
            drop_at: 100,
        }
    }

    /// A version 1 snapshot (no purge watermark) with a valid header and checksum around an
    /// arbitrary body.
    fn framed(revision: u64, tokens: Vec<RevokedToken>, rules: Vec<Rule>) -> Vec<u8> {
        #[derive(Serialize)]
        struct Raw {
            revision: u64,
            tokens: Vec<RevokedToken>,
            rules: Vec<Rule>,
        }
        let body = postcard::to_stdvec(&Raw {
            revision,
            tokens,
            rules,
        })
        .unwrap();
        FrameWriter::default()
            .bytes(MAGIC)
            .u32(VERSION_1)
            .u64(body.len() as u64)
            .checked(&body)
            .finish()
    }

    #[test]
    fn the_purge_watermark_survives_a_snapshot_and_version_1_still_reads() {
        let mut set = RevocationSet::new();
        let revoke = Command::Revoke {
            tokens: vec![TokenSpec::new("a", 50), TokenSpec::new("b", 500)],
            now: 10,
            by: "t".into(),
        };
        set.apply(1, &revoke);
        set.apply(2, &Command::Purge { now: 100 });
        assert_eq!((set.purged_through(), set.token_count()), (100, 1));
        let back = RevocationSet::decode_snapshot(&set.encode_snapshot()).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.purged_through(), 100);

        let old = framed(7, vec![token("a", 50)], vec![rule("alice")]);
        let old = RevocationSet::decode_snapshot(&old).unwrap();
        assert_eq!((old.revision(), old.purged_through()), (7, 0));
        assert_eq!((old.token_count(), old.rule_count()), (1, 1));
    }

    #[test]
    fn version_2_snapshots_still_read_with_no_client_remembered() {
        #[derive(Serialize)]
        struct RawV2 {
            revision: u64,
            purged_through: i64,
            tokens: Vec<RevokedToken>,
            rules: Vec<Rule>,
        }
        let body = postcard::to_stdvec(&RawV2 {
            revision: 9,
            purged_through: 40,
            tokens: vec![token("a", 50)],
            rules: vec![rule("alice")],
        })
        .unwrap();
        let old = FrameWriter::default()
            .bytes(MAGIC)
            .u32(VERSION_2)
            .u64(body.len() as u64)
            .checked(&body)
            .finish();
        let set = RevocationSet::decode_snapshot(&old).unwrap();
        assert_eq!((set.revision(), set.purged_through()), (9, 40));
        assert_eq!((set.token_count(), set.rule_count()), (1, 1));
        assert!(set.writers().is_empty());
    }

    // Found by the snapshot_decode fuzz target (crates/revokd-fuzz): a checksummed body with
    // one token id twice decoded into a set whose expiry index kept a stale entry.
    #[test]
    fn checksummed_but_inconsistent_bodies_are_refused() {
        let ok = framed(5, vec![token("a", 50), token("b", 60)], vec![rule("alice")]);
        let set = RevocationSet::decode_snapshot(&ok).unwrap();
        assert_eq!(set.token_count(), 2);
        for (bad, says) in [
            (
                framed(5, vec![token("a", 50), token("a", 10_000)], vec![]),
                "appears twice",
            ),
            (
                framed(5, vec![], vec![rule("x"), rule("x")]),
                "appears twice",
            ),
        ] {
            let err = RevocationSet::decode_snapshot(&bad).unwrap_err();
            assert!(
                matches!(&err, SnapshotError::Inconsistent(m) if m.contains(says)),
                "{err}"
            );
        }
    }
}
