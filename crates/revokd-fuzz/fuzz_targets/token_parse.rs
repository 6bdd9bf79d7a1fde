//! JWT parsing: any string given to the validator is rejected with a typed error (none of
//! these inputs carries a valid signature), never a panic or a hang.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use revokd_client::{Algorithm, Key, Validator};

fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| {
        Validator::builder()
            .key(
                Key::hmac(
                    Algorithm::HS256,
                    b"fuzzing-secret-fuzzing-secret-fuzzing-secret!!",
                )
                .expect("a valid secret")
                .kid("k1"),
            )
            .key(
                Key::from_pem(
                    Algorithm::ES256,
                    include_bytes!("../../revokd-client/tests/fixtures/keys/ec256_public.pem"),
                )
                .expect("a valid key")
                .kid("k2"),
            )
            .issuer("https://auth.test")
            .audience("api")
            .build()
            .expect("a valid validator")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let r = validator().validate(token);
        assert!(r.is_err(), "a random token was accepted: {token:?}");
        let e = r.unwrap_err();
        assert!(!e.client_description().is_empty());
    }
});
