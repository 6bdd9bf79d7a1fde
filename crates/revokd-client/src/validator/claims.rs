//! The claims of a validated token: the registered ones typed, the rest in `extra`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A token's claims. The registered claims (and `azp`'s common alias `client_id`) are typed;
/// every other claim is deserialized into `extra` (by default a JSON map; any
/// `DeserializeOwned` type that tolerates unknown fields works, with
/// [`Validator::validate_as`](super::Validator::validate_as)).
///
/// Time claims are unix seconds; fractional values (allowed by RFC 7519) are rounded down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims<C = Map<String, Value>> {
    /// `jti`: the token's unique id (what revocation by id matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `sub`: the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// `azp`: the authorized party (the OAuth client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    /// `client_id` (RFC 9068): the OAuth client, used when `azp` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `iss`: the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `aud`: the audiences (a single string in the token becomes one element).
    #[serde(default, with = "audience", skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
    /// `exp`: expiry. Always present in a validated token (the validator requires it).
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: i64,
    /// `nbf`: not valid before.
    #[serde(
        default,
        deserialize_with = "optional_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<i64>,
    /// `iat`: issued at (what revocation rules compare against).
    #[serde(
        default,
        deserialize_with = "optional_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub iat: Option<i64>,
    /// Every other claim.
    #[serde(flatten)]
    pub extra: C,
}

impl<C> Claims<C> {
    /// The OAuth client: `azp`, else `client_id`.
    pub fn client(&self) -> Option<&str> {
        self.azp.as_deref().or(self.client_id.as_deref())
    }
}

/// A token that passed every check: its claims, which key verified it, and whether the
/// revocation answer came from a stale replica.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated<C = Map<String, Value>> {
    /// The token's claims.
    pub claims: Claims<C>,
    /// The algorithm that verified it (the selected key's).
    pub alg: Algorithm,
    /// The `kid` of the key that verified it.
    pub kid: Option<Arc<str>>,
    /// Set when the revocation check answered from a replica past its staleness bound under
    /// the fail-open policy: how long the replica has not been known to be up to date. The
    /// token was accepted; log it or degrade.
    pub stale: Option<Duration>,
}

impl<C> Validated<C> {
    /// Whether the revocation answer came from a stale replica (fail open).
    pub fn is_stale(&self) -> bool {
        self.stale.is_some()
    }
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
mod audience {
    use super::*;

    pub(super) fn serialize<S: Serializer>(aud: &[String], s: S) -> Result<S::Ok, S::Error> {
        match aud {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        struct Aud;
        impl<'de> Visitor<'de> for Aud {
            type Value = Vec<String>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(vec![v.to_owned()])
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Vec::new())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Bounded by the token length limit, so no cap is needed here.
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(out)
            }
        }
        d.deserialize_any(Aud)
    }
}

/// A NumericDate: an integer or a float of seconds (rounded down; out-of-range values are an
/// error, not a wrap).
struct NumericDate;

impl Visitor<'_> for NumericDate {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of seconds since the unix epoch")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v)
            .map(Some)
            .map_err(|_| E::custom("NumericDate out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // i64::MAX as f64 rounds up to 2^63, so `<` keeps the cast exact-or-truncating.
        if v.is_finite() && v >= i64::MIN as f64 && v < i64::MAX as f64 {
            Ok(Some(v.floor() as i64))
        } else {
            Err(E::custom("NumericDate out of range"))
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    // A missing or null `exp` deserializes to 0 here; the validator has already rejected such a
    // token as "missing exp" before anyone sees these claims.
    Ok(d.deserialize_any(NumericDate)?.unwrap_or(0))
}

fn optional_numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(NumericDate)
}
