//! Checksummed binary framing, the one helper behind every revokd byte format: the snapshot
//! (`RVKS`, [`crate::snapshot`]), the node's snapshot file (`RVKF`) and the Raft messages
//! between nodes. A format is a sequence of little-endian fields and CRC-32-checked
//! sections, written with [`FrameWriter`] and read back with [`FrameReader`], which turns
//! short or corrupted input into a [`FrameError`] instead of a panic or a value that happens
//! to decode.

/// Why framed bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes do not start with the format's magic.
    #[error("bad magic")]
    BadMagic,
    /// Fewer bytes are left than the field or section needs.
    #[error("truncated: {needed} bytes needed, {left} left")]
    Truncated {
        /// Bytes the field or section needs.
        needed: u64,
        /// Bytes left.
        left: u64,
    },
    /// A section's checksum does not match its bytes.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The checksum written with the section.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
}

/// Builds framed bytes field by field.
#[derive(Debug, Default)]
pub struct FrameWriter(Vec<u8>);

impl FrameWriter {
    /// An empty frame with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        FrameWriter(Vec::with_capacity(capacity))
    }

    /// Appends raw bytes (a magic, or a body checked elsewhere).
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends a `u32`, little-endian.
    pub fn u32(self, v: u32) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a `u64`, little-endian.
    pub fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a checked section: the CRC-32 of `body` (u32 LE), then `body`.
    pub fn checked(self, body: &[u8]) -> Self {
        self.u32(crc32fast::hash(body)).bytes(body)
    }

    /// The framed bytes.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads framed bytes field by field, in the order they were written.
#[derive(Debug, Clone, Copy)]
pub struct FrameReader<'a> {
    rest: &'a [u8],
}

impl<'a> FrameReader<'a> {
    /// Starts reading `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        FrameReader { rest: bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: u64) -> Result<&'a [u8], FrameError> {
        let left = self.rest.len() as u64;
        if n > left {
            return Err(FrameError::Truncated { needed: n, left });
        }
        let (head, tail) = self.rest.split_at(n as usize);
        self.rest = tail;
        Ok(head)
    }

    /// Takes the format's magic, or fails with [`FrameError::BadMagic`].
    pub fn magic(&mut self, magic: &[u8]) -> Result<(), FrameError> {
        match self.take(magic.len() as u64) {
            Ok(m) if m == magic => Ok(()),
            _ => Err(FrameError::BadMagic),
        }
    }

    /// Takes a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Takes a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        Ok(u64::from_le_bytes(word))
    }

    /// Takes a checked section of `len` body bytes (its CRC-32 first), verifying the sum.
    pub fn checked(&mut self, len: u64) -> Result<&'a [u8], FrameError> {
        let stored = self.u32()?;
        let body = self.take(len)?;
        let computed = crc32fast::hash(body);
        if computed != stored {
            return Err(FrameError::Checksum { stored, computed });
        }
        Ok(body)
    }

    /// Takes a checked section that runs to the end of the input.
    pub fn checked_rest(&mut self) -> Result<&'a [u8], FrameError> {
        let body_len = self.rest.len().saturating_sub(4) as u64;
        self.checked(body_len)
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_sections_read_back_in_order() {
        let bytes = FrameWriter::default()
            .bytes(b"TEST")
            .u32(7)
            .u64(3)
            .checked(b"abc")
            .bytes(b"tail")
            .finish();
        let mut r = FrameReader::new(&bytes);
        r.magic(b"TEST").unwrap();
        assert_eq!(r.u32().unwrap(), 7);
        let len = r.u64().unwrap();
        assert_eq!(r.checked(len).unwrap(), b"abc");
        assert_eq!(r.rest(), b"tail");
    }

    #[test]
    fn short_corrupt_or_foreign_input_is_an_error() {
        let bytes = FrameWriter::default().checked(b"payload").finish();
        assert_eq!(FrameReader::new(&bytes).checked_rest().unwrap(), b"payload");
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            FrameReader::new(&bad).checked_rest(),
            Err(FrameError::Checksum { .. })
        ));
        assert_eq!(
            FrameReader::new(&bytes[..2]).checked_rest(),
            Err(FrameError::Truncated { needed: 4, left: 2 })
        );
        assert_eq!(
            FrameReader::new(&bytes).checked(100),
            Err(FrameError::Truncated {
                needed: 100,
                left: 7
            })
        );
        assert_eq!(
            FrameReader::new(b"RVKX").magic(b"RVKS"),
            Err(FrameError::BadMagic)
        );
    }
}
