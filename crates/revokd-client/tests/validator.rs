//! The validator through its public API: every algorithm, every kind of bad token, revocation
//! through a test double, configuration errors, and tokens made by PyJWT.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, OctetKeyPairParameters,
    OctetKeyPairType,
};
use jsonwebtoken::EncodingKey;
use revokd_client::validator::DEFAULT_MAX_TOKEN_LEN;
use revokd_client::{
    Algorithm, ConfigError, Key, KeySet, Revocation, RevocationCheck, RevokedBy, RuleKind,
    TokenQuery, ValidationError, Validator, Verdict,
};
use revokd_proto::clock::unix_now;
use revokd_testkit::jwt::{self, Signer};
use serde::Deserialize;
use serde_json::{json, Value};

const ISS: &str = "https://auth.test";
const AUD: &str = "orders";
const SECRET: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const ALL: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn fixture(name: &str) -> Vec<u8> {
    jwt::key_file(name).unwrap()
}

/// The DER inside a PEM file.
fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn hmac_secret(alg: Algorithm) -> &'static [u8] {
    match alg {
        Algorithm::HS256 => &SECRET[..32],
        Algorithm::HS384 => &SECRET[..48],
        _ => &SECRET[..],
    }
}

/// The test signer for `alg`: this file's secret for HMAC, the test key pair otherwise.
fn signer(alg: Algorithm) -> Signer {
    match jwt::key_stem(alg) {
        None => Signer::hmac(alg, hmac_secret(alg)),
        Some(_) => Signer::fixture(alg).unwrap(),
    }
}

fn signing_key(alg: Algorithm) -> EncodingKey {
    signer(alg).key().clone()
}

fn verifying_key(alg: Algorithm) -> Key {
    match jwt::key_stem(alg) {
        None => Key::hmac(alg, hmac_secret(alg)).unwrap(),
        Some(_) => Key::from_pem(alg, jwt::public_pem(alg).unwrap()).unwrap(),
    }
}

/// Valid claims: right issuer and audience, issued now, valid for 10 minutes.
fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "azp": "web",
        "jti": "jti-1",
        "iat": unix_now(),
        "exp": unix_now() + 600,
        "scope": "orders:read",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    sign_as(signer(alg), kid, claims)
}

fn sign_with(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    sign_as(Signer::new(alg, key.clone()), kid, claims)
}

fn sign_as(signer: Signer, kid: Option<&str>, claims: &Value) -> String {
    match kid {
        Some(kid) => signer.kid(kid),
        None => signer,
    }
    .sign(claims)
    .unwrap()
}

/// A token with a hand-written header (for algorithms jsonwebtoken refuses to produce).
fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.{}",
        part(header),
        part(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn validator(key: Key) -> Validator {
    Validator::builder()
        .key(key)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap()
}

fn hs256() -> Validator {
    validator(verifying_key(Algorithm::HS256))
}

#[track_caller]
fn rejected(validator: &Validator, token: &str) -> ValidationError {
    match validator.validate(token) {
        Ok(v) => panic!("token was accepted: {v:?}"),
        Err(e) => {
            // Every error has a log message and a client description.
            assert!(!e.to_string().is_empty() && !e.client_description().is_empty());
            e
        }
    }
}

#[test]
fn every_algorithm_validates_with_a_pem_or_secret_key() {
    for alg in ALL {
        let v = validator(verifying_key(alg).kid("k1"));
        let token = sign(alg, Some("k1"), &claims());
        let ok = v
            .validate(&token)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(ok.alg, alg);
        assert_eq!(ok.kid.as_deref(), Some("k1"));
        assert_eq!(ok.stale, None);
        assert_eq!(ok.claims.sub.as_deref(), Some("alice"));
        assert_eq!(ok.claims.jti.as_deref(), Some("jti-1"));
        assert_eq!(ok.claims.iss.as_deref(), Some(ISS));
        assert_eq!(ok.claims.aud, vec![AUD.to_owned()]);
        assert_eq!(ok.claims.extra["scope"], "orders:read");
        assert!(
            !ok.claims.extra.contains_key("sub"),
            "registered claims are not repeated"
        );

        // And the same token without a kid, the validator having that single key.
        let v = validator(verifying_key(alg));
        v.validate(&sign(alg, None, &claims()))
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
    }
}

#[test]
fn der_keys_validate() {
    for alg in [
        Algorithm::RS256,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let der = pem_to_der(&jwt::public_pem(alg).unwrap());
        let v = validator(Key::from_der(alg, &der).unwrap());
        v.validate(&sign(alg, None, &claims()))
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
    }
    let err = Key::from_der(Algorithm::ES256, b"not der").unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidKey {
                alg: Algorithm::ES256,
                ..
            }
        ),
        "{err:?}"
    );
}

fn jwk_json(alg: Algorithm, kid: &str, keep_alg: bool) -> Value {
    let mut jwk = if alg == Algorithm::EdDSA {
        // jsonwebtoken cannot derive an OKP JWK; the raw key is the SPKI's last 32 bytes.
        let der = pem_to_der(&fixture("ed25519_public.pem"));
        Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]),
            }),
        }
    } else {
        Jwk::from_encoding_key(&signing_key(alg), alg).unwrap()
    };
    jwk.common.key_id = Some(kid.to_owned());
    if !keep_alg {
        jwk.common.key_algorithm = None;
    }
    serde_json::to_value(jwk).unwrap()
}

#[test]
fn jwks_keys_are_selected_by_kid_and_get_their_algorithm() {
    let jwks = json!({ "keys": [
        jwk_json(Algorithm::RS256, "rsa", true),
        jwk_json(Algorithm::ES256, "p256", false), // alg inferred from the curve
        jwk_json(Algorithm::ES384, "p384", false),
        jwk_json(Algorithm::EdDSA, "ed", false),
        jwk_json(Algorithm::HS512, "hmac", true),
        // An encryption key, as identity providers publish next to signing keys: skipped.
        { "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "enc", "n": "AQAB", "e": "AQAB" },
    ]});
    let set = KeySet::from_jwks_json(&jwks.to_string()).unwrap();
    assert_eq!(set.len(), 5);
    let v = Validator::builder()
        .keys(set)
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    for (alg, kid) in [
        (Algorithm::RS256, "rsa"),
        (Algorithm::ES256, "p256"),
        (Algorithm::ES384, "p384"),
        (Algorithm::EdDSA, "ed"),
        (Algorithm::HS512, "hmac"),
    ] {
        let ok = v
            .validate(&sign(alg, Some(kid), &claims()))
            .unwrap_or_else(|e| panic!("{kid}: {e}"));
        assert_eq!((ok.alg, ok.kid.as_deref()), (alg, Some(kid)));
    }
    // The kid picks the key, and the key's algorithm is the only one allowed.
    let err = rejected(&v, &sign(Algorithm::ES256, Some("p384"), &claims()));
    assert!(
        matches!(&err, ValidationError::AlgorithmNotAllowed { alg, allowed: Algorithm::ES384, .. } if alg == "ES256"),
        "{err:?}"
    );
    let err = rejected(&v, &sign(Algorithm::HS512, Some("nope"), &claims()));
    assert!(
        matches!(&err, ValidationError::UnknownKey { kid } if kid == "nope"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"nope\""), "{err}");
    let err = rejected(&v, &sign(Algorithm::HS512, None, &claims()));
    assert!(
        matches!(err, ValidationError::AmbiguousKey { keys: 5 }),
        "{err:?}"
    );
}

#[test]
fn jwks_rsa_and_oct_keys_without_alg_need_a_default() {
    let jwks = json!({ "keys": [jwk_json(Algorithm::RS256, "rsa", false)] }).to_string();
    let err = KeySet::from_jwks_json(&jwks).unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidJwk { index: Some(0), kid: Some(k), reason } if k == "rsa" && reason.contains("without alg")),
        "{err:?}"
    );
    let set = KeySet::from_jwks_json_with_defaults(&jwks, &[Algorithm::PS256]).unwrap();
    assert_eq!(set.iter().next().unwrap().algorithm(), Algorithm::PS256);
    validator(set.into_iter().next().unwrap())
        .validate(&sign(Algorithm::PS256, Some("rsa"), &claims()))
        .unwrap();

    let oct =
        json!({ "keys": [{ "kty": "oct", "kid": "h", "k": URL_SAFE_NO_PAD.encode(SECRET) }] });
    assert!(KeySet::from_jwks_json(&oct.to_string()).is_err());
    let set = KeySet::from_jwks_json_with_defaults(&oct.to_string(), &[Algorithm::HS384]).unwrap();
    assert_eq!(set.iter().next().unwrap().algorithm(), Algorithm::HS384);

    // Defaults are for ambiguous families only, one per family.
    for defaults in [
        &[Algorithm::ES256][..],
        &[Algorithm::RS256, Algorithm::PS256],
    ] {
        let err = KeySet::from_jwks_json_with_defaults(&jwks, defaults).unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidJwk { index: None, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn jwks_keys_that_cannot_be_used_are_errors() {
    let mut p256_as_es384 = jwk_json(Algorithm::ES256, "p", false);
    p256_as_es384["alg"] = json!("ES384");
    let mut rsa_as_es256 = jwk_json(Algorithm::RS256, "r", false);
    rsa_as_es256["alg"] = json!("ES256");
    let short_oct =
        json!({ "kty": "oct", "kid": "h", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(b"short") });
    let cases = [
        ("curve/alg mismatch", p256_as_es384),
        ("type/alg mismatch", rsa_as_es256),
        ("short HMAC secret", short_oct),
        (
            "P-521",
            json!({ "kty": "EC", "crv": "P-521", "kid": "x", "x": "AA", "y": "AA" }),
        ),
        (
            "unsupported alg",
            json!({ "kty": "EC", "crv": "P-256", "alg": "ES256K", "kid": "x", "x": "AA", "y": "AA" }),
        ),
        ("unknown kty", json!({ "kty": "XYZ", "kid": "x" })),
        (
            "bad base64",
            json!({ "kty": "RSA", "alg": "RS256", "kid": "x", "n": "!!", "e": "AQAB" }),
        ),
    ];
    for (what, jwk) in cases {
        let err = KeySet::from_jwks_json(&json!({ "keys": [jwk] }).to_string()).unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidJwk { index: Some(0), .. }),
            "{what}: {err:?}"
        );
    }
    for not_a_set in ["", "[]", "{}", "{\"keys\": 3}", "\u{0}"] {
        let err = KeySet::from_jwks_json(not_a_set).unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidJwk { index: None, .. }),
            "{not_a_set:?}: {err:?}"
        );
    }
}

#[test]
fn expired_tokens_are_rejected_beyond_the_leeway() {
    let v = hs256();
    let token = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "exp", json!(unix_now() - 3600)),
    );
    assert_eq!(rejected(&v, &token), ValidationError::Expired);

    // 10 s late is within the default 30 s leeway, not within 0 s.
    let late = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "exp", json!(unix_now() - 10)),
    );
    v.validate(&late).unwrap();
    let strict = Validator::builder()
        .key(verifying_key(Algorithm::HS256))
        .issuer(ISS)
        .audience(AUD)
        .leeway(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(rejected(&strict, &late), ValidationError::Expired);

    let no_exp = sign(Algorithm::HS256, None, &without(claims(), "exp"));
    assert_eq!(
        rejected(&v, &no_exp),
        ValidationError::MissingClaim { claim: "exp" }
    );
    let string_exp = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "exp", json!("tomorrow")),
    );
    assert!(matches!(
        rejected(&v, &string_exp),
        ValidationError::Malformed { .. }
    ));
    // RFC 7519 allows fractional NumericDates.
    let float_exp = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "exp", json!(unix_now() as f64 + 60.5)),
    );
    assert_eq!(v.validate(&float_exp).unwrap().claims.exp, unix_now() + 60);
}

#[test]
fn tokens_not_yet_valid_are_rejected() {
    let v = hs256();
    let future = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "nbf", json!(unix_now() + 3600)),
    );
    assert_eq!(rejected(&v, &future), ValidationError::NotYetValid);
    let skewed = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "nbf", json!(unix_now() + 10)),
    );
    assert_eq!(
        v.validate(&skewed).unwrap().claims.nbf,
        Some(unix_now() + 10)
    );
    // Issued in the future: it could dodge a rule's "issued before" cut-off.
    let from_the_future = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "iat", json!(unix_now() + 3600)),
    );
    assert_eq!(rejected(&v, &from_the_future), ValidationError::NotYetValid);
    let iat_skewed = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "iat", json!(unix_now() + 10)),
    );
    assert!(v.validate(&iat_skewed).is_ok(), "within the leeway");
}

#[test]
fn bad_signatures_are_rejected() {
    let v = validator(verifying_key(Algorithm::RS256));
    let other = EncodingKey::from_rsa_pem(&fixture("rsa_other_private.pem")).unwrap();
    let forged = sign_with(Algorithm::RS256, None, &claims(), &other);
    assert_eq!(rejected(&v, &forged), ValidationError::BadSignature);

    // A valid signature over other claims.
    let v = hs256();
    let good = sign(Algorithm::HS256, None, &claims());
    let evil = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "sub", json!("root")),
    );
    let (head, _) = good.rsplit_once('.').unwrap();
    let (_, evil_sig) = evil.rsplit_once('.').unwrap();
    assert_eq!(
        rejected(&v, &format!("{head}.{evil_sig}")),
        ValidationError::BadSignature
    );
    // No signature at all.
    assert_eq!(
        rejected(&v, &format!("{head}.")),
        ValidationError::BadSignature
    );
}

#[test]
fn embedded_keys_in_the_header_are_never_used() {
    // The attacker signs with their own key and ships it in `jwk` (and points `jku` / `x5u` at
    // it), under our key's kid.
    let v = validator(verifying_key(Algorithm::ES256).kid("ours"));
    let attacker = EncodingKey::from_rsa_pem(&fixture("rsa_other_private.pem")).unwrap();
    let jwk = Jwk::from_encoding_key(&attacker, Algorithm::RS256).unwrap();
    let token = Signer::new(Algorithm::RS256, attacker)
        .kid("ours")
        .header(|h| {
            h.jwk = Some(jwk);
            h.jku = Some("https://evil.test/jwks.json".into());
            h.x5u = Some("https://evil.test/cert.pem".into());
        })
        .sign(&claims())
        .unwrap();
    let err = rejected(&v, &token);
    assert!(
        matches!(
            err,
            ValidationError::AlgorithmNotAllowed {
                allowed: Algorithm::ES256,
                ..
            }
        ),
        "{err:?}"
    );

    // Same with an RS256 validator: the signature is checked against our key, not theirs.
    let v = validator(verifying_key(Algorithm::RS256).kid("ours"));
    assert_eq!(rejected(&v, &token), ValidationError::BadSignature);
}

#[test]
fn wrong_issuer_is_rejected() {
    let v = hs256();
    let token = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "iss", json!("https://evil.test")),
    );
    assert_eq!(rejected(&v, &token), ValidationError::WrongIssuer);
    let token = sign(Algorithm::HS256, None, &without(claims(), "iss"));
    assert_eq!(
        rejected(&v, &token),
        ValidationError::MissingClaim { claim: "iss" }
    );

    // Several accepted issuers.
    let v = Validator::builder()
        .key(verifying_key(Algorithm::HS256))
        .issuer("https://a.test")
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    v.validate(&sign(Algorithm::HS256, None, &claims()))
        .unwrap();
}

#[test]
fn wrong_audience_is_rejected() {
    let v = hs256();
    let token = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "aud", json!("billing")),
    );
    assert_eq!(rejected(&v, &token), ValidationError::WrongAudience);
    let token = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "aud", json!(["billing", "search"])),
    );
    assert_eq!(rejected(&v, &token), ValidationError::WrongAudience);
    let token = sign(Algorithm::HS256, None, &without(claims(), "aud"));
    assert_eq!(
        rejected(&v, &token),
        ValidationError::MissingClaim { claim: "aud" }
    );

    let token = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "aud", json!(["billing", AUD])),
    );
    let ok = v.validate(&token).unwrap();
    assert_eq!(ok.claims.aud, vec!["billing".to_owned(), AUD.to_owned()]);

    // A validator given no audience cannot be the audience of a token that names one.
    let v = Validator::builder()
        .key(verifying_key(Algorithm::HS256))
        .build()
        .unwrap();
    let token = sign(Algorithm::HS256, None, &claims());
    assert_eq!(rejected(&v, &token), ValidationError::WrongAudience);
    v.validate(&sign(Algorithm::HS256, None, &without(claims(), "aud")))
        .unwrap();
}

#[test]
fn the_algorithm_comes_from_the_key_not_the_token() {
    // Token says RS256 (and is properly RS256-signed); the key is ES256.
    let v = validator(verifying_key(Algorithm::ES256));
    let err = rejected(&v, &sign(Algorithm::RS256, None, &claims()));
    assert!(
        matches!(&err, ValidationError::AlgorithmNotAllowed { alg, allowed: Algorithm::ES256, kid: None } if alg == "RS256"),
        "{err:?}"
    );
    // Same family, other hash.
    let v = validator(verifying_key(Algorithm::RS256));
    let err = rejected(&v, &sign(Algorithm::PS256, None, &claims()));
    assert!(
        matches!(
            err,
            ValidationError::AlgorithmNotAllowed {
                allowed: Algorithm::RS256,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    // The classic confusion: the public key's PEM bytes used as an HMAC secret.
    let public_pem = fixture("rsa_public.pem");
    let forged = sign_with(
        Algorithm::HS256,
        Some("rsa"),
        &claims(),
        &EncodingKey::from_secret(&public_pem),
    );
    let v = validator(verifying_key(Algorithm::RS256).kid("rsa"));
    let err = rejected(&v, &forged);
    assert!(
        matches!(&err, ValidationError::AlgorithmNotAllowed { alg, allowed: Algorithm::RS256, .. } if alg == "HS256"),
        "{err:?}"
    );
    // Also with the DER bytes, and without a kid.
    let der = pem_to_der(&public_pem);
    let forged = sign_with(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(&der),
    );
    let v = validator(verifying_key(Algorithm::RS256));
    assert!(matches!(
        rejected(&v, &forged),
        ValidationError::AlgorithmNotAllowed { .. }
    ));
}

#[test]
fn alg_none_is_rejected() {
    let v = validator(verifying_key(Algorithm::HS256).kid("k"));
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let token = raw_token(
            &json!({ "alg": alg, "kid": "k", "typ": "JWT" }),
            &claims(),
            b"",
        );
        let err = rejected(&v, &token);
        assert!(
            matches!(&err, ValidationError::AlgorithmNotAllowed { alg: a, allowed: Algorithm::HS256, .. } if a == alg),
            "{alg}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("{alg:?}")), "{err}");
    }
    // Without alg at all: malformed header.
    let token = raw_token(&json!({ "kid": "k" }), &claims(), b"");
    assert!(matches!(
        rejected(&v, &token),
        ValidationError::Malformed { .. }
    ));
}

#[test]
fn unknown_and_ambiguous_keys_are_rejected() {
    let v = Validator::builder()
        .key(verifying_key(Algorithm::HS256).kid("a"))
        .key(verifying_key(Algorithm::ES256).kid("b"))
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    let err = rejected(&v, &sign(Algorithm::HS256, Some("c"), &claims()));
    assert_eq!(err, ValidationError::UnknownKey { kid: "c".into() });
    let err = rejected(&v, &sign(Algorithm::HS256, None, &claims()));
    assert_eq!(err, ValidationError::AmbiguousKey { keys: 2 });
    v.validate(&sign(Algorithm::HS256, Some("a"), &claims()))
        .unwrap();
    v.validate(&sign(Algorithm::ES256, Some("b"), &claims()))
        .unwrap();

    // A single key without a kid does not answer to a token naming some kid.
    let v = hs256();
    let err = rejected(&v, &sign(Algorithm::HS256, Some("k9"), &claims()));
    assert_eq!(err, ValidationError::UnknownKey { kid: "k9".into() });
    // Attacker-sized kids are truncated in the error.
    let long = "x".repeat(1000);
    let err = rejected(&v, &sign(Algorithm::HS256, Some(&long), &claims()));
    assert!(
        matches!(&err, ValidationError::UnknownKey { kid } if kid.chars().count() == 65),
        "{err:?}"
    );
}

#[test]
fn missing_jti_is_rejected_unless_allowed() {
    let v = hs256();
    let token = sign(Algorithm::HS256, None, &without(claims(), "jti"));
    assert_eq!(
        rejected(&v, &token),
        ValidationError::MissingClaim { claim: "jti" }
    );
    let empty = sign(Algorithm::HS256, None, &with(claims(), "jti", json!("")));
    assert_eq!(
        rejected(&v, &empty),
        ValidationError::MissingClaim { claim: "jti" }
    );

    let (check, lenient) = with_revocations(Revoker::default(), |b| b.require_jti(false));
    let ok = lenient.validate(&token).unwrap();
    assert_eq!(ok.claims.jti, None);
    // The token is still checked against rules, with an empty jti.
    assert_eq!(check.last().unwrap().jti, "");
}

#[test]
fn oversized_tokens_are_rejected_before_parsing() {
    let v = hs256();
    let big = "a".repeat(DEFAULT_MAX_TOKEN_LEN + 1);
    assert_eq!(
        rejected(&v, &big),
        ValidationError::TooLong {
            len: DEFAULT_MAX_TOKEN_LEN + 1,
            max: DEFAULT_MAX_TOKEN_LEN
        }
    );
    // A genuine token, just over a small limit.
    let token = sign(Algorithm::HS256, None, &claims());
    let small = Validator::builder()
        .key(verifying_key(Algorithm::HS256))
        .issuer(ISS)
        .audience(AUD)
        .max_token_len(token.len() - 1)
        .build()
        .unwrap();
    assert!(matches!(
        rejected(&small, &token),
        ValidationError::TooLong { .. }
    ));
    // A big but allowed token is fine (large custom claims, large header).
    let padded = with(claims(), "pad", json!("p".repeat(5000)));
    let token = signer(Algorithm::HS256)
        .header(|h| h.cty = Some("c".repeat(600)))
        .sign(&padded)
        .unwrap();
    assert!(token.len() < DEFAULT_MAX_TOKEN_LEN);
    v.validate(&token).unwrap();
}

#[test]
fn garbage_is_malformed() {
    let v = hs256();
    let good = sign(Algorithm::HS256, None, &claims());
    let (head, rest) = good.split_once('.').unwrap();
    let payload = rest.split_once('.').unwrap().0;
    let cases = [
        String::new(),
        "abc".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "...".into(),
        "!!!.???.###".into(),
        "Bearer x.y.z".into(),
        "é.é.é".into(),
        format!("{good}.extra"),
        format!("{head}!.{rest}"),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode("[1,2]")),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode("{\"alg\":\"HS256\"")),
        format!(
            "{}.{rest}",
            URL_SAFE_NO_PAD.encode("{\"alg\":\"HS256\",\"alg\":\"none\"}")
        ),
        format!(
            "{}.{rest}",
            URL_SAFE_NO_PAD.encode("{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}")
        ),
        format!("{head}.{}.sig", URL_SAFE_NO_PAD.encode("not json")),
        format!("{head}.{payload}*.sig"),
    ];
    for token in cases {
        let err = rejected(&v, &token);
        // A bad payload behind a bad signature is a bad signature: the signature is checked
        // first, and nothing else is read from an unauthenticated payload.
        assert!(
            matches!(
                err,
                ValidationError::Malformed { .. } | ValidationError::BadSignature
            ),
            "{token:?}: {err:?}"
        );
    }
    // Correctly signed but not a JSON object / wrong claim types: malformed.
    for payload in [
        json!("string"),
        json!([1, 2]),
        json!({ "exp": unix_now() + 60, "sub": 5, "jti": "j" }),
    ] {
        let token = sign(Algorithm::HS256, None, &payload);
        assert!(
            matches!(rejected(&v, &token), ValidationError::Malformed { .. }),
            "{payload}"
        );
    }
}

#[test]
fn random_mutations_never_panic_or_pass() {
    let v = hs256();
    let good = sign(Algorithm::HS256, None, &claims());
    let mut rng = fastrand::Rng::with_seed(7);
    let alphabet = b"ABCxyz019-_.=+/ \x00\xff";
    for _ in 0..20_000 {
        let mut bytes = good.clone().into_bytes();
        for _ in 0..rng.usize(1..4) {
            match rng.u8(0..3) {
                0 => {
                    let i = rng.usize(..bytes.len());
                    bytes[i] = alphabet[rng.usize(..alphabet.len())];
                }
                1 => {
                    let i = rng.usize(..bytes.len());
                    bytes.truncate(i.max(1));
                }
                _ => {
                    let i = rng.usize(..=bytes.len());
                    bytes.insert(i, alphabet[rng.usize(..alphabet.len())]);
                }
            }
        }
        let token = String::from_utf8_lossy(&bytes);
        if token != good {
            // Base64 padding bits can make a mutated signature decode to the same bytes.
            if let Ok(ok) = v.validate(&token) {
                assert_eq!(ok.claims.jti.as_deref(), Some("jti-1"), "{token}");
            }
        }
    }
}

/// An owned copy of what the validator asked the revocation check.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    jti: String,
    sub: Option<String>,
    azp: Option<String>,
    kid: Option<String>,
    iss: Option<String>,
    iat: Option<i64>,
}

/// A revocation check double: revoked jtis, rules, and a staleness mode, like the replica.
#[derive(Default)]
struct Revoker {
    jtis: HashSet<String>,
    rules: Vec<(RuleKind, String, i64)>,
    /// `(staleness, fail_open)`.
    stale: Option<(Duration, bool)>,
    seen: Mutex<Vec<Seen>>,
}

impl Revoker {
    fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }
}

impl RevocationCheck for Revoker {
    fn check(&self, t: &TokenQuery<'_>) -> Verdict {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        self.seen.lock().unwrap().push(Seen {
            jti: t.jti.to_owned(),
            sub: owned(t.sub),
            azp: owned(t.azp),
            kid: owned(t.kid),
            iss: owned(t.iss),
            iat: t.iat,
        });
        let stale = match self.stale {
            Some((staleness, false)) => return Verdict::Stale { staleness },
            Some((staleness, true)) => Some(staleness),
            None => None,
        };
        if self.jtis.contains(t.jti) {
            return Verdict::Revoked(Revocation {
                by: RevokedBy::Jti,
                reason: "leaked".into(),
            });
        }
        for (kind, value, not_before) in &self.rules {
            let claim = match kind {
                RuleKind::Subject => t.sub,
                RuleKind::Client => t.azp,
                RuleKind::Key => t.kid,
                RuleKind::Issuer => t.iss,
            };
            if claim == Some(value) && t.iat.is_none_or(|iat| iat < *not_before) {
                let by = RevokedBy::Rule {
                    kind: *kind,
                    value: value.as_str().into(),
                    not_before: *not_before,
                };
                return Verdict::Revoked(Revocation {
                    by,
                    reason: String::new().into(),
                });
            }
        }
        Verdict::Allowed { stale }
    }
}

fn with_revocations(
    revoker: Revoker,
    configure: impl FnOnce(revokd_client::ValidatorBuilder) -> revokd_client::ValidatorBuilder,
) -> (Arc<Revoker>, Validator) {
    let revoker = Arc::new(revoker);
    let builder = Validator::builder()
        .key(verifying_key(Algorithm::HS256).kid("k1"))
        .issuer(ISS)
        .audience(AUD)
        .revocations(revoker.clone());
    (revoker, configure(builder).build().unwrap())
}

#[test]
fn revoked_by_jti() {
    let (check, v) = with_revocations(
        Revoker {
            jtis: ["jti-1".into()].into(),
            ..Default::default()
        },
        |b| b,
    );
    let err = rejected(&v, &sign(Algorithm::HS256, Some("k1"), &claims()));
    assert_eq!(
        err,
        ValidationError::Revoked(Revocation {
            by: RevokedBy::Jti,
            reason: "leaked".into()
        })
    );
    assert!(err.to_string().contains("by jti: leaked"), "{err}");
    assert_eq!(err.client_description(), "token revoked");

    let ok = v
        .validate(&sign(
            Algorithm::HS256,
            Some("k1"),
            &with(claims(), "jti", json!("jti-2")),
        ))
        .unwrap();
    assert_eq!(ok.stale, None);
    // What the check was asked, from the claims and the verifying key.
    let seen = check.last().unwrap();
    assert_eq!(
        seen,
        Seen {
            jti: "jti-2".into(),
            sub: Some("alice".into()),
            azp: Some("web".into()),
            kid: Some("k1".into()),
            iss: Some(ISS.into()),
            iat: ok.claims.iat,
        }
    );
}

#[test]
fn revoked_by_rule() {
    let cutoff = unix_now() - 100;
    let rules = vec![
        (RuleKind::Subject, "alice".to_owned(), cutoff),
        (RuleKind::Client, "cli".to_owned(), cutoff),
    ];
    let (check, v) = with_revocations(
        Revoker {
            rules,
            ..Default::default()
        },
        |b| b,
    );

    // Issued before the rule: revoked. After: fine.
    let old = sign(
        Algorithm::HS256,
        Some("k1"),
        &with(claims(), "iat", json!(cutoff - 1)),
    );
    let err = rejected(&v, &old);
    assert!(
        matches!(&err, ValidationError::Revoked(Revocation { by: RevokedBy::Rule { kind: RuleKind::Subject, value, not_before }, .. })
            if &**value == "alice" && *not_before == cutoff),
        "{err:?}"
    );
    v.validate(&sign(Algorithm::HS256, Some("k1"), &claims()))
        .unwrap();

    // `client_id` stands in for a missing `azp`.
    let client = without(
        with(
            with(claims(), "sub", json!("bob")),
            "client_id",
            json!("cli"),
        ),
        "azp",
    );
    let err = rejected(
        &v,
        &sign(
            Algorithm::HS256,
            Some("k1"),
            &with(client, "iat", json!(cutoff - 1)),
        ),
    );
    assert!(
        matches!(
            &err,
            ValidationError::Revoked(Revocation {
                by: RevokedBy::Rule {
                    kind: RuleKind::Client,
                    ..
                },
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(check.last().unwrap().azp.as_deref(), Some("cli"));
}

#[test]
fn key_rules_see_the_verifying_keys_kid_even_without_a_kid_header() {
    let rules = vec![(RuleKind::Key, "k1".to_owned(), unix_now() + 100)];
    let (_, v) = with_revocations(
        Revoker {
            rules,
            ..Default::default()
        },
        |b| b,
    );
    let err = rejected(&v, &sign(Algorithm::HS256, None, &claims()));
    assert!(
        matches!(
            &err,
            ValidationError::Revoked(Revocation {
                by: RevokedBy::Rule {
                    kind: RuleKind::Key,
                    ..
                },
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn stale_replica_fail_closed_rejects() {
    let staleness = Duration::from_secs(42);
    let (_, v) = with_revocations(
        Revoker {
            stale: Some((staleness, false)),
            ..Default::default()
        },
        |b| b,
    );
    let err = rejected(&v, &sign(Algorithm::HS256, Some("k1"), &claims()));
    assert_eq!(err, ValidationError::Stale { staleness });
    assert!(err.to_string().contains("42s"), "{err}");
}

#[test]
fn stale_replica_fail_open_accepts_with_the_flag() {
    let staleness = Duration::from_secs(42);
    let (_, v) = with_revocations(
        Revoker {
            stale: Some((staleness, true)),
            ..Default::default()
        },
        |b| b,
    );
    let ok = v
        .validate(&sign(Algorithm::HS256, Some("k1"), &claims()))
        .unwrap();
    assert_eq!(ok.stale, Some(staleness));
    assert!(ok.is_stale());
}

#[test]
fn the_revocation_check_only_sees_verified_tokens() {
    let (check, v) = with_revocations(Revoker::default(), |b| b);
    let expired = sign(
        Algorithm::HS256,
        Some("k1"),
        &with(claims(), "exp", json!(unix_now() - 3600)),
    );
    assert_eq!(rejected(&v, &expired), ValidationError::Expired);
    assert!(rejected(&v, "x.y.z").to_string().contains("malformed"));
    assert!(check.last().is_none());
}

#[test]
fn typed_extra_claims() {
    #[derive(Debug, Deserialize)]
    struct Extra {
        scope: String,
        #[serde(default)]
        roles: Vec<String>,
    }
    let v = hs256();
    let token = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "roles", json!(["admin"])),
    );
    let ok = v.validate_as::<Extra>(&token).unwrap();
    assert_eq!(ok.claims.extra.scope, "orders:read");
    assert_eq!(ok.claims.extra.roles, ["admin"]);
    assert_eq!(ok.claims.sub.as_deref(), Some("alice"));
    // A token missing a field the caller's type requires is malformed for that caller.
    let token = sign(Algorithm::HS256, None, &without(claims(), "scope"));
    assert!(matches!(
        v.validate_as::<Extra>(&token),
        Err(ValidationError::Malformed { .. })
    ));
}

#[test]
fn configuration_errors() {
    let hs = || verifying_key(Algorithm::HS256);
    let err = Validator::builder()
        .key(hs())
        .leeway(Duration::from_secs(301))
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::LeewayTooLarge(Duration::from_secs(301)));
    Validator::builder()
        .key(hs())
        .leeway(Duration::from_secs(300))
        .build()
        .unwrap();
    assert_eq!(
        Validator::builder().build().unwrap_err(),
        ConfigError::NoKeys
    );
    assert_eq!(
        Validator::builder()
            .key(hs())
            .max_token_len(0)
            .build()
            .unwrap_err(),
        ConfigError::ZeroMaxTokenLen
    );
    let err = Validator::builder()
        .key(hs().kid("a"))
        .key(verifying_key(Algorithm::ES256).kid("a"))
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::DuplicateKid("a".into()));
    let err = Validator::builder()
        .key(hs().kid("a"))
        .key(verifying_key(Algorithm::ES256))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::MissingKid {
            keys: 2,
            alg: Algorithm::ES256
        }
    );

    let invalid = |r: Result<Key, ConfigError>, alg: Algorithm| {
        let err = r.unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidKey { alg: a, .. } if *a == alg),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("validator config: "), "{err}");
        err.to_string()
    };
    let msg = invalid(Key::hmac(Algorithm::HS256, [0u8; 31]), Algorithm::HS256);
    assert!(msg.contains("at least 32"), "{msg}");
    invalid(Key::hmac(Algorithm::HS512, [0u8; 63]), Algorithm::HS512);
    invalid(Key::hmac(Algorithm::RS256, SECRET), Algorithm::RS256);
    let msg = invalid(
        Key::from_pem(Algorithm::RS256, fixture("rsa_private.pem")),
        Algorithm::RS256,
    );
    assert!(msg.contains("private key"), "{msg}");
    let msg = invalid(
        Key::from_pem(Algorithm::ES256, fixture("ec384_public.pem")),
        Algorithm::ES256,
    );
    assert!(msg.contains("P-256"), "{msg}");
    invalid(
        Key::from_pem(Algorithm::ES384, fixture("ec256_public.pem")),
        Algorithm::ES384,
    );
    invalid(
        Key::from_pem(Algorithm::ES256, fixture("rsa_public.pem")),
        Algorithm::ES256,
    );
    invalid(
        Key::from_pem(Algorithm::RS256, fixture("ed25519_public.pem")),
        Algorithm::RS256,
    );
    invalid(
        Key::from_pem(Algorithm::EdDSA, fixture("ec256_public.pem")),
        Algorithm::EdDSA,
    );
    invalid(
        Key::from_pem(Algorithm::HS256, fixture("rsa_public.pem")),
        Algorithm::HS256,
    );
    invalid(
        Key::from_pem(Algorithm::RS256, b"garbage"),
        Algorithm::RS256,
    );
    invalid(Key::from_der(Algorithm::HS256, SECRET), Algorithm::HS256);
    invalid(Key::from_der(Algorithm::EdDSA, [0u8; 32]), Algorithm::EdDSA);
}

// ---- PyJWT fixtures -------------------------------------------------------------------------

#[derive(Deserialize)]
struct Manifest {
    generator: String,
    issuer: String,
    audience: String,
    keys: Vec<ManifestKey>,
    tokens: Vec<ManifestToken>,
}

#[derive(Deserialize)]
struct ManifestKey {
    kid: String,
    alg: String,
    pem: Option<String>,
    secret_b64url: Option<String>,
}

#[derive(Deserialize)]
struct ManifestToken {
    name: String,
    token: String,
    expect: String,
}

/// A token whose claims segment is exactly `claims_json` (so keys can repeat), HS256-signed.
fn hs256_with_raw_claims(claims_json: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims_json.as_bytes());
    let message = format!("{header}.{payload}");
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &signing_key(Algorithm::HS256),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{sig}")
}

#[test]
fn duplicated_json_keys_are_rejected() {
    // Two parsers reading different `exp`s is how such tokens slip through: one JSON object,
    // one meaning, or no token.
    let v = hs256();
    let base = format!(
        r#""iss":"{ISS}","aud":"{AUD}","jti":"dup","sub":"alice","iat":{}"#,
        unix_now()
    );
    let single = hs256_with_raw_claims(&format!(r#"{{{base},"exp":{}}}"#, unix_now() + 600));
    v.validate(&single)
        .expect("the same token without duplicates is valid");
    for dup in [
        format!(
            r#"{{{base},"exp":{},"exp":{}}}"#,
            unix_now() - 3600,
            unix_now() + 600
        ),
        format!(
            r#"{{{base},"exp":{},"exp":{}}}"#,
            unix_now() + 600,
            unix_now() - 3600
        ),
        format!(r#"{{{base},"exp":{},"sub":"root"}}"#, unix_now() + 600),
        format!(r#"{{{base},"exp":{},"jti":"other"}}"#, unix_now() + 600),
        format!(
            r#"{{{base},"exp":{},"iss":"https://evil.test"}}"#,
            unix_now() + 600
        ),
    ] {
        let token = hs256_with_raw_claims(&dup);
        let err = rejected(&v, &token);
        assert!(
            matches!(err, ValidationError::Malformed { .. }),
            "{dup}: {err:?}"
        );
    }
    // And in the header: a second `alg` must not pick another key or algorithm.
    let token = raw_token(&json!({}), &claims(), b"x");
    let (_, rest) = token.split_once('.').unwrap();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","alg":"none"}"#);
    let err = rejected(&v, &format!("{header}.{rest}"));
    assert!(matches!(err, ValidationError::Malformed { .. }), "{err:?}");
}

#[test]
fn non_canonical_base64_is_rejected() {
    let v = hs256();
    let good = sign(Algorithm::HS256, None, &claims());
    v.validate(&good).unwrap();
    let (head, sig) = good.rsplit_once('.').unwrap();
    // Padding, the standard alphabet, and whitespace are not base64url without padding.
    let padded = format!("{good}=");
    let standard = format!(
        "{head}.{}",
        STANDARD.encode(URL_SAFE_NO_PAD.decode(sig).unwrap())
    );
    assert_ne!(
        standard, good,
        "the signature has a + or / in the standard alphabet"
    );
    for token in [
        padded,
        format!("{good} "),
        format!(" {good}"),
        format!("{head}.{sig}\n"),
    ] {
        let err = rejected(&v, &token);
        assert!(
            matches!(
                err,
                ValidationError::Malformed { .. } | ValidationError::BadSignature
            ),
            "{token:?}: {err:?}"
        );
    }
    if standard.contains(['+', '/']) {
        let err = rejected(&v, &standard);
        assert!(
            matches!(
                err,
                ValidationError::Malformed { .. } | ValidationError::BadSignature
            ),
            "{err:?}"
        );
    }
    // The same signature bytes, spelled with non-zero trailing bits: a second encoding of one
    // token must not be accepted (tokens are compared and logged as strings).
    let last = sig.chars().last().unwrap();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.iter().position(|&c| c == last as u8).unwrap();
    // HS256 signatures are 32 bytes: 43 characters, the last carrying 2 unused bits.
    assert_eq!(sig.len(), 43);
    let twin = alphabet[(idx & !0b11) | 0b01] as char;
    assert_ne!(
        twin, last,
        "canonical encodings leave the unused bits at zero"
    );
    let malleated = format!("{head}.{}{twin}", &sig[..42]);
    let err = rejected(&v, &malleated);
    assert!(
        matches!(
            err,
            ValidationError::Malformed { .. } | ValidationError::BadSignature
        ),
        "{err:?}"
    );
}

#[test]
fn huge_and_far_future_exp_is_rejected() {
    let v = hs256();
    // A token that outlives what the cluster keeps a jti revocation for (30 days by default).
    let far = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "exp", json!(unix_now() + 31 * 86400)),
    );
    assert_eq!(
        rejected(&v, &far),
        ValidationError::LifetimeTooLong {
            max: revokd_client::validator::DEFAULT_MAX_LIFETIME
        }
    );
    let in_limit = sign(
        Algorithm::HS256,
        None,
        &with(claims(), "exp", json!(unix_now() + 29 * 86400)),
    );
    v.validate(&in_limit).unwrap();
    // Values at and past the edge of i64, and beyond any float range: rejected, never wrapped.
    for exp in [
        json!(i64::MAX),
        json!(u64::MAX),
        json!(1e300),
        json!(9.3e18),
        json!(-1e300),
    ] {
        let token = sign(Algorithm::HS256, None, &with(claims(), "exp", exp.clone()));
        let err = rejected(&v, &token);
        assert!(
            matches!(
                err,
                ValidationError::LifetimeTooLong { .. }
                    | ValidationError::Malformed { .. }
                    | ValidationError::Expired
            ),
            "exp {exp}: {err:?}"
        );
    }
    // Turned off, a far exp is accepted as is.
    let lenient = Validator::builder()
        .key(verifying_key(Algorithm::HS256))
        .issuer(ISS)
        .audience(AUD)
        .max_lifetime(None)
        .build()
        .unwrap();
    assert_eq!(
        lenient.validate(&far).unwrap().claims.exp,
        unix_now() + 31 * 86400
    );
}

#[test]
fn kid_pointing_elsewhere_is_never_followed() {
    let v = Validator::builder()
        .key(verifying_key(Algorithm::HS256).kid("hmac"))
        .key(verifying_key(Algorithm::RS256).kid("rsa"))
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    // Paths, URLs and injection strings are just unknown ids: nothing is read or fetched.
    for kid in [
        "../../../../dev/null",
        "/etc/passwd",
        "https://evil.test/key.pem",
        "' OR '1'='1",
        "hmac\u{0}",
        "HMAC",
    ] {
        let err = rejected(&v, &sign(Algorithm::HS256, Some(kid), &claims()));
        assert!(
            matches!(err, ValidationError::UnknownKey { .. }),
            "{kid:?}: {err:?}"
        );
    }
    // The kid of one key with the algorithm of another: the key decides the algorithm.
    let err = rejected(&v, &sign(Algorithm::RS256, Some("hmac"), &claims()));
    assert!(
        matches!(
            err,
            ValidationError::AlgorithmNotAllowed {
                allowed: Algorithm::HS256,
                ..
            }
        ),
        "{err:?}"
    );
    let public_pem = fixture("rsa_public.pem");
    let forged = sign_with(
        Algorithm::HS256,
        Some("rsa"),
        &claims(),
        &EncodingKey::from_secret(&public_pem),
    );
    assert!(matches!(
        rejected(&v, &forged),
        ValidationError::AlgorithmNotAllowed {
            allowed: Algorithm::RS256,
            ..
        }
    ));
}

#[test]
fn tokens_signed_by_a_rotated_out_key_are_rejected() {
    let old = EncodingKey::from_rsa_pem(&fixture("rsa_other_private.pem")).unwrap();
    let before_rotation = sign_with(Algorithm::RS256, Some("2025"), &claims(), &old);
    // After rotation the validator knows only the new key ("2026").
    let v = Validator::builder()
        .key(verifying_key(Algorithm::RS256).kid("2026"))
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap();
    assert_eq!(
        rejected(&v, &before_rotation),
        ValidationError::UnknownKey { kid: "2025".into() }
    );
    // Relabelled with the new kid, or with none, the old signature does not verify.
    let relabelled = sign_with(Algorithm::RS256, Some("2026"), &claims(), &old);
    assert_eq!(rejected(&v, &relabelled), ValidationError::BadSignature);
    let v = validator(verifying_key(Algorithm::RS256));
    let unlabelled = sign_with(Algorithm::RS256, None, &claims(), &old);
    assert_eq!(rejected(&v, &unlabelled), ValidationError::BadSignature);
    v.validate(&sign(Algorithm::RS256, None, &claims()))
        .unwrap();
}

fn variant(result: &Result<revokd_client::Validated, ValidationError>) -> &'static str {
    match result {
        Ok(_) => "Ok",
        Err(e) => match e {
            ValidationError::TooLong { .. } => "TooLong",
            ValidationError::Malformed { .. } => "Malformed",
            ValidationError::UnknownKey { .. } => "UnknownKey",
            ValidationError::AmbiguousKey { .. } => "AmbiguousKey",
            ValidationError::AlgorithmNotAllowed { .. } => "AlgorithmNotAllowed",
            ValidationError::BadSignature => "BadSignature",
            ValidationError::Expired => "Expired",
            ValidationError::LifetimeTooLong { .. } => "LifetimeTooLong",
            ValidationError::NotYetValid => "NotYetValid",
            ValidationError::WrongIssuer => "WrongIssuer",
            ValidationError::WrongAudience => "WrongAudience",
            ValidationError::MissingClaim { .. } => "MissingClaim",
            ValidationError::Revoked(_) => "Revoked",
            ValidationError::Stale { .. } => "Stale",
            _ => "(unknown variant)",
        },
    }
}

fn pyjwt_dir() -> PathBuf {
    match std::env::var_os("REVOKD_JWT_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pyjwt"),
    }
}

#[test]
fn pyjwt_fixtures() {
    let dir = pyjwt_dir();
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
    };
    let manifest: Manifest = serde_json::from_slice(&read("manifest.json")).unwrap();
    assert!(
        manifest.tokens.len() >= 20,
        "manifest has only {} tokens",
        manifest.tokens.len()
    );

    let configure = |keys: Vec<Key>| {
        Validator::builder()
            .keys(keys)
            .issuer(&manifest.issuer)
            .audience(&manifest.audience)
            // The committed fixtures must stay valid for decades (exp is in 2100), beyond any
            // lifetime limit; this test is about interoperability, the limit is tested above.
            .max_lifetime(None)
            .build()
            .unwrap()
    };
    let from_jwks = configure(
        KeySet::from_jwks_json(std::str::from_utf8(&read("jwks.json")).unwrap())
            .unwrap()
            .into_iter()
            .collect(),
    );
    let from_files = configure(
        manifest
            .keys
            .iter()
            .map(|k| {
                let alg: Algorithm = k.alg.parse().unwrap();
                let key = match (&k.pem, &k.secret_b64url) {
                    (Some(pem), _) => Key::from_pem(alg, read(pem)).unwrap(),
                    (None, Some(secret)) => {
                        Key::hmac(alg, URL_SAFE_NO_PAD.decode(secret).unwrap()).unwrap()
                    }
                    (None, None) => panic!("key {} has no material", k.kid),
                };
                key.kid(k.kid.as_str())
            })
            .collect(),
    );

    let mut algorithms_ok = HashSet::new();
    for t in &manifest.tokens {
        for (how, v) in [("jwks.json", &from_jwks), ("PEM files", &from_files)] {
            let result = v.validate(&t.token);
            assert_eq!(
                variant(&result),
                t.expect,
                "{} ({}, keys from {how}): {result:?}",
                t.name,
                manifest.generator
            );
            if let Ok(ok) = result {
                algorithms_ok.insert(ok.alg);
            }
        }
    }
    assert_eq!(
        algorithms_ok,
        ALL.into_iter().collect(),
        "every algorithm has a valid PyJWT token"
    );
}
