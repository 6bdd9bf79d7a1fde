//! The accepted issuers, each with its current key set turned into a [`Validator`] bound to
//! the local replica; which issuer checks a token; and when key sets are loaded again.
//!
//! - A token goes to the issuer its (unverified) `iss` names; with one issuer, every token
//!   goes to it. The chosen validator checks `iss` again, verified.
//! - Remote sets are fetched again when their cache lifetime ends (clamped to
//!   `--jwks-min-refresh`..`--jwks-max-refresh`, `--jwks-refresh` when the response gave
//!   none), and at once, at most every `--jwks-min-refresh`, when a token names a `kid` the
//!   set lacks. A failed fetch keeps the last good set and is retried after
//!   `--jwks-min-refresh`; it is counted in `revokd_agent_jwks_fetch_failures_total`.
//! - Files are read at start and on SIGHUP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use revokd_client::{Replica, Validated, ValidationError, Validator};
use tokio::sync::Mutex;

use crate::config::{Config, Issuer, Refresh};
use crate::keys::fetch::Fetcher;
use crate::keys::{KeyError, KeyLoader, Loaded};
use crate::metrics::Metrics;

/// Why a token could not be checked or was refused.
#[derive(Debug)]
pub enum Refusal {
    /// A validation failure (or a stale replica under fail closed).
    Invalid(ValidationError),
    /// The token's issuer's keys have never loaded: the agent cannot tell.
    KeysUnavailable,
}

/// One issuer and its current validator.
struct IssuerState {
    config: Issuer,
    loader: KeyLoader,
    validator: ArcSwapOption<Validator>,
    /// When a load was last tried (single flight: held while fetching).
    last_load: Mutex<Option<Instant>>,
}

/// Every accepted issuer. Cheap to share behind an [`Arc`].
pub struct Issuers {
    list: Vec<Arc<IssuerState>>,
    replica: Replica,
    settings: Settings,
    refresh: Refresh,
    metrics: Arc<Metrics>,
}

/// The validator settings every issuer shares.
struct Settings {
    leeway: Duration,
    max_token_len: usize,
    require_jti: bool,
}

impl Issuers {
    /// The issuers of `config`, checking against `replica`. Loads every key set once: a file
    /// that does not load is an error; a remote set that does not load yet is logged and
    /// retried (tokens of that issuer get 503 meanwhile).
    pub async fn start(
        config: &Config,
        replica: Replica,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Issuers>> {
        let fetcher = Fetcher::new(config.refresh.ca_pem.as_deref())?;
        let list = config
            .issuers
            .iter()
            .map(|i| {
                Arc::new(IssuerState {
                    config: i.clone(),
                    loader: KeyLoader::new(&i.issuer, i.keys.clone(), fetcher.clone()),
                    validator: ArcSwapOption::empty(),
                    last_load: Mutex::new(None),
                })
            })
            .collect();
        let issuers = Arc::new(Issuers {
            list,
            replica,
            settings: Settings {
                leeway: config.leeway,
                max_token_len: config.max_token_len,
                require_jti: config.require_jti,
            },
            refresh: config.refresh.clone(),
            metrics,
        });
        for state in &issuers.list {
            let next = issuers.load(state).await;
            if state.loader.is_remote() {
                let this = issuers.clone();
                let state = state.clone();
                tokio::spawn(async move { this.refresh_loop(state, next).await });
            } else if state.validator.load().is_none() {
                anyhow::bail!(
                    "issuer {:?}: its keys did not load (see the error above)",
                    state.config.issuer
                );
            }
        }
        Ok(issuers)
    }

    /// Whether every issuer has a key set.
    pub fn all_loaded(&self) -> bool {
        self.list.iter().all(|s| s.validator.load().is_some())
    }

    /// Reads every file-based key set again (SIGHUP); a set that fails keeps the last one.
    pub async fn reload_files(&self) {
        for state in self.list.iter().filter(|s| !s.loader.is_remote()) {
            self.load(state).await;
        }
    }

    /// Validates a token with its issuer's keys and the replica.
    pub async fn validate(&self, token: &str) -> Result<Validated, Refusal> {
        let state = self.select(token)?;
        let Some(validator) = state.validator.load_full() else {
            return Err(Refusal::KeysUnavailable);
        };
        match validator.validate(token) {
            Err(ValidationError::UnknownKey { .. }) if state.loader.is_remote() => {
                // The provider may have rotated its keys: fetch again, unless that was done
                // within --jwks-min-refresh, then try once more with what is there.
                self.load_if_due(&state).await;
                let validator = state
                    .validator
                    .load_full()
                    .ok_or(Refusal::KeysUnavailable)?;
                validator.validate(token).map_err(Refusal::Invalid)
            }
            result => result.map_err(Refusal::Invalid),
        }
    }

    fn select(&self, token: &str) -> Result<Arc<IssuerState>, Refusal> {
        if let [only] = &*self.list {
            return Ok(only.clone());
        }
        let iss = peek_issuer(token).ok_or(Refusal::Invalid(ValidationError::WrongIssuer))?;
        self.list
            .iter()
            .find(|s| s.config.issuer == iss)
            .cloned()
            .ok_or(Refusal::Invalid(ValidationError::WrongIssuer))
    }

    /// Loads `state`'s keys if the last try is older than `--jwks-min-refresh`. A load
    /// already running is waited for, and then counts as recent.
    async fn load_if_due(&self, state: &IssuerState) {
        self.load_when(state, true).await;
    }

    /// Loads once, swaps the validator in on success; returns when to load next.
    async fn load(&self, state: &IssuerState) -> Duration {
        self.load_when(state, false).await
    }

    async fn load_when(&self, state: &IssuerState, only_if_due: bool) -> Duration {
        let mut last = state.last_load.lock().await;
        if only_if_due && last.is_some_and(|at| at.elapsed() < self.refresh.min) {
            return self.refresh.min;
        }
        *last = Some(Instant::now());
        let issuer = &state.config.issuer;
        let result: Result<Loaded, KeyError> = state.loader.load().await;
        match result.and_then(|loaded| self.build(state, loaded)) {
            Ok((validator, keys, lifetime)) => {
                tracing::info!(issuer, keys, ?lifetime, "issuer keys loaded");
                state.validator.store(Some(Arc::new(validator)));
                self.metrics
                    .keys
                    .with_label_values(&[issuer])
                    .set(keys as i64);
                self.metrics
                    .jwks_loaded_at
                    .with_label_values(&[issuer])
                    .set(revokd_client::clock::unix_now());
                lifetime
            }
            Err(e) => {
                let kept = state.validator.load().is_some();
                tracing::warn!(issuer, error = %e, kept_last_good = kept, "issuer keys did not load");
                self.metrics
                    .jwks_failures
                    .with_label_values(&[issuer])
                    .inc();
                self.refresh.min
            }
        }
    }

    fn build(
        &self,
        state: &IssuerState,
        loaded: Loaded,
    ) -> Result<(Validator, usize, Duration), KeyError> {
        let keys = loaded.keys.len();
        let mut builder = Validator::builder()
            .keys(loaded.keys.iter().cloned())
            .issuer(state.config.issuer.clone())
            .leeway(self.settings.leeway)
            .max_token_len(self.settings.max_token_len)
            .require_jti(self.settings.require_jti)
            .revocations(self.replica.clone());
        for aud in &state.config.audience {
            builder = builder.audience(aud.clone());
        }
        let validator = builder.build().map_err(|e| KeyError::Invalid {
            issuer: state.config.issuer.clone(),
            message: e.to_string(),
        })?;
        let lifetime = loaded
            .lifetime
            .unwrap_or(self.refresh.default)
            .clamp(self.refresh.min, self.refresh.max);
        Ok((validator, keys, lifetime))
    }

    async fn refresh_loop(self: Arc<Self>, state: Arc<IssuerState>, mut next: Duration) {
        loop {
            tokio::time::sleep(next).await;
            next = self.load(&state).await;
        }
    }
}

/// The `iss` claim of a token, unverified: only to choose which issuer's keys verify it.
fn peek_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_is_peeked_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://a.example","sub":"x"}"#);
        assert_eq!(
            peek_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://a.example")
        );
        assert_eq!(peek_issuer("e30.e30.sig"), None);
        assert_eq!(peek_issuer("garbage"), None);
        assert_eq!(peek_issuer("e30.!!!.sig"), None);
    }
}
