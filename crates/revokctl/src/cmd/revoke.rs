//! `revoke`, `unrevoke` and `check`.

use revokd_client::{Consistency, Matched, Revoke, TokenQuery};

use super::{write_record, Ctx};
use crate::cli::{CheckArgs, RevokeArgs};
use crate::error::{CliError, EXIT_OK};
use crate::output::Record;
use crate::time::{format_time, parse_time};

/// `revoke <jti> --expires-at ...`.
pub async fn revoke(ctx: &Ctx, a: &RevokeArgs) -> Result<i32, CliError> {
    let expires_at =
        parse_time(&a.expires_at).map_err(|e| CliError::Usage(format!("--expires-at {e}")))?;
    let w = ctx
        .client
        .revoke(
            Revoke::new(&a.jti, expires_at)
                .reason(&a.reason)
                .subject(&a.subject),
        )
        .await?;
    ctx.printer
        .print(&[write_record(("jti", a.jti.clone()), &w)]);
    Ok(EXIT_OK)
}

/// `unrevoke <jti>`.
pub async fn unrevoke(ctx: &Ctx, jti: &str) -> Result<i32, CliError> {
    let w = ctx.client.unrevoke(jti).await?;
    ctx.printer
        .print(&[write_record(("jti", jti.to_owned()), &w)]);
    Ok(EXIT_OK)
}

/// `check <jti> [--linearizable]`.
pub async fn check(ctx: &Ctx, a: &CheckArgs) -> Result<i32, CliError> {
    let consistency = if a.linearizable {
        Consistency::Linearizable
    } else {
        Consistency::Local
    };
    let r = ctx
        .client
        .check(
            &TokenQuery {
                jti: &a.jti,
                ..Default::default()
            },
            consistency,
        )
        .await?;
    let (reason, until, by) = match &r.matched {
        Some(Matched::Token(t)) => (
            t.reason.clone(),
            format_time(t.expires_at),
            t.revoked_by.clone(),
        ),
        Some(Matched::Rule(rule)) => (
            rule.reason.clone(),
            format_time(rule.drop_at),
            rule.revoked_by.clone(),
        ),
        None => (String::new(), "-".into(), String::new()),
    };
    ctx.printer.print(&[Record::new()
        .field("jti", a.jti.clone())
        .field("revoked", r.is_revoked())
        .field("reason", reason)
        .field("until", until)
        .field("revoked_by", by)
        .field("revision", r.revision)]);
    Ok(EXIT_OK)
}
