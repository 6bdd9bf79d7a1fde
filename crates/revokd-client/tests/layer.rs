//! The bearer-auth layer in front of an axum router (driven with `oneshot`) and in front of a
//! real tonic server (over TCP, with a generated revokd client).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::routing::get;
use axum::{Extension, Router};
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use revokd_client::{
    Algorithm, BearerAuthLayer, Key, Revocation, RevocationCheck, RevokedBy, TokenQuery, Validated,
    Validator, ValidatorBuilder, Verdict,
};
use revokd_proto::clock::unix_now;
use revokd_testkit::jwt::Signer;
use serde_json::{json, Value};
use tower::ServiceExt as _;

const SECRET: &[u8] = b"layer-test-secret-of-at-least-32-bytes!";

fn token(claims: Value) -> String {
    Signer::hmac(Algorithm::HS256, SECRET)
        .sign(&claims)
        .unwrap()
}

fn valid_token() -> String {
    token(
        json!({ "sub": "alice", "jti": "j1", "aud": "api", "iat": unix_now(), "exp": unix_now() + 600 }),
    )
}

fn builder() -> ValidatorBuilder {
    Validator::builder()
        .key(Key::hmac(Algorithm::HS256, SECRET).unwrap())
        .audience("api")
}

/// A revocation check that always answers `verdict`.
struct Fixed(Verdict);

impl RevocationCheck for Fixed {
    fn check(&self, _: &TokenQuery<'_>) -> Verdict {
        self.0.clone()
    }
}

/// A router whose handler echoes what it found in the extensions, counting its calls.
fn app(validator: Validator) -> (Router, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let router = Router::new()
        .route(
            "/me",
            get(move |Extension(v): Extension<Validated>| async move {
                seen.fetch_add(1, Ordering::SeqCst);
                format!("{} stale={:?}", v.claims.sub.unwrap_or_default(), v.stale)
            }),
        )
        .layer(BearerAuthLayer::new(Arc::new(validator)));
    (router, calls)
}

fn get_me(authorization: Option<&str>) -> Request<Body> {
    let mut req = Request::get("/me");
    if let Some(value) = authorization {
        req = req.header(AUTHORIZATION, value);
    }
    req.body(Body::empty()).unwrap()
}

async fn body(response: Response<Body>) -> String {
    String::from_utf8(
        to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

fn challenge(response: &Response<Body>) -> &str {
    response
        .headers()
        .get(WWW_AUTHENTICATE)
        .expect("WWW-Authenticate")
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn valid_token_reaches_the_handler_with_its_claims() {
    let (app, calls) = app(builder().build().unwrap());
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {}", valid_token());
        let response = app.clone().oneshot(get_me(Some(&auth))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
        assert_eq!(body(response).await, "alice stale=None");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn stale_fail_open_reaches_the_handler_flagged() {
    let stale = Duration::from_secs(9);
    let validator = builder()
        .revocations(Fixed(Verdict::Allowed { stale: Some(stale) }))
        .build()
        .unwrap();
    let (app, _) = app(validator);
    let auth = format!("Bearer {}", valid_token());
    let response = app.oneshot(get_me(Some(&auth))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body(response).await, "alice stale=Some(9s)");
}

#[tokio::test]
async fn no_token_gets_the_bare_challenge() {
    let (app, calls) = app(builder().build().unwrap());
    // No header, and another scheme (RFC 6750 §3.1: no error code in either case).
    for auth in [None, Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l")] {
        let response = app.clone().oneshot(get_me(auth)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(challenge(&response), r#"Bearer realm="revokd""#);
        assert_eq!(body(response).await, "");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bad_tokens_get_invalid_token() {
    let (app, calls) = app(builder().build().unwrap());
    let expired = token(json!({ "sub": "a", "jti": "j", "aud": "api", "exp": unix_now() - 3600 }));
    let cases = [
        (format!("Bearer {expired}"), "token expired"),
        ("Bearer not-a-jwt".to_owned(), "malformed token"),
        ("Bearer ".to_owned(), "malformed token"),
        (format!("Bearer {}x", valid_token()), "bad signature"),
    ];
    for (auth, description) in cases {
        let response = app.clone().oneshot(get_me(Some(&auth))).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth}");
        assert_eq!(
            challenge(&response),
            format!(
                r#"Bearer realm="revokd", error="invalid_token", error_description="{description}""#
            )
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn revoked_tokens_do_not_leak_the_reason() {
    let revocation = Revocation {
        by: RevokedBy::Jti,
        reason: "incident-4711 secret details".into(),
    };
    let validator = builder()
        .revocations(Fixed(Verdict::Revoked(revocation)))
        .build()
        .unwrap();
    let (app, _) = app(validator);
    let auth = format!("Bearer {}", valid_token());
    let response = app.oneshot(get_me(Some(&auth))).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge(&response);
    assert!(
        challenge.contains(r#"error_description="token revoked""#),
        "{challenge}"
    );
    assert!(!challenge.contains("4711"), "{challenge}");
}

#[tokio::test]
async fn a_stale_replica_under_fail_closed_answers_503_with_retry_after() {
    let validator = builder()
        .revocations(Fixed(Verdict::Stale {
            staleness: Duration::from_secs(12),
        }))
        .build()
        .unwrap();
    let (app, calls) = app(validator);
    let auth = format!("Bearer {}", valid_token());
    let response = app.clone().oneshot(get_me(Some(&auth))).await.unwrap();
    // "Cannot tell now", not "your token is bad": a 401 would make the client drop a token
    // that may be perfectly good.
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    assert!(response.headers().get(WWW_AUTHENTICATE).is_none());

    let req = Request::post("/me")
        .header(CONTENT_TYPE, "application/grpc")
        .header(AUTHORIZATION, &auth)
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "14", "UNAVAILABLE");
    assert_eq!(response.headers()[RETRY_AFTER], "1");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn several_authorization_headers_are_a_bad_request() {
    let (app, calls) = app(builder().build().unwrap());
    let auth = format!("Bearer {}", valid_token());
    let req = Request::get("/me")
        .header(AUTHORIZATION, &auth)
        .header(AUTHORIZATION, "Bearer other")
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(challenge(&response).contains(r#"error="invalid_request""#));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn grpc_requests_get_grpc_unauthenticated() {
    let (app, calls) = app(builder().build().unwrap());
    for (auth, has_error) in [(None, false), (Some("Bearer garbage"), true)] {
        let mut req = Request::post("/me").header(CONTENT_TYPE, "application/grpc+proto");
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let response = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h["grpc-status"], "16");
        assert_eq!(h[CONTENT_TYPE], "application/grpc");
        let expected = if has_error {
            "malformed token"
        } else {
            "missing bearer token"
        };
        assert_eq!(h["grpc-message"], expected);
        assert_eq!(challenge(&response).contains("invalid_token"), has_error);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// The layer in a real tonic server: the generated revokd client sees UNAUTHENTICATED without
/// a token, and with a valid one reaches the router (which has no services: UNIMPLEMENTED).
#[tokio::test]
async fn tonic_server_with_the_layer() {
    use revokd_proto::v1::cluster_client::ClusterClient;
    use revokd_proto::v1::StatusRequest;
    use tonic::Code;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(BearerAuthLayer::new(Arc::new(builder().build().unwrap())))
            .add_routes(tonic::service::Routes::default())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let mut client = ClusterClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let status = client.status(StatusRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "missing bearer token");

    let mut req = tonic::Request::new(StatusRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    let status = client.status(req).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "malformed token")
    );

    let mut req = tonic::Request::new(StatusRequest {});
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", valid_token()).parse().unwrap(),
    );
    let status = client.status(req).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
