//! Property tests of request validation: every field limit the node enforces on revokes,
//! rules and queries, against an independent model, for strings and numbers at and beyond
//! the edges (empty, at the limit, one byte over, multi-byte characters, control characters,
//! extreme timestamps).

use proptest::prelude::*;
use revokd_core::{
    validate_jti, validate_jti_query, validate_text, InvalidInput, RuleKind, RuleSpec, TokenSpec,
    MAX_JTI_LEN, MAX_TEXT_LEN,
};

/// Strings built to straddle a byte limit: mostly printable, sometimes multi-byte, sometimes
/// with a control character.
fn text_around(limit: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => "[a-z0-9._:-]{1,8}",
        2 => "[é€😀]{1,2}",
        1 => Just("\t".to_owned()),
        1 => prop::sample::select(vec!["\n", "\r", "\u{0}", "\u{7f}", "\u{85}", "\u{1b}"])
            .prop_map(str::to_owned),
    ];
    (0..limit + 16, prop::collection::vec(piece, 0..4)).prop_map(|(len, extra)| {
        let mut s = "a".repeat(len.saturating_sub(8));
        for p in extra {
            s.push_str(&p);
        }
        s
    })
}

fn model_text(s: &str) -> bool {
    s.len() <= MAX_TEXT_LEN && !s.chars().any(|c| c.is_control() && c != '\t')
}

fn model_jti(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_JTI_LEN
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0i64),
        -10_000_000_000i64..10_000_000_000,
        any::<i64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn jti_limits(jti in text_around(MAX_JTI_LEN)) {
        prop_assert_eq!(validate_jti(&jti).is_ok(), model_jti(&jti), "{:?}", jti);
        // A query may leave the jti empty only when it names a claim.
        prop_assert_eq!(validate_jti_query(&jti, false).is_ok(), model_jti(&jti));
        prop_assert_eq!(validate_jti_query(&jti, true).is_ok(), jti.is_empty() || model_jti(&jti));
    }

    #[test]
    fn text_limits(s in text_around(MAX_TEXT_LEN)) {
        let r = validate_text("reason", &s);
        prop_assert_eq!(r.is_ok(), model_text(&s), "{:?}", s);
        if let Err(e) = r {
            // The error names the field.
            prop_assert!(e.to_string().contains("reason"), "{}", e);
        }
    }

    #[test]
    fn revoke_requests(
        jti in text_around(MAX_JTI_LEN),
        reason in text_around(MAX_TEXT_LEN),
        subject in text_around(MAX_TEXT_LEN),
        expires_at in timestamp(),
        now in timestamp(),
        max_lifetime in 1i64..100_000_000,
    ) {
        let spec = TokenSpec { jti, expires_at, reason, subject };
        let want = model_jti(&spec.jti)
            && model_text(&spec.reason)
            && model_text(&spec.subject)
            && expires_at <= now.saturating_add(max_lifetime);
        let got = spec.validate(now, max_lifetime);
        prop_assert_eq!(got.is_ok(), want, "{:?} at now={}: {:?}", spec, now, got);
        if let Err(InvalidInput::TooFarInFuture { value, limit, .. }) = got {
            prop_assert_eq!(value, expires_at);
            prop_assert!(value > limit);
        }
    }

    #[test]
    fn rule_requests(
        kind in prop::sample::select(RuleKind::ALL.to_vec()),
        value in text_around(MAX_TEXT_LEN),
        reason in text_around(MAX_TEXT_LEN),
        not_before in timestamp(),
        now in timestamp(),
        max_lifetime in 1i64..100_000_000,
    ) {
        let want = !value.is_empty()
            && model_text(&value)
            && model_text(&reason)
            && not_before <= now.saturating_add(max_lifetime);
        let got = RuleSpec::new(kind, value.clone(), not_before, reason, now, max_lifetime);
        prop_assert_eq!(got.is_ok(), want, "{:?}", got);
        if let Ok(rule) = got {
            prop_assert_eq!(rule.value, value);
            // Kept for a lifetime after its cut-off, without overflowing.
            prop_assert_eq!(rule.drop_at, not_before.saturating_add(max_lifetime));
            prop_assert!(rule.drop_at >= rule.not_before);
        }
    }
}
