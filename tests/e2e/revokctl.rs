//! `revokctl` against a real cluster: every subcommand in both output formats, every documented
//! exit code, an import of 100,000 lines with malformed ones reported and skipped (and resumed),
//! and short bounded bench runs.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use revokd_e2e::{missing_on, now};
use revokd_proto::v1 as pb;
use revokd_testkit::{revokctl_bin, ProcessCluster};
use serde_json::Value;

/// Runs revokctl against `endpoints`; returns (exit code, stdout, stderr).
fn ctl(endpoints: &[String], args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(revokctl_bin()?)
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(args)
        .env_remove("REVOKD_ENDPOINTS")
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The progress file revokctl would write after `line` of the input at `path`.
fn progress_json(path: &std::path::Path, line: u64) -> Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path)?;
    let hash: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(
        serde_json::json!({"input_size": bytes.len(), "input_sha256": hash, "line": line})
            .to_string(),
    )
}

/// Runs revokctl with `-o json` and parses each output line.
fn ctl_json(endpoints: &[String], args: &[&str]) -> Result<(i32, Vec<Value>)> {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = ctl(endpoints, &all)?;
    let rows = out
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l:?} (stderr {err})")))
        .collect::<Result<Vec<Value>>>()?;
    Ok((code, rows))
}

#[tokio::test]
async fn every_subcommand_in_both_formats_with_documented_exit_codes() -> Result<()> {
    let mut cluster = ProcessCluster::start(3).await?;
    cluster.wait_leader(Duration::from_secs(15)).await?;
    let ep = cluster.endpoints();

    // revoke: table, then JSON (idempotent retry).
    let (code, out, _) = ctl(
        &ep,
        &["revoke", "t-1", "--expires-at", "+1h", "--reason", "stolen"],
    )?;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("JTI") && out.contains("applied"), "{out}");
    let (code, rows) = ctl_json(&ep, &["revoke", "t-1", "--expires-at", "+1h"])?;
    assert_eq!(code, 0);
    assert_eq!(rows[0]["outcome"], "already_present");
    assert_eq!(rows[0]["jti"], "t-1");
    let exp = (now() + 600).to_string();
    let (code, rows) = ctl_json(
        &ep,
        &["revoke", "t-2", "--expires-at", &exp, "--subject", "bob"],
    )?;
    assert_eq!((code, rows[0]["outcome"].as_str()), (0, Some("applied")));

    // check, local and linearizable.
    let (_, rows) = ctl_json(&ep, &["check", "t-1", "--linearizable"])?;
    assert_eq!(rows[0]["revoked"], true);
    assert_eq!(rows[0]["reason"], "stolen");
    let (_, rows) = ctl_json(&ep, &["check", "never"])?;
    assert_eq!(rows[0]["revoked"], false);
    let (code, out, _) = ctl(&ep, &["check", "t-1"])?;
    assert!(code == 0 && out.contains("true"), "{out}");

    // Rules: add, list, remove.
    let (code, rows) = ctl_json(
        &ep,
        &["revoke-rule", "--sub", "alice", "--reason", "logout"],
    )?;
    assert_eq!((code, rows[0]["rule"].as_str()), (0, Some("sub=alice")));
    ctl_json(
        &ep,
        &[
            "revoke-rule",
            "--kid",
            "k-2024",
            "--before",
            "2026-01-01T00:00:00Z",
        ],
    )?;
    let (_, rows) = ctl_json(&ep, &["rules"])?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .any(|r| r["kind"] == "kid" && r["not_before"] == "2026-01-01T00:00:00Z"));
    let (_, out, _) = ctl(&ep, &["rules"])?;
    assert!(out.starts_with("KIND") && out.contains("alice"), "{out}");
    let (_, rows) = ctl_json(&ep, &["remove-rule", "--kid", "k-2024"])?;
    assert_eq!(rows[0]["outcome"], "applied");

    // unrevoke.
    let (_, rows) = ctl_json(&ep, &["unrevoke", "t-2"])?;
    assert_eq!(rows[0]["outcome"], "applied");
    let (_, rows) = ctl_json(&ep, &["unrevoke", "t-2"])?;
    assert_eq!(rows[0]["outcome"], "not_found");

    // status, member list, snapshot.
    let (code, rows) = ctl_json(&ep, &["status"])?;
    assert_eq!(code, 0);
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows.iter().filter(|r| r["role"] == "leader").count(),
        1,
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r["health"] == "ok"));
    let (_, out, _) = ctl(&ep, &["status"])?;
    assert!(
        out.starts_with("ID") && out.contains("APPLIED_REVISION"),
        "{out}"
    );
    let (_, rows) = ctl_json(&ep, &["member", "list"])?;
    assert_eq!(
        rows.iter().filter(|r| r["membership"] == "voter").count(),
        3
    );
    let (code, rows) = ctl_json(&ep, &["snapshot"])?;
    assert_eq!(code, 0);
    assert!(
        rows.iter()
            .all(|r| r["snapshot_revision"].as_u64() > Some(0)),
        "{rows:?}"
    );

    // export: NDJSON of ids and rules.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("export.ndjson");
    let (code, _, err) = ctl(
        &ep,
        &["export", "--file", file.to_str().unwrap_or_default()],
    )?;
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&file)?;
    assert!(text.lines().any(|l| l.contains("\"jti\":\"t-1\"")));
    assert!(text
        .lines()
        .any(|l| l.contains("\"type\":\"rule\"") && l.contains("alice")));

    // watch: starts from now, stops after --limit revisions.
    let endpoints = ep.clone();
    let watcher =
        tokio::task::spawn_blocking(move || ctl_json(&endpoints, &["watch", "--limit", "2"]));
    tokio::time::sleep(Duration::from_millis(700)).await;
    ctl(&ep, &["revoke", "w-1", "--expires-at", "+1h"])?;
    ctl(&ep, &["unrevoke", "w-1"])?;
    let (code, rows) = tokio::time::timeout(Duration::from_secs(15), watcher).await???;
    assert_eq!(code, 0);
    let changes: Vec<&str> = rows.iter().filter_map(|r| r["change"].as_str()).collect();
    assert_eq!(changes, ["revoked", "unrevoked"], "{rows:?}");

    // completions and man need no cluster.
    let (code, out, _) = ctl(&ep, &["completions", "bash"])?;
    assert!(code == 0 && out.contains("revokctl"), "{out}");
    let (code, out, _) = ctl(&ep, &["man"])?;
    assert!(code == 0 && out.contains(".TH revokctl"));

    // Membership: a fourth node as a learner, promoted, then removed again.
    let addr = cluster.start_joiner(4)?;
    let (code, rows) = ctl_json(&ep, &["member", "add-learner", "4", &addr])?;
    assert_eq!(code, 0, "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r["id"] == 4 && r["membership"] == "learner"),
        "{rows:?}"
    );
    let (code, rows) = ctl_json(&ep, &["member", "promote", "4"])?;
    assert_eq!(code, 0, "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r["id"] == 4 && r["membership"] == "voter"),
        "{rows:?}"
    );
    let (code, rows) = ctl_json(&ep, &["member", "remove", "4"])?;
    assert_eq!(code, 0, "{rows:?}");
    assert_eq!(
        rows.iter().filter(|r| r["membership"] == "voter").count(),
        3,
        "{rows:?}"
    );
    let (code, _, err) = ctl(&ep, &["member", "promote", "9"])?;
    assert_eq!(code, 2, "unknown node: {err}");

    // Exit codes: other 1, usage 2, unavailable 3, rejected 4.
    let (code, _, err) = ctl(&ep, &["export", "--file", "/nonexistent-dir/export.ndjson"])?;
    assert_eq!(code, 1, "a local I/O error: {err}");
    let (code, _, err) = ctl(&ep, &["revoke", "x", "--expires-at", "tomorrow"])?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--expires-at"), "{err}");
    let (code, _, _) = ctl(&ep, &["revoke", "x"])?;
    assert_eq!(code, 2, "missing --expires-at is a usage error");
    let (code, _, _) = ctl(&ep, &["revoke-rule", "--sub", "a", "--iss", "b"])?;
    assert_eq!(code, 2, "two rule targets");
    let (code, _, err) = ctl(&["127.0.0.1:1".to_string()], &["--timeout", "1s", "status"])?;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("endpoints"), "says what to do: {err}");
    let (code, _, err) = ctl(&ep, &["revoke", "", "--expires-at", "+1h"])?;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("jti"), "{err}");
    let (code, _, err) = ctl(&ep, &["revoke", "far", "--expires-at", "+3650d"])?;
    assert_eq!(code, 4, "beyond the maximum token lifetime: {err}");
    Ok(())
}

#[tokio::test]
async fn import_of_100k_lines_skips_malformed_ones_and_resumes() -> Result<()> {
    let cluster = ProcessCluster::start(3).await?;
    cluster.wait_leader(Duration::from_secs(15)).await?;
    let ep = cluster.endpoints();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ids.ndjson");
    let bad_lines = [11u64, 4_242, 50_000, 99_999];
    let mut good = Vec::new();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let exp = now() + 3600;
        for n in 1..=100_000u64 {
            match n {
                11 => writeln!(f, "{{\"jti\": \"broken")?,
                4_242 => writeln!(f, "{{\"jti\": \"\", \"expires_at\": {exp}}}")?,
                50_000 => writeln!(f, "{{\"jti\": \"no-exp\"}}")?,
                99_999 => writeln!(f, "{{\"jti\": \"bad-time\", \"expires_at\": \"someday\"}}")?,
                _ => {
                    let jti = format!("imp-{n}");
                    writeln!(
                        f,
                        "{{\"jti\":\"{jti}\",\"expires_at\":{exp},\"reason\":\"bulk\"}}"
                    )?;
                    good.push(jti);
                }
            }
        }
    }
    let file = path.to_str().context("utf-8 path")?;
    let (code, rows) = ctl_json(&ep, &["import", file])?;
    assert_eq!(code, 4, "rejected lines give exit code 4");
    let rejected: Vec<u64> = rows
        .iter()
        .filter_map(|r| r.get("line").and_then(Value::as_u64))
        .collect();
    assert_eq!(rejected, bad_lines, "{rows:?}");
    let summary = rows.last().context("summary")?;
    assert_eq!(summary["lines"], 100_000);
    assert_eq!(summary["applied"], 99_996);
    assert_eq!(summary["rejected"], 4);
    // Everything else landed, on every node.
    for id in 1..=3 {
        let missing =
            missing_on(&cluster.addr(id)?, &good, pb::Consistency::Linearizable, 0).await?;
        ensure!(missing.is_empty(), "node {id} lacks {} ids", missing.len());
    }
    assert!(
        !std::path::Path::new(&format!("{file}.revokctl-progress")).exists(),
        "a finished import leaves no progress file"
    );

    // Resume: as if an earlier run had stopped after line 60,000.
    std::fs::write(
        format!("{file}.revokctl-progress"),
        progress_json(&path, 60_000)?,
    )?;
    let (code, rows) = ctl_json(&ep, &["import", file, "--resume"])?;
    assert_eq!(code, 4);
    let summary = rows.last().context("summary")?;
    assert_eq!(summary["resumed_after_line"], 60_000);
    assert_eq!(summary["lines"], 40_000);
    assert_eq!(summary["already_present"], 39_999);
    assert_eq!(
        summary["rejected"], 1,
        "only line 99,999 is after the resume point"
    );

    // CSV with a header.
    let csv = dir.path().join("ids.csv");
    std::fs::write(
        &csv,
        "jti,expires_at,reason\ncsv-1,+1h,a\ncsv-2,never,b\ncsv-3,+2h,c\n",
    )?;
    let (code, rows) = ctl_json(&ep, &["import", csv.to_str().context("utf-8")?])?;
    assert_eq!(code, 4);
    assert_eq!(rows[0]["line"], 3);
    assert_eq!(rows.last().context("summary")?["applied"], 2);
    Ok(())
}

#[tokio::test]
async fn bench_runs_are_bounded_and_report_percentiles() -> Result<()> {
    let cluster = ProcessCluster::start(3).await?;
    cluster.wait_leader(Duration::from_secs(15)).await?;
    let ep = cluster.endpoints();
    for (mode, extra) in [
        ("revoke", vec!["--count", "200"]),
        ("check", vec!["--count", "200", "--linearizable"]),
        ("cache", vec!["--count", "100000"]),
        ("mixed", vec!["--count", "300"]),
        ("propagation", vec!["--count", "20", "--replicas", "2"]),
    ] {
        let mut args = vec![
            "bench",
            mode,
            "--concurrency",
            "4",
            "--preload",
            "100",
            "--duration",
            "60s",
        ];
        args.extend(extra);
        let started = std::time::Instant::now();
        let (code, rows) = ctl_json(&ep, &args)?;
        assert_eq!(code, 0, "{mode}: {rows:?}");
        let row = &rows[0];
        assert_eq!(row["errors"], 0, "{mode}: {rows:?}");
        assert!(row["ops"].as_u64() > Some(0), "{mode}: {row}");
        for p in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
            assert!(
                row[p].as_f64().is_some_and(|v| v > 0.0),
                "{mode} {p}: {row}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{mode} stopped by its count"
        );
    }
    // A duration bound with no count.
    let (code, rows) = ctl_json(
        &ep,
        &["bench", "revoke", "--duration", "1s", "--rate", "100"],
    )?;
    assert_eq!(code, 0);
    let ops = rows[0]["ops"].as_u64().unwrap_or(0);
    assert!(
        (50..=110).contains(&ops),
        "--rate 100 for 1 s gave {ops} ops"
    );
    Ok(())
}

#[tokio::test]
async fn the_import_progress_file_is_private_and_tied_to_its_input() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let cluster = ProcessCluster::start(1).await?;
    cluster.wait_leader(Duration::from_secs(15)).await?;
    let ep = cluster.endpoints();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ids.ndjson");
    let exp = now() + 3600;
    let good: String = (1..=3)
        .map(|i| format!("{{\"jti\":\"p-{i}\",\"expires_at\":{exp}}}\n"))
        .collect();
    // Three good lines, then one that is not UTF-8: the import stops there, and keeps its
    // progress for --resume.
    let mut bytes = good.clone().into_bytes();
    bytes.extend_from_slice(b"\xff\xfe\n");
    std::fs::write(&path, &bytes)?;
    let file = path.to_str().context("utf-8 path")?;
    let progress = dir.path().join("ids.ndjson.revokctl-progress");
    let (code, _, err) = ctl(&ep, &["import", file, "--batch", "1"])?;
    ensure!(code != 0, "an unreadable line fails the import: {err}");
    let mode = std::fs::metadata(&progress)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "progress file mode {mode:o}");
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(&progress)?)?;
    ensure!(recorded["line"] == 3, "{recorded}");
    ensure!(recorded["input_size"] == bytes.len(), "{recorded}");

    // The input changed: its old progress means nothing now, and --resume says so.
    std::fs::write(
        &path,
        format!("{good}{{\"jti\":\"p-4\",\"expires_at\":{exp}}}\n"),
    )?;
    let (code, _, err) = ctl(&ep, &["import", file, "--resume"])?;
    ensure!(code == 2, "exit code {code}: {err}");
    ensure!(err.contains("written for another input"), "{err}");

    // A symlink at the progress file's name is never followed, to read or to write.
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep me")?;
    std::fs::remove_file(&progress)?;
    std::os::unix::fs::symlink(&target, &progress)?;
    let (code, _, err) = ctl(&ep, &["import", file, "--resume"])?;
    ensure!(code == 2 && err.contains("is a symlink"), "{code}: {err}");
    let (code, _, err) = ctl(&ep, &["import", file, "--batch", "1"])?;
    ensure!(code != 0 && err.contains("is a symlink"), "{code}: {err}");
    ensure!(std::fs::read_to_string(&target)? == "keep me");
    Ok(())
}
