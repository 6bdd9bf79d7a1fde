//! Fetching a key set or a discovery document over HTTP(S): one GET with a timeout and a
//! body limit, no redirects, and the response's cache lifetime (`Cache-Control: max-age`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The largest key set or discovery document read: real ones are a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;
/// How long one fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a fetch failed; the message names the URL and what to check.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting, TLS or the request itself failed.
    #[error("GET {url}: {message}")]
    Transport {
        /// The URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The server answered something other than 200.
    #[error("GET {url}: answered {status} (expected 200 with the document)")]
    Status {
        /// The URL.
        url: String,
        /// Its status.
        status: StatusCode,
    },
    /// No answer within [`FETCH_TIMEOUT`].
    #[error("GET {url}: no answer within {FETCH_TIMEOUT:?}")]
    Timeout {
        /// The URL.
        url: String,
    },
}

/// A fetched document and how long it may be used, if the response said.
#[derive(Debug)]
pub struct Fetched {
    /// The body.
    pub body: Bytes,
    /// `Cache-Control: max-age`, or zero for `no-cache` / `no-store`.
    pub lifetime: Option<Duration>,
}

/// An HTTP(S) client trusting the system's roots and an optional extra CA. Cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Fetcher {
    /// A client; `extra_ca_pem` is trusted besides the system's roots.
    pub fn new(extra_ca_pem: Option<&[u8]>) -> anyhow::Result<Fetcher> {
        let mut roots = rustls::RootCertStore::empty();
        // A root the system ships but rustls cannot parse is skipped, as browsers do; an
        // empty store (a container without ca-certificates) still works with --jwks-ca.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_ca_pem {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots.add(cert.map_err(|e| anyhow::anyhow!("--jwks-ca: {e}"))?)?;
                added += 1;
            }
            anyhow::ensure!(added > 0, "--jwks-ca: no PEM certificate in the file");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Fetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// GETs `url` (checked by [`crate::config::check_url`] when configured).
    pub async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        let transport = |message: String| FetchError::Transport {
            url: url.to_owned(),
            message,
        };
        let request = Request::get(url)
            .header(
                USER_AGENT,
                concat!("revokd-agent/", env!("CARGO_PKG_VERSION")),
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| transport(e.to_string()))?;
        let fetch = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| transport(error_chain(&e)))?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status {
                    url: url.to_owned(),
                    status: response.status(),
                });
            }
            let lifetime = response
                .headers()
                .get_all(CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(cache_lifetime);
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    transport(format!("reading the body (at most {MAX_BODY} bytes): {e}"))
                })?
                .to_bytes();
            Ok(Fetched { body, lifetime })
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::Timeout {
                    url: url.to_owned(),
                })
            })
    }
}

/// The error and its sources, joined: hyper's own message alone says only "client error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The lifetime one `Cache-Control` value gives: `max-age=N`, or zero for `no-cache` and
/// `no-store` (use it once, fetch again as soon as allowed).
pub fn cache_lifetime(value: &str) -> Option<Duration> {
    let mut lifetime = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            if let Ok(secs) = secs.trim_matches('"').parse::<u64>() {
                lifetime = Some(Duration::from_secs(secs));
            }
        }
    }
    lifetime
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_gives_the_lifetime() {
        let s = Duration::from_secs;
        assert_eq!(cache_lifetime("max-age=300"), Some(s(300)));
        assert_eq!(
            cache_lifetime("public, Max-Age=60, must-revalidate"),
            Some(s(60))
        );
        assert_eq!(cache_lifetime("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_lifetime("max-age=60, no-cache"), Some(Duration::ZERO));
        assert_eq!(cache_lifetime("public"), None);
        assert_eq!(cache_lifetime("max-age=soon"), None);
    }
}
