//! How the set keeps one revoked token: a single shared allocation holding its numbers and all
//! of its text.
//!
//! A node holds every revoked id, so the entry's size is the node's memory. [`RevokedToken`]
//! (four `String`s and two numbers) costs 112 bytes before its text, and the set needed the id
//! a second time as the key of its expiry index. A [`StoredToken`] is one pointer to one
//! reference-counted block: the expiry, the revision, three text lengths, then the id, reason,
//! subject and revoker back to back. The set's hash index, its expiry index, the change events
//! the watch window keeps and every `Snapshot` stream's copy all share that block. For a
//! 36-byte id revoked by `admin` it is 81 bytes (a 96-byte allocation).

use std::fmt;

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use triomphe::ThinArc;

use crate::types::{RevokedToken, TokenSpec};

/// Longest text field an entry keeps, in bytes. Every API refuses much less
/// ([`crate::MAX_JTI_LEN`], [`crate::MAX_TEXT_LEN`]); a longer field (which no proposer
/// validates into a command) is cut at a character boundary, the same way on every node.
pub const MAX_STORED_TEXT: usize = u16::MAX as usize;

/// The fixed part of an entry; the text follows it in the same allocation.
#[derive(Clone, Copy, Debug)]
struct Header {
    expires_at: i64,
    revision: u64,
    jti_len: u16,
    reason_len: u16,
    subject_len: u16,
}

/// A revoked token as the revocation set keeps it: cheap to clone (a reference count), read
/// through its accessors, and serialized exactly as a [`RevokedToken`].
#[derive(Clone)]
pub struct StoredToken(ThinArc<Header, u8>);

/// `s` cut to at most [`MAX_STORED_TEXT`] bytes, at a character boundary.
fn capped(s: &str) -> &str {
    if s.len() <= MAX_STORED_TEXT {
        return s;
    }
    let mut end = MAX_STORED_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl StoredToken {
    /// An entry from its parts.
    pub fn new(
        jti: &str,
        expires_at: i64,
        reason: &str,
        subject: &str,
        revoked_by: &str,
        revision: u64,
    ) -> Self {
        let (jti, reason, subject, by) = (
            capped(jti),
            capped(reason),
            capped(subject),
            capped(revoked_by),
        );
        let header = Header {
            expires_at,
            revision,
            // `capped` keeps each length within u16.
            jti_len: jti.len() as u16,
            reason_len: reason.len() as u16,
            subject_len: subject.len() as u16,
        };
        let text = [jti, reason, subject, by].map(str::as_bytes);
        let bytes = text.iter().flat_map(|t| t.iter().copied());
        StoredToken(ThinArc::from_header_and_iter(
            header,
            ExactLen(bytes, text.iter().map(|t| t.len()).sum()),
        ))
    }

    /// The entry `spec` becomes when `revoked_by` revokes it at `revision`.
    pub fn from_spec(spec: &TokenSpec, revoked_by: &str, revision: u64) -> Self {
        Self::new(
            &spec.jti,
            spec.expires_at,
            &spec.reason,
            &spec.subject,
            revoked_by,
            revision,
        )
    }

    fn header(&self) -> &Header {
        &self.0.header.header
    }

    /// The text between byte offsets `from` and `to`. Always whole fields of what `new` was
    /// given, so always UTF-8.
    fn text(&self, from: usize, to: usize) -> &str {
        std::str::from_utf8(&self.0.slice[from..to]).unwrap_or_default()
    }

    fn offsets(&self) -> [usize; 4] {
        let h = self.header();
        let a = usize::from(h.jti_len);
        let b = a + usize::from(h.reason_len);
        let c = b + usize::from(h.subject_len);
        [0, a, b, c]
    }

    /// The id's bytes: what the set hashes and orders by.
    pub(crate) fn jti_bytes(&self) -> &[u8] {
        &self.0.slice[..usize::from(self.header().jti_len)]
    }

    /// The token's `jti` claim.
    pub fn jti(&self) -> &str {
        let [_, a, ..] = self.offsets();
        self.text(0, a)
    }

    /// Unix seconds: the token's `exp`. The entry is purged after this time.
    pub fn expires_at(&self) -> i64 {
        self.header().expires_at
    }

    /// Why it was revoked.
    pub fn reason(&self) -> &str {
        let [_, a, b, _] = self.offsets();
        self.text(a, b)
    }

    /// The token's subject, for audit.
    pub fn subject(&self) -> &str {
        let [_, _, b, c] = self.offsets();
        self.text(b, c)
    }

    /// Who revoked it.
    pub fn revoked_by(&self) -> &str {
        let [.., c] = self.offsets();
        self.text(c, self.0.slice.len())
    }

    /// The revision at which it was revoked.
    pub fn revision(&self) -> u64 {
        self.header().revision
    }

    /// An owned copy of the entry.
    pub fn to_token(&self) -> RevokedToken {
        RevokedToken {
            jti: self.jti().to_owned(),
            expires_at: self.expires_at(),
            reason: self.reason().to_owned(),
            subject: self.subject().to_owned(),
            revoked_by: self.revoked_by().to_owned(),
            revision: self.revision(),
        }
    }
}

/// An iterator with a known length (what `ThinArc` needs to size its allocation).
struct ExactLen<I>(I, usize);

impl<I: Iterator> Iterator for ExactLen<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.0.next();
        if item.is_some() {
            self.1 -= 1;
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactLen<I> {}

impl From<&RevokedToken> for StoredToken {
    fn from(t: &RevokedToken) -> Self {
        Self::new(
            &t.jti,
            t.expires_at,
            &t.reason,
            &t.subject,
            &t.revoked_by,
            t.revision,
        )
    }
}

impl PartialEq for StoredToken {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.header(), other.header());
        (
            a.expires_at,
            a.revision,
            a.jti_len,
            a.reason_len,
            a.subject_len,
        ) == (
            b.expires_at,
            b.revision,
            b.jti_len,
            b.reason_len,
            b.subject_len,
        ) && self.0.slice == other.0.slice
    }
}

impl Eq for StoredToken {}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("jti", &self.jti())
            .field("expires_at", &self.expires_at())
            .field("reason", &self.reason())
            .field("subject", &self.subject())
            .field("revoked_by", &self.revoked_by())
            .field("revision", &self.revision())
            .finish()
    }
}

/// The same fields in the same order as [`RevokedToken`], so snapshots, digests and events
/// encode exactly as they did before entries were packed.
impl Serialize for StoredToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("RevokedToken", 6)?;
        st.serialize_field("jti", self.jti())?;
        st.serialize_field("expires_at", &self.expires_at())?;
        st.serialize_field("reason", self.reason())?;
        st.serialize_field("subject", self.subject())?;
        st.serialize_field("revoked_by", self.revoked_by())?;
        st.serialize_field("revision", &self.revision())?;
        st.end()
    }
}

/// Borrows the text from the input where the format allows (postcard does), so decoding a
/// snapshot allocates each entry once.
#[derive(Deserialize)]
#[serde(rename = "RevokedToken")]
struct Fields<'a> {
    #[serde(borrow)]
    jti: std::borrow::Cow<'a, str>,
    expires_at: i64,
    #[serde(borrow)]
    reason: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    subject: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    revoked_by: std::borrow::Cow<'a, str>,
    revision: u64,
}

impl<'de> Deserialize<'de> for StoredToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = Fields::deserialize(d)?;
        Ok(StoredToken::new(
            &f.jti,
            f.expires_at,
            &f.reason,
            &f.subject,
            &f.revoked_by,
            f.revision,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RevokedToken {
        RevokedToken {
            jti: "0000002a-0000-4000-8000-00000001337f".into(),
            expires_at: 1_900_000_000,
            reason: "stolen laptop ✓".into(),
            subject: "alice".into(),
            revoked_by: "admin".into(),
            revision: 42,
        }
    }

    #[test]
    fn an_entry_reads_back_every_field_it_was_given() {
        let t = sample();
        let s = StoredToken::from(&t);
        assert_eq!(s.to_token(), t);
        assert_eq!(s.jti_bytes(), t.jti.as_bytes());
        let empty = StoredToken::new("x", 1, "", "", "", 0);
        assert_eq!(
            (empty.jti(), empty.reason(), empty.revoked_by()),
            ("x", "", "")
        );
    }

    #[test]
    fn an_entry_encodes_exactly_as_a_revoked_token_and_decodes_back() {
        let t = sample();
        let bytes = postcard::to_stdvec(&StoredToken::from(&t)).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&t).unwrap());
        let back: StoredToken = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_token(), t);
    }

    #[test]
    fn a_field_longer_than_an_entry_keeps_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_STORED_TEXT); // two bytes each
        let s = StoredToken::new("j", 1, &long, "sub", "by", 3);
        assert!(s.reason().len() <= MAX_STORED_TEXT && s.reason().len() >= MAX_STORED_TEXT - 1);
        assert!(s.reason().chars().all(|c| c == 'é'));
        assert_eq!((s.jti(), s.subject(), s.revoked_by()), ("j", "sub", "by"));
    }

    #[test]
    fn clones_share_one_allocation() {
        let s = StoredToken::from(&sample());
        let c = s.clone();
        assert_eq!(ThinArc::strong_count(&s.0), 2);
        assert_eq!(c, s);
    }
}
