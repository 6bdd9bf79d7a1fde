//! Reads the two header fields that choose a key (`kid`) and must match it (`alg`), before
//! jsonwebtoken verifies anything.
//!
//! jsonwebtoken's `decode_header` would do, but it fails on any `alg` it does not know
//! (`none` included) with a JSON error, and allocates every header field; this borrows from a
//! stack buffer and lets the caller say "algorithm `none` is not allowed for this key".

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::error::ValidationError;

/// The fields we act on. `jku`, `x5u`, `jwk` and `x5c` are deliberately not read: a token
/// must never choose its own verification key.
#[derive(Deserialize)]
pub(super) struct RawHeader<'a> {
    #[serde(borrow)]
    pub(super) alg: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// Decodes the base64url header segment and calls `f` with its `alg` and `kid`.
pub(super) fn with_header<T>(
    segment: &str,
    f: impl FnOnce(&RawHeader<'_>) -> Result<T, ValidationError>,
) -> Result<T, ValidationError> {
    // Headers are a few dozen bytes; the heap is only for unusual ones.
    let mut stack = [0u8; 512];
    let heap;
    let json: &[u8] = match base64::decoded_len_estimate(segment.len()) {
        n if n <= stack.len() => {
            let n = URL_SAFE_NO_PAD
                .decode_slice(segment, &mut stack)
                .map_err(bad_base64)?;
            &stack[..n]
        }
        _ => {
            heap = URL_SAFE_NO_PAD.decode(segment).map_err(bad_base64)?;
            &heap
        }
    };
    let header: RawHeader<'_> = serde_json::from_slice(json)
        .map_err(|e| ValidationError::malformed(format!("bad header: {e}")))?;
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: a recipient that does not understand the listed extensions must
        // reject the token, and we understand none.
        return Err(ValidationError::malformed(
            "critical header extensions (crit) are not supported",
        ));
    }
    f(&header)
}

fn bad_base64(e: impl std::fmt::Display) -> ValidationError {
    ValidationError::malformed(format!("header is not base64url: {e}"))
}
