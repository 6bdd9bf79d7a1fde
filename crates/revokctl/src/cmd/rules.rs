//! `revoke-rule`, `rules` and `remove-rule`.

use revokd_client::pb;

use super::{kind_name, rule_target, write_record, Ctx};
use crate::cli::{RevokeRuleArgs, RuleTarget};
use crate::error::{CliError, EXIT_OK};
use crate::output::Record;
use crate::time::{format_time, parse_time};

/// `revoke-rule --sub|--client|--kid|--iss <value> [--before <time>]`.
pub async fn revoke_rule(ctx: &Ctx, a: &RevokeRuleArgs) -> Result<i32, CliError> {
    let (kind, value) = rule_target(&a.target);
    let before = a
        .before
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--before {e}")))?;
    let w = ctx
        .client
        .revoke_rule(kind, &value, before, &a.reason)
        .await?;
    ctx.printer.print(&[write_record(
        ("rule", format!("{}={value}", kind_name(kind))),
        &w,
    )]);
    Ok(EXIT_OK)
}

/// `remove-rule --sub|--client|--kid|--iss <value>`.
pub async fn remove(ctx: &Ctx, t: &RuleTarget) -> Result<i32, CliError> {
    let (kind, value) = rule_target(t);
    let w = ctx.client.remove_rule(kind, &value).await?;
    ctx.printer.print(&[write_record(
        ("rule", format!("{}={value}", kind_name(kind))),
        &w,
    )]);
    Ok(EXIT_OK)
}

/// The name of a wire rule kind in output.
pub fn pb_kind_name(k: i32) -> &'static str {
    match pb::RuleKind::try_from(k) {
        Ok(pb::RuleKind::Subject) => "sub",
        Ok(pb::RuleKind::Client) => "client",
        Ok(pb::RuleKind::Key) => "kid",
        Ok(pb::RuleKind::Issuer) => "iss",
        _ => "unknown",
    }
}

/// A rule as a record.
pub fn rule_record(r: &pb::Rule) -> Record {
    Record::new()
        .field("kind", pb_kind_name(r.kind))
        .field("value", r.value.clone())
        .field("not_before", format_time(r.not_before))
        .field("drop_at", format_time(r.drop_at))
        .field("reason", r.reason.clone())
        .field("revoked_by", r.revoked_by.clone())
        .field("revision", r.revision)
}

/// `rules`: every rule, from a snapshot.
pub async fn list(ctx: &Ctx) -> Result<i32, CliError> {
    let mut stream = ctx.client.snapshot(0, 0).await?;
    let mut records = Vec::new();
    while let Some(chunk) = stream.message().await? {
        records.extend(chunk.rules.iter().map(rule_record));
        if chunk.last {
            break;
        }
    }
    ctx.printer.print(&records);
    Ok(EXIT_OK)
}
