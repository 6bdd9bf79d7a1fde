//! The validator and the tower layer backed by a real replica of a real cluster: a token that
//! validates is refused once an admin revokes it (by `jti` or by rule), over HTTP too.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use http::{header, Request, StatusCode};
use revokd_client::{
    BearerAuthLayer, Key, Revoke, RevokedBy, RuleKind, Validated, ValidationError, Validator,
};
use revokd_e2e::{client, now, replica};
use revokd_testkit::jwt::{Algorithm, Signer};
use revokd_testkit::ProcessCluster;
use tower::ServiceExt;

const SECRET: &[u8] = b"an-hs256-test-secret-of-32-bytes-or-more";
const WAIT: Duration = Duration::from_secs(15);

fn token(jti: &str, sub: &str, iat: i64) -> String {
    let claims = serde_json::json!({
        "jti": jti,
        "sub": sub,
        "iss": "https://idp.example",
        "aud": "api",
        "iat": iat,
        "exp": now() + 3600,
    });
    Signer::hmac(Algorithm::HS256, SECRET)
        .sign(&claims)
        .expect("sign")
}

async fn get_with(app: &Router, token: &str) -> Result<(StatusCode, String)> {
    let resp = app
        .clone()
        .oneshot(
            Request::get("/whoami")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())?,
        )
        .await?;
    let status = resp.status();
    let challenge = resp
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, challenge))
}

#[tokio::test]
async fn revoked_tokens_are_refused_by_the_validator_and_the_layer() -> Result<()> {
    let cluster = ProcessCluster::start(3).await?;
    cluster.wait_leader(WAIT).await?;
    let rep = replica(&cluster.endpoints(), "validator-e2e").await?;
    let admin = client(&cluster.endpoints()).await?;
    let validator = Arc::new(
        Validator::builder()
            .key(Key::hmac(Algorithm::HS256, SECRET)?)
            .issuer("https://idp.example")
            .audience("api")
            .revocations(rep.clone())
            .build()?,
    );
    let app =
        Router::new()
            .route(
                "/whoami",
                get(|Extension(v): Extension<Validated>| async move {
                    v.claims.sub.unwrap_or_default()
                }),
            )
            .layer(BearerAuthLayer::new(validator.clone()));

    let stolen = token("tok-stolen", "carol", now() - 10);
    let other = token("tok-other", "dave", now() - 10);
    assert!(validator.validate(&stolen).is_ok());
    assert_eq!(get_with(&app, &stolen).await?.0, StatusCode::OK);

    // Revoke by jti: refused as soon as the replica has the revision, with the reason.
    let w = admin
        .revoke(Revoke::new("tok-stolen", now() + 3600).reason("laptop stolen"))
        .await?;
    assert!(rep.wait_for_revision(w.committed_revision, WAIT).await);
    match validator.validate(&stolen) {
        Err(ValidationError::Revoked(r)) => {
            assert_eq!(r.by, RevokedBy::Jti);
            assert_eq!(&*r.reason, "laptop stolen");
        }
        other => panic!("expected Revoked, got {other:?}"),
    }
    let (status, challenge) = get_with(&app, &stolen).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert_eq!(get_with(&app, &other).await?.0, StatusCode::OK);

    // "Log out everywhere" for dave: his tokens issued before now are refused, a new one is not.
    let w = admin
        .revoke_rule(RuleKind::Subject, "dave", Some(now()), "password reset")
        .await?;
    assert!(rep.wait_for_revision(w.committed_revision, WAIT).await);
    assert!(matches!(
        validator.validate(&other),
        Err(ValidationError::Revoked(r)) if matches!(r.by, RevokedBy::Rule { kind: RuleKind::Subject, .. })
    ));
    assert_eq!(get_with(&app, &other).await?.0, StatusCode::UNAUTHORIZED);
    let fresh = token("tok-new", "dave", now() + 1);
    assert!(validator.validate(&fresh).is_ok());

    // Unrevoke: accepted again.
    let w = admin.unrevoke("tok-stolen").await?;
    assert!(rep.wait_for_revision(w.committed_revision, WAIT).await);
    assert_eq!(get_with(&app, &stolen).await?.0, StatusCode::OK);
    Ok(())
}
