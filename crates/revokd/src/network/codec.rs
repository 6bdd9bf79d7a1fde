//! Encoding of openraft messages inside `RaftPayload`: a CRC-32 of the body, then the body
//! in postcard (a checked section of [`revokd_core::frame`]). The checksum turns corrupted or foreign bytes into a clear error instead of
//! a message that happens to decode.

use revokd_core::frame::{FrameError, FrameReader, FrameWriter};
use revokd_proto::v1::RaftPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Too short, or the checksum does not match.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The body does not decode as the expected message.
    #[error("{0}")]
    Body(#[from] postcard::Error),
    /// Bytes are left over after the message.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Encodes a message.
pub fn encode<T: Serialize>(value: &T) -> Result<RaftPayload, postcard::Error> {
    let body = postcard::to_stdvec(value)?;
    let data = FrameWriter::with_capacity(body.len() + 4)
        .checked(&body)
        .finish();
    Ok(RaftPayload { data })
}

/// Decodes a message, verifying its checksum.
pub fn decode_raw<T: DeserializeOwned>(data: &[u8]) -> Result<T, CodecError> {
    let body = FrameReader::new(data).checked_rest()?;
    let (value, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(value)
}

/// Decodes a request, answering INVALID_ARGUMENT that names what was expected.
pub fn decode<T: DeserializeOwned>(payload: &RaftPayload, what: &str) -> Result<T, tonic::Status> {
    decode_raw(&payload.data).map_err(|e| {
        tonic::Status::invalid_argument(format!(
            "raft: malformed {what} payload ({} bytes): {e}",
            payload.data.len()
        ))
    })
}
