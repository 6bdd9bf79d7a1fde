//! The record format of the log store: every log entry and metadata value is sealed with its
//! length and a CRC-32 ([`revokd_core::frame`]), so that what a crash tore is told apart from
//! what went bad on disk.
//!
//! Layout: `b"RVKR"`, the body's length (u32 LE), its CRC-32 (u32 LE), the body.
//!
//! - **Torn**: fewer bytes than the record says it has. Only a write that never finished
//!   looks like this, and a write is reported durable only once its flush returned, so a torn
//!   record was never acknowledged: the log store drops it (the last entry) or reads the other
//!   copy (metadata, which is written to two slots in turn).
//! - **Corrupt**: a whole record whose checksum does not match. That is damage to data that
//!   may have been acknowledged; the node stops instead of serving from it.
//!
//! Records written before sealing existed (plain postcard, no magic) are read as they are.

use revokd_core::frame::{FrameError, FrameReader, FrameWriter};

const MAGIC: &[u8; 4] = b"RVKR";
const HEADER_LEN: usize = 4 + 4 + 4;

/// Why a record could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Cut short: a write a crash interrupted.
    #[error("torn record: {found} of {expected} bytes written (a write a crash interrupted)")]
    Torn {
        /// Bytes the record needs (at least the header when its length was not written).
        expected: u64,
        /// Bytes found.
        found: u64,
    },
    /// Whole, but not what was written.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Seals `body` into a record.
pub fn seal(body: &[u8]) -> Vec<u8> {
    FrameWriter::with_capacity(HEADER_LEN + body.len())
        .bytes(MAGIC)
        .u32(body.len() as u32)
        .checked(body)
        .finish()
}

/// The body of a record: a sealed one checked, an unsealed one (written before records were
/// sealed; it can never start with the magic) as it is.
pub fn open(bytes: &[u8]) -> Result<&[u8], RecordError> {
    let torn = |expected: u64| RecordError::Torn {
        expected,
        found: bytes.len() as u64,
    };
    if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
        // A header cut off. (An unsealed value this short that spells the start of the magic
        // would have to be a log id of term 82 from node 86: revokd never wrote one.)
        return Err(torn(HEADER_LEN as u64));
    }
    let mut frame = FrameReader::new(bytes);
    if frame.magic(MAGIC).is_err() {
        return Ok(bytes);
    }
    let len = frame.u32().map_err(|_| torn(HEADER_LEN as u64))? as u64;
    let expected = (HEADER_LEN as u64) + len;
    match (bytes.len() as u64).cmp(&expected) {
        std::cmp::Ordering::Less => return Err(torn(expected)),
        std::cmp::Ordering::Greater => {
            return Err(RecordError::Corrupt(format!(
                "{} bytes after a record of {expected}",
                bytes.len() as u64 - expected
            )))
        }
        std::cmp::Ordering::Equal => {}
    }
    frame.checked(len).map_err(|e| match e {
        FrameError::Checksum { .. } => RecordError::Corrupt(e.to_string()),
        FrameError::BadMagic | FrameError::Truncated { .. } => torn(expected),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_to_its_body() {
        for body in [&b""[..], b"x", b"a longer body of some bytes"] {
            assert_eq!(open(&seal(body)).unwrap(), body);
        }
    }

    #[test]
    fn every_cut_of_a_record_is_torn_and_every_flip_corrupt() {
        let sealed = seal(b"vote: term 7, node 2");
        for cut in 0..sealed.len() {
            assert!(
                matches!(open(&sealed[..cut]), Err(RecordError::Torn { .. })),
                "cut at {cut}: {:?}",
                open(&sealed[..cut])
            );
        }
        for at in HEADER_LEN..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[at] ^= 0x10;
            assert!(
                matches!(open(&flipped), Err(RecordError::Corrupt(_))),
                "flip at {at}"
            );
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(matches!(open(&longer), Err(RecordError::Corrupt(_))));
    }

    #[test]
    fn records_written_before_sealing_read_as_they_are() {
        // postcard of a LogId (term 3, node 1, index 9) as an older revokd wrote it.
        let old = [3u8, 1, 9];
        assert_eq!(open(&old).unwrap(), &old);
        assert_eq!(open(&[7u8, 7]).unwrap(), &[7u8, 7]);
    }
}
