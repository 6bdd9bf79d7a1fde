//! Where an issuer's verification keys come from: key files, a JWK set file, a JWK set URL,
//! or OIDC discovery (`<issuer>/.well-known/openid-configuration`, then its `jwks_uri`).
//!
//! [`KeyLoader::load`] reads or fetches the set once and says how long a fetched set may be
//! used; when to call it (refresh on the cache lifetime, refetch on an unknown `kid`, keep
//! the last good set on failure) is [`crate::issuers`]' business. Every key is bound to one
//! algorithm when it is loaded: a JWK's `alg`, the one its curve implies, or RS256 for an RSA
//! key without `alg` (OIDC's default); the token's header never chooses.

pub mod fetch;

use std::time::Duration;

use revokd_client::{Algorithm, Key, KeySet};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::{check_url, KeyFile, KeySource};
use fetch::{FetchError, Fetcher};

/// Why a key set could not be loaded; the message says where and what to check.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read.
    #[error("issuer {issuer:?}: cannot read {path}: {source}")]
    Read {
        /// The issuer.
        issuer: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The keys are not usable (bad PEM/DER, bad JWK set, no signing key).
    #[error("issuer {issuer:?}: {message}")]
    Invalid {
        /// The issuer.
        issuer: String,
        /// What is wrong.
        message: String,
    },
    /// A fetch failed.
    #[error("issuer {issuer:?}: {source}")]
    Fetch {
        /// The issuer.
        issuer: String,
        /// Why.
        source: FetchError,
    },
}

/// A key set and how long it may be used before it is loaded again (`None`: until the next
/// SIGHUP, for files).
#[derive(Debug)]
pub struct Loaded {
    /// The keys.
    pub keys: KeySet,
    /// The response's cache lifetime, for fetched sets that said one.
    pub lifetime: Option<Duration>,
}

/// Loads one issuer's keys from its [`KeySource`].
pub struct KeyLoader {
    issuer: String,
    source: KeySource,
    fetcher: Fetcher,
    /// The `jwks_uri` discovery found, kept until a fetch of it fails.
    discovered: Mutex<Option<String>>,
}

/// The part of an OIDC discovery document the agent reads (OpenID Connect Discovery 1.0 §3).
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl KeyLoader {
    /// A loader for `issuer`'s keys.
    pub fn new(issuer: &str, source: KeySource, fetcher: Fetcher) -> KeyLoader {
        KeyLoader {
            issuer: issuer.to_owned(),
            source,
            fetcher,
            discovered: Mutex::new(None),
        }
    }

    /// Whether the keys come over the network (and are refreshed on their lifetime).
    pub fn is_remote(&self) -> bool {
        matches!(self.source, KeySource::JwksUrl(_) | KeySource::Discovery)
    }

    /// Reads or fetches the key set once.
    pub async fn load(&self) -> Result<Loaded, KeyError> {
        match &self.source {
            KeySource::Files(files) => {
                let keys = files
                    .iter()
                    .map(|f| self.key_file(f))
                    .collect::<Result<KeySet, _>>()?;
                self.non_empty(keys, None)
            }
            KeySource::JwksFile(path) => {
                let json = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    issuer: self.issuer.clone(),
                    path: path.display().to_string(),
                    source,
                })?;
                self.non_empty(self.parse_jwks(&json)?, None)
            }
            KeySource::JwksUrl(url) => self.fetch_jwks(url).await,
            KeySource::Discovery => {
                let cached = self.discovered.lock().await.clone();
                let uri = match cached {
                    Some(uri) => uri,
                    None => self.discover().await?,
                };
                let loaded = self.fetch_jwks(&uri).await;
                if loaded.is_err() {
                    // The provider may have moved its keys: discover again next time.
                    *self.discovered.lock().await = None;
                }
                loaded
            }
        }
    }

    async fn discover(&self) -> Result<String, KeyError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let fetched = self
            .fetcher
            .get(&url)
            .await
            .map_err(|source| KeyError::Fetch {
                issuer: self.issuer.clone(),
                source,
            })?;
        let doc: Discovery = serde_json::from_slice(&fetched.body)
            .map_err(|e| self.invalid(format!("{url}: not a discovery document: {e}")))?;
        // Discovery §4.3: the document's issuer must be exactly the one asked for, or tokens
        // of one provider could be checked with keys another one publishes.
        if doc.issuer != self.issuer {
            return Err(self.invalid(format!(
                "{url} says its issuer is {:?}; it must be exactly the configured one",
                doc.issuer
            )));
        }
        check_url("jwks_uri", &doc.jwks_uri).map_err(|e| self.invalid(e.to_string()))?;
        *self.discovered.lock().await = Some(doc.jwks_uri.clone());
        Ok(doc.jwks_uri)
    }

    async fn fetch_jwks(&self, url: &str) -> Result<Loaded, KeyError> {
        let fetched = self
            .fetcher
            .get(url)
            .await
            .map_err(|source| KeyError::Fetch {
                issuer: self.issuer.clone(),
                source,
            })?;
        let json = std::str::from_utf8(&fetched.body)
            .map_err(|_| self.invalid(format!("{url}: the key set is not UTF-8")))?;
        let keys = self
            .parse_jwks(json)
            .map_err(|e| self.invalid(format!("{url}: {e}")))?;
        self.non_empty(keys, fetched.lifetime)
    }

    fn parse_jwks(&self, json: &str) -> Result<KeySet, KeyError> {
        KeySet::from_jwks_json_with_defaults(json, &[Algorithm::RS256])
            .map_err(|e| self.invalid(e.to_string()))
    }

    fn key_file(&self, f: &KeyFile) -> Result<Key, KeyError> {
        let bytes = std::fs::read(&f.path).map_err(|source| KeyError::Read {
            issuer: self.issuer.clone(),
            path: f.path.display().to_string(),
            source,
        })?;
        let key = if looks_like_pem(&bytes) {
            Key::from_pem(f.alg, &bytes)
        } else {
            Key::from_der(f.alg, &bytes)
        }
        .map_err(|e| self.invalid(format!("{}: {e}", f.path.display())))?;
        Ok(match &f.kid {
            Some(kid) => key.kid(kid.as_str()),
            None => key,
        })
    }

    fn non_empty(&self, keys: KeySet, lifetime: Option<Duration>) -> Result<Loaded, KeyError> {
        if keys.is_empty() {
            return Err(self.invalid("the key set holds no signing key"));
        }
        Ok(Loaded { keys, lifetime })
    }

    fn invalid(&self, message: impl Into<String>) -> KeyError {
        KeyError::Invalid {
            issuer: self.issuer.clone(),
            message: message.into(),
        }
    }
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(b"-----BEGIN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_and_jwks_files_load_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(None).unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            r#"{"keys":[{"kty":"oct","kid":"h1","alg":"HS256","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}"#,
        )
        .unwrap();
        assert!(jwks.exists());
        let loader = KeyLoader::new("i", KeySource::JwksFile(jwks.clone()), fetcher.clone());
        assert!(!loader.is_remote());
        let loaded = loader.load().await.unwrap();
        assert_eq!(loaded.keys.len(), 1);
        assert_eq!(loaded.lifetime, None);

        std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
        let e = loader.load().await.unwrap_err();
        assert!(e.to_string().contains("no signing key"), "{e}");
        std::fs::write(&jwks, "not json").unwrap();
        let e = loader.load().await.unwrap_err();
        assert!(e.to_string().contains("not a JWK set"), "{e}");

        let missing = KeyLoader::new(
            "i",
            KeySource::Files(vec![KeyFile {
                alg: Algorithm::ES256,
                path: dir.path().join("none.pem"),
                kid: None,
            }]),
            fetcher,
        );
        let e = missing.load().await.unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
