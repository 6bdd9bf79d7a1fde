//! # revokd-client
//!
//! The crate API servers embed to reject revoked JWTs without a network hop per request.
//!
//! ## Layout
//! - [`check`]: the revocation-check interface ([`TokenRef`], [`Verdict`]) shared by the replica
//!   and the validator.
//! - [`validator`]: JWT verification with jsonwebtoken ([`Validator`]): keys bound to algorithms,
//!   `exp`/`nbf`/`iss`/`aud` checks, then revocation.
//! - [`layer`]: a tower layer that validates `Authorization: Bearer` tokens for axum or tonic.

#[cfg(all(feature = "aws_lc_rs", feature = "rust_crypto"))]
compile_error!("revokd-client: enable exactly one JWT crypto backend feature: `aws_lc_rs` (the default) or `rust_crypto` (use default-features = false)");
#[cfg(not(any(feature = "aws_lc_rs", feature = "rust_crypto")))]
compile_error!("revokd-client: enable one JWT crypto backend feature: `aws_lc_rs` or `rust_crypto`");

pub mod check;

pub use check::{Revocation, RevocationCheck, RevokedBy, RuleKind, TokenRef, Verdict};
