//! `watch`: every change as it is applied, one line per event. A broken stream is resumed from
//! the last revision seen, on any node.

use revokd_client::pb::{self, event::Change};

use super::rules::pb_kind_name;
use super::Ctx;
use crate::cli::WatchArgs;
use crate::error::{CliError, EXIT_OK};
use crate::output::Record;
use crate::time::format_time;

fn records(resp: &pb::WatchResponse) -> Vec<Record> {
    let rec = |change: &str, target: String, detail: String| {
        Record::new()
            .field("revision", resp.revision)
            .field("change", change.to_owned())
            .field("target", target)
            .field("detail", detail)
    };
    resp.events
        .iter()
        .filter_map(|e| e.change.as_ref())
        .map(|c| match c {
            Change::Revoked(t) => rec(
                "revoked",
                t.jti.clone(),
                format!(
                    "until {} by {}: {}",
                    format_time(t.expires_at),
                    t.revoked_by,
                    t.reason
                ),
            ),
            Change::Unrevoked(u) => rec("unrevoked", u.jti.clone(), String::new()),
            Change::RuleAdded(r) => rec(
                "rule_added",
                format!("{}={}", pb_kind_name(r.kind), r.value),
                format!(
                    "issued before {} by {}: {}",
                    format_time(r.not_before),
                    r.revoked_by,
                    r.reason
                ),
            ),
            Change::RuleRemoved(r) => rec(
                "rule_removed",
                format!("{}={}", pb_kind_name(r.kind), r.value),
                String::new(),
            ),
            Change::Purged(p) => rec(
                "purged",
                format!("{} ids, {} rules", p.jtis.len(), p.rules.len()),
                format!("expired as of {}", format_time(p.now)),
            ),
        })
        .collect()
}

/// Streams changes until interrupted or `--limit` revisions were printed.
pub async fn run(ctx: &Ctx, a: &WatchArgs) -> Result<i32, CliError> {
    let mut last = match a.from_revision {
        Some(r) => r,
        None => ctx.client.status().await?.applied_revision,
    };
    let mut printed = 0u64;
    loop {
        let mut stream = ctx.client.watch(last).await?;
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    last = last.max(resp.revision);
                    if resp.events.is_empty() {
                        continue;
                    }
                    for r in records(&resp) {
                        ctx.printer.stream(&r);
                    }
                    printed += 1;
                    if a.limit.is_some_and(|l| printed >= l) {
                        return Ok(EXIT_OK);
                    }
                }
                Ok(None) => break,
                Err(s) if s.code() == tonic::Code::OutOfRange => {
                    return Err(CliError::Rejected(format!(
                        "{}; use `revokctl export` for the current state, then watch from its revision",
                        s.message()
                    )));
                }
                Err(s) => {
                    eprintln!(
                        "revokctl: watch interrupted ({}); resuming after revision {last}",
                        s.message()
                    );
                    break;
                }
            }
        }
    }
}
