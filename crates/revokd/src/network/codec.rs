//! Encoding of openraft messages inside `RaftPayload`.

use revokd_proto::v1::RaftPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes a message.
pub fn encode<T: Serialize>(value: &T) -> Result<RaftPayload, postcard::Error> {
    Ok(RaftPayload {
        data: postcard::to_stdvec(value)?,
    })
}

/// Decodes a message, naming what was expected in the error.
pub fn decode<T: DeserializeOwned>(payload: &RaftPayload, what: &str) -> Result<T, tonic::Status> {
    postcard::from_bytes(&payload.data).map_err(|e| {
        tonic::Status::invalid_argument(format!(
            "raft: malformed {what} payload ({} bytes): {e}",
            payload.data.len()
        ))
    })
}
