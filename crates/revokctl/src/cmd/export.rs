//! `export`: the whole revocation set as NDJSON, in the format `import` reads (token lines, and
//! rule lines marked `"type":"rule"`), so an export can be imported into another cluster.

use std::io::Write;

use serde_json::json;

use super::rules::pb_kind_name;
use super::Ctx;
use crate::cli::ExportArgs;
use crate::error::{CliError, EXIT_OK};

/// Streams a snapshot to the file or standard output.
pub async fn run(ctx: &Ctx, a: &ExportArgs) -> Result<i32, CliError> {
    let mut out: Box<dyn Write> = match &a.file {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut stream = ctx.client.snapshot(10_000, 0).await?;
    let (mut tokens, mut rules, mut revision) = (0u64, 0u64, 0u64);
    while let Some(chunk) = stream.message().await? {
        revision = chunk.revision;
        for t in &chunk.tokens {
            let line = json!({
                "jti": t.jti,
                "expires_at": t.expires_at,
                "reason": t.reason,
                "subject": t.subject,
                "revoked_by": t.revoked_by,
                "revision": t.revision,
            });
            writeln!(out, "{line}")?;
            tokens += 1;
        }
        for r in &chunk.rules {
            let line = json!({
                "type": "rule",
                "kind": pb_kind_name(r.kind),
                "value": r.value,
                "not_before": r.not_before,
                "drop_at": r.drop_at,
                "reason": r.reason,
                "revoked_by": r.revoked_by,
                "revision": r.revision,
            });
            writeln!(out, "{line}")?;
            rules += 1;
        }
        if chunk.last {
            break;
        }
    }
    out.flush()?;
    eprintln!("revokctl: exported {tokens} token ids and {rules} rules at revision {revision}");
    Ok(EXIT_OK)
}
