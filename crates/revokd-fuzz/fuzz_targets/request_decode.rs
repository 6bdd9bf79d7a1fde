//! gRPC request decoding and validation: any bytes, as the body of any public write or read
//! request, decode to an error or to a message whose fields the node's validation accepts or
//! refuses with a reason. Never a panic, whatever the lengths and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use revokd_core::{validate_jti_query, validate_text, RuleKind, RuleSpec, TokenSpec};
use revokd_proto::v1 as pb;

const NOW: i64 = 1_800_000_000;
const MAX_LIFETIME: i64 = 30 * 24 * 3600;

fn token(t: &pb::RevokedTokenSpec) {
    let spec = TokenSpec {
        jti: t.jti.clone(),
        expires_at: t.expires_at,
        reason: t.reason.clone(),
        subject: t.subject.clone(),
    };
    if spec.validate(NOW, MAX_LIFETIME).is_ok() {
        assert!(!spec.jti.is_empty() && spec.jti.len() <= revokd_core::MAX_JTI_LEN);
        assert!(spec.expires_at <= NOW + MAX_LIFETIME);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            if let Ok(r) = pb::RevokeRequest::decode(body) {
                if let Some(t) = &r.token {
                    token(t);
                }
            }
        }
        1 => {
            if let Ok(r) = pb::RevokeBatchRequest::decode(body) {
                r.tokens.iter().take(revokd_core::MAX_BATCH).for_each(token);
            }
        }
        2 => {
            if let Ok(r) = pb::RevokeRuleRequest::decode(body) {
                let kind = RuleKind::ALL
                    .get((r.kind.unsigned_abs() as usize) % 4)
                    .copied();
                if let Some(kind) = kind {
                    if let Ok(rule) =
                        RuleSpec::new(kind, r.value, r.not_before, r.reason, NOW, MAX_LIFETIME)
                    {
                        assert!(!rule.value.is_empty());
                        assert!(rule.drop_at >= rule.not_before);
                    }
                }
            }
        }
        3 => {
            if let Ok(r) = pb::CheckRequest::decode(body) {
                if let Some(q) = &r.token {
                    let has_claims = !q.sub.is_empty()
                        || !q.azp.is_empty()
                        || !q.kid.is_empty()
                        || !q.iss.is_empty();
                    let _ = validate_jti_query(&q.jti, has_claims);
                }
            }
        }
        4 => {
            if let Ok(r) = pb::UnrevokeRequest::decode(body) {
                let _ = revokd_core::validate_jti(&r.jti);
            }
        }
        _ => {
            if let Ok(r) = pb::HeartbeatRequest::decode(body) {
                let _ = validate_text("description", &r.description);
            }
        }
    }
});
