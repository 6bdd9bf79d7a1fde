//! `status` (a table of every node) and `snapshot` (build one on every node).

use super::Ctx;
use crate::error::{CliError, EXIT_OK, EXIT_UNAVAILABLE};
use crate::output::Record;

/// One row per known node: id, address, role, term, applied revision, lag behind the highest
/// commit revision any node reports, and health. Exits 3 when no node answers.
pub async fn status(ctx: &Ctx) -> Result<i32, CliError> {
    let all = ctx.client.statuses().await;
    let commit = all
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok().map(|s| s.commit_revision))
        .max()
        .unwrap_or(0);
    let mut records = Vec::new();
    for (addr, s) in &all {
        records.push(match s {
            Ok(s) => Record::new()
                .field("id", s.id)
                .field("address", addr.clone())
                .field("role", s.role.as_str())
                .field("term", s.term)
                .field("leader", s.leader_id)
                .field("applied_revision", s.applied_revision)
                .field("lag", commit.saturating_sub(s.applied_revision))
                .field("tokens", s.revoked_tokens)
                .field("replicas", s.replicas.len())
                .field("health", "ok"),
            Err(e) => Record::new()
                .field("id", serde_json::Value::Null)
                .field("address", addr.clone())
                .field("role", serde_json::Value::Null)
                .field("term", serde_json::Value::Null)
                .field("leader", serde_json::Value::Null)
                .field("applied_revision", serde_json::Value::Null)
                .field("lag", serde_json::Value::Null)
                .field("tokens", serde_json::Value::Null)
                .field("replicas", serde_json::Value::Null)
                .field("health", format!("unreachable: {e}")),
        });
    }
    ctx.printer.print(&records);
    if all.iter().all(|(_, s)| s.is_err()) {
        eprintln!("revokctl: no node answered");
        return Ok(EXIT_UNAVAILABLE);
    }
    Ok(EXIT_OK)
}

/// Builds a snapshot on every node.
pub async fn snapshot(ctx: &Ctx) -> Result<i32, CliError> {
    let all = ctx.client.trigger_snapshots().await;
    let records: Vec<Record> = all
        .iter()
        .map(|(addr, r)| match r {
            Ok(rev) => Record::new()
                .field("address", addr.clone())
                .field("snapshot_revision", *rev)
                .field("error", ""),
            Err(e) => Record::new()
                .field("address", addr.clone())
                .field("snapshot_revision", serde_json::Value::Null)
                .field("error", e.to_string()),
        })
        .collect();
    ctx.printer.print(&records);
    if all.iter().any(|(_, r)| r.is_err()) {
        return Ok(EXIT_UNAVAILABLE);
    }
    Ok(EXIT_OK)
}
