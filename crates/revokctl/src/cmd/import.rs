//! `import`: revoke token ids (and re-create rules) from an NDJSON or CSV file of any size.
//!
//! Lines are checked locally, sent in batches (each one atomic log entry), and the number of
//! the last line whose batch was acknowledged is kept in `FILE.revokctl-progress` so that
//! `--resume` continues after an interruption. The progress file is created with mode 0600,
//! never through a symlink, and records the input's size and SHA-256: `--resume` refuses a
//! progress file written for another input, or for this one before it changed. Malformed lines are reported with their line
//! number and skipped; the rest land. If the cluster refuses a whole batch (one entry beyond
//! its limits), the batch is retried one id at a time so only the bad lines are rejected.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use indicatif::{ProgressBar, ProgressStyle};
use revokd_client::{Revoke, RuleKind, WriteOutcome, WriteResult, MAX_BATCH, MAX_JTI_LEN};
use serde_json::Value;

use super::Ctx;
use crate::cli::ImportArgs;
use crate::error::{CliError, EXIT_OK, EXIT_REJECTED};
use crate::output::Record;
use crate::time::parse_time;

/// One line's meaning.
enum Item {
    Token(Revoke),
    Rule {
        kind: RuleKind,
        value: String,
        not_before: i64,
        reason: String,
    },
}

#[derive(Default)]
struct Tally {
    lines: u64,
    applied: u64,
    already_present: u64,
    already_expired: u64,
    rules: u64,
    rejected: Vec<(u64, String)>,
}

impl Tally {
    fn count(&mut self, w: &WriteResult) {
        match w.outcome {
            WriteOutcome::Applied => self.applied += 1,
            WriteOutcome::AlreadyPresent => self.already_present += 1,
            WriteOutcome::AlreadyExpired => self.already_expired += 1,
            WriteOutcome::NotFound => {}
        }
    }
}

fn progress_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".revokctl-progress");
    PathBuf::from(p)
}

/// What a progress file records: which input (by size and SHA-256) and how far.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Progress {
    input_size: u64,
    input_sha256: String,
    /// The last line whose batch was acknowledged.
    line: u64,
}

/// The input's size, SHA-256 (hex) and number of lines, in one pass.
fn fingerprint(file: &Path) -> Result<(u64, String, u64), CliError> {
    let mut f = File::open(file)
        .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", file.display())))?;
    let (mut hash, mut size, mut lines) = (Sha256::new(), 0u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    let mut last = b'\n';
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    if last != b'\n' {
        lines += 1;
    }
    let hex = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, hex, lines))
}

/// Opens `path` without following a symlink (`O_NOFOLLOW`): a link planted at the progress
/// file's name would otherwise redirect the write to any file the user can write.
fn open_no_follow(path: &Path, write: bool) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    if write {
        o.write(true).create(true).truncate(true).mode(0o600);
    } else {
        o.read(true);
    }
    o.custom_flags(libc::O_NOFOLLOW).open(path)
}

fn symlink_refused(path: &Path, e: std::io::Error) -> CliError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        CliError::Usage(format!(
            "progress file {} is a symlink; refusing to follow it (remove it)",
            path.display()
        ))
    } else {
        CliError::Usage(format!("progress file {}: {e}", path.display()))
    }
}

/// Records that `p.line` is done.
fn write_progress(path: &Path, p: &Progress) -> Result<(), CliError> {
    let mut f = open_no_follow(path, true).map_err(|e| symlink_refused(path, e))?;
    f.write_all(serde_json::to_string(p).unwrap_or_default().as_bytes())?;
    Ok(())
}

/// Where to resume: the line a progress file for exactly this input recorded; 0 without a
/// progress file.
fn read_progress(path: &Path, size: u64, sha256: &str) -> Result<u64, CliError> {
    let mut f = match open_no_follow(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(symlink_refused(path, e)),
    };
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let p: Progress = serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "progress file {} is not one revokctl wrote ({e}); remove it or import without --resume",
            path.display()
        ))
    })?;
    if p.input_size != size || p.input_sha256 != sha256 {
        return Err(CliError::Usage(format!(
            "progress file {} was written for another input ({} bytes, SHA-256 {}), not this \
             one ({size} bytes, SHA-256 {sha256}): the file changed since, so its line count \
             means nothing now; remove the progress file or import without --resume",
            path.display(),
            p.input_size,
            p.input_sha256
        )));
    }
    Ok(p.line)
}

fn time_field(v: Option<&Value>, name: &str) -> Result<i64, String> {
    match v {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("{name}: not a whole number of seconds")),
        Some(Value::String(s)) => parse_time(s).map_err(|e| format!("{name}: {e}")),
        Some(_) => Err(format!("{name}: expected a time")),
        None => Err(format!("missing {name}")),
    }
}

fn text_field(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn token(jti: &str, expires_at: i64, reason: String, subject: String) -> Result<Item, String> {
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(format!(
            "jti must be 1-{MAX_JTI_LEN} bytes, got {}",
            jti.len()
        ));
    }
    Ok(Item::Token(Revoke {
        jti: jti.to_owned(),
        expires_at,
        reason,
        subject,
    }))
}

fn parse_ndjson(line: &str) -> Result<Item, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    if obj.get("type").and_then(Value::as_str) == Some("rule") {
        let kind = match obj.get("kind").and_then(Value::as_str) {
            Some("sub") => RuleKind::Subject,
            Some("client") => RuleKind::Client,
            Some("kid") => RuleKind::Key,
            Some("iss") => RuleKind::Issuer,
            other => {
                return Err(format!(
                    "rule kind {other:?} is not sub, client, kid or iss"
                ))
            }
        };
        let value = text_field(obj.get("value"));
        if value.is_empty() {
            return Err("rule value is empty".into());
        }
        return Ok(Item::Rule {
            kind,
            value,
            not_before: time_field(obj.get("not_before"), "not_before")?,
            reason: text_field(obj.get("reason")),
        });
    }
    let jti = obj
        .get("jti")
        .and_then(Value::as_str)
        .ok_or("missing jti")?;
    token(
        jti,
        time_field(obj.get("expires_at"), "expires_at")?,
        text_field(obj.get("reason")),
        text_field(obj.get("subject")),
    )
}

/// Reads the file's items with their line numbers, after `skip` lines.
fn read_items(
    path: &Path,
    csv: bool,
    skip: u64,
    mut each: impl FnMut(u64, Result<Item, String>) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let file = File::open(path)
        .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", path.display())))?;
    if csv {
        let mut r = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(BufReader::new(file));
        let headers = r
            .headers()
            .map_err(|e| CliError::Rejected(format!("CSV header: {e}")))?
            .clone();
        let col = |name: &str| headers.iter().position(|h| h == name);
        let (Some(jti), Some(exp)) = (col("jti"), col("expires_at")) else {
            return Err(CliError::Rejected(
                "the CSV header must name the columns jti and expires_at (reason and subject are optional)".into(),
            ));
        };
        let (reason, subject) = (col("reason"), col("subject"));
        for rec in r.records() {
            let (line, item) = match rec {
                Ok(rec) => {
                    let line = rec.position().map(|p| p.line()).unwrap_or(0);
                    let get =
                        |i: Option<usize>| i.and_then(|i| rec.get(i)).unwrap_or("").to_owned();
                    let item = parse_time(&get(Some(exp)))
                        .map_err(|e| format!("expires_at: {e}"))
                        .and_then(|t| token(&get(Some(jti)), t, get(reason), get(subject)));
                    (line, item)
                }
                Err(e) => (
                    e.position().map(|p| p.line()).unwrap_or(0),
                    Err(format!("CSV: {e}")),
                ),
            };
            if line > skip {
                each(line, item)?;
            }
        }
    } else {
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let n = i as u64 + 1;
            let line = line?;
            if n <= skip || line.trim().is_empty() {
                continue;
            }
            each(n, parse_ndjson(&line))?;
        }
    }
    Ok(())
}

/// Sends one batch; on a whole-batch rejection, one id at a time.
async fn send(
    ctx: &Ctx,
    batch: &mut Vec<(u64, Revoke)>,
    tally: &mut Tally,
) -> Result<(), CliError> {
    if batch.is_empty() {
        return Ok(());
    }
    let tokens: Vec<Revoke> = batch.iter().map(|(_, t)| t.clone()).collect();
    match ctx.client.revoke_many(&tokens).await {
        Ok(results) => results.iter().for_each(|w| tally.count(w)),
        Err(revokd_client::Error::Rejected { .. }) => {
            for (line, t) in batch.iter() {
                match ctx.client.revoke(t.clone()).await {
                    Ok(w) => tally.count(&w),
                    Err(revokd_client::Error::Rejected { message, .. }) => {
                        tally.rejected.push((*line, message))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(e) => return Err(e.into()),
    }
    batch.clear();
    Ok(())
}

/// Imports the file and prints a summary (and the rejected lines).
pub async fn run(ctx: &Ctx, a: &ImportArgs) -> Result<i32, CliError> {
    if a.batch == 0 || a.batch > MAX_BATCH {
        return Err(CliError::Usage(format!("--batch must be 1-{MAX_BATCH}")));
    }
    let csv = is_csv(a);
    let progress_file = progress_path(&a.file);
    let (input_size, input_sha256, total) = fingerprint(&a.file)?;
    let skip: u64 = if a.resume {
        read_progress(&progress_file, input_size, &input_sha256)?
    } else {
        0
    };
    let progress = |line: u64| Progress {
        input_size,
        input_sha256: input_sha256.clone(),
        line,
    };
    let bar = progress_bar(total, skip);
    let started = Instant::now();

    let mut tally = Tally::default();
    let mut batch: Vec<(u64, Revoke)> = Vec::with_capacity(a.batch);
    let mut last_line = skip;
    let mut read_err = None;
    let path = a.file.clone();
    // A blocking reader parses; this task sends, in the file's order. The channel bounds
    // memory for files of millions of lines.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Result<Item, String>)>(a.batch * 2);
    let reader = tokio::task::spawn_blocking(move || {
        read_items(&path, csv, skip, |n, item| {
            tx.blocking_send((n, item))
                .map_err(|_| CliError::Other("import stopped".into()))
        })
    });
    while let Some((line, item)) = rx.recv().await {
        tally.lines += 1;
        take(ctx, line, item, &mut batch, &mut tally).await?;
        last_line = line;
        if batch.len() >= a.batch {
            send(ctx, &mut batch, &mut tally).await?;
            write_progress(&progress_file, &progress(last_line))?;
            bar.set_position(last_line);
        }
    }
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => read_err = Some(e),
        Err(e) => read_err = Some(CliError::Other(format!("reader: {e}"))),
    }
    send(ctx, &mut batch, &mut tally).await?;
    if let Some(e) = read_err {
        // What was read landed and is recorded; the rest can be resumed.
        write_progress(&progress_file, &progress(last_line))?;
        return Err(e);
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&progress_file);
    Ok(summary(
        ctx,
        a,
        &tally,
        skip,
        started.elapsed().as_secs_f64(),
    ))
}

/// Whether the input is CSV: `--format`, else the extension.
fn is_csv(a: &ImportArgs) -> bool {
    match a.format.as_deref() {
        Some(f) => f == "csv",
        None => a
            .file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv")),
    }
}

/// The progress bar over the input's lines, starting where the import resumes.
fn progress_bar(total: u64, skip: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} lines  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(skip);
    bar
}

/// Takes one line: a token joins the batch; a rule is sent at once, after the batch so far.
async fn take(
    ctx: &Ctx,
    line: u64,
    item: Result<Item, String>,
    batch: &mut Vec<(u64, Revoke)>,
    tally: &mut Tally,
) -> Result<(), CliError> {
    match item {
        Err(why) => tally.rejected.push((line, why)),
        Ok(Item::Token(t)) => batch.push((line, t)),
        Ok(Item::Rule {
            kind,
            value,
            not_before,
            reason,
        }) => {
            // Keep the file's order: what came before the rule goes first.
            send(ctx, batch, tally).await?;
            match ctx
                .client
                .revoke_rule(kind, &value, Some(not_before), &reason)
                .await
            {
                Ok(_) => tally.rules += 1,
                Err(revokd_client::Error::Rejected { message, .. }) => {
                    tally.rejected.push((line, message))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Prints the rejected lines and the summary; the exit code says whether any was rejected.
fn summary(ctx: &Ctx, a: &ImportArgs, tally: &Tally, skip: u64, secs: f64) -> i32 {
    let records: Vec<Record> = tally
        .rejected
        .iter()
        .map(|(line, why)| {
            Record::new()
                .field("line", *line)
                .field("error", why.clone())
        })
        .collect();
    if !records.is_empty() {
        ctx.printer.print(&records);
    }
    ctx.printer.print(&[Record::new()
        .field("file", a.file.display().to_string())
        .field("lines", tally.lines)
        .field("applied", tally.applied)
        .field("already_present", tally.already_present)
        .field("already_expired", tally.already_expired)
        .field("rules", tally.rules)
        .field("rejected", tally.rejected.len())
        .field("resumed_after_line", skip)
        .field("seconds", (secs * 100.0).round() / 100.0)
        .field(
            "lines_per_second",
            (tally.lines as f64 / secs.max(1e-9)).round(),
        )]);
    if tally.rejected.is_empty() {
        EXIT_OK
    } else {
        EXIT_REJECTED
    }
}
