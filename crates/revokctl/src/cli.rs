//! The command line: global flags and one subcommand per admin task.
//!
//! Every clap definition lives here, so `cmd` depends on `cli` and never the other way round.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other failure (local I/O, unexpected answer)
  2  usage error (bad flags or arguments)
  3  cluster unavailable (no node answered within --timeout)
  4  rejected input (the cluster refused it, or import skipped malformed lines)

JSON output (--output json) prints one object per result line; field names are the column
names of the table output in lower case and are stable.";

/// Administer a revokd cluster: revoke JWTs, manage rules, import and export, follow changes,
/// inspect and change membership, and generate load.
#[derive(Debug, Parser)]
#[command(name = "revokctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Nodes to talk to (host:port, comma-separated); the rest are learned from them.
    #[arg(
        long,
        global = true,
        env = "REVOKD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub endpoints: Vec<String>,
    /// Deadline of each call, retries included (e.g. 5s, 500ms).
    #[arg(long, global = true, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    pub output: Format,
    /// Who the writes are recorded as (`revoked_by`).
    #[arg(long, global = true, env = "REVOKD_ACTOR", default_value = "revokctl")]
    pub actor: String,
    /// Bearer JWT for a cluster started with --auth-key (writes need its admin scope; with
    /// auth on, writes are recorded as the token's `sub`, not --actor). Visible to other
    /// users in `ps`: prefer --token-file or REVOKD_TOKEN.
    #[arg(long, global = true, env = "REVOKD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the bearer JWT from this file (surrounding whitespace ignored).
    #[arg(
        long,
        global = true,
        env = "REVOKD_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<std::path::PathBuf>,
    /// Send the token over plaintext to a non-loopback address (anyone on the path could
    /// read and reuse it): only on a network you trust.
    #[arg(long, global = true)]
    pub allow_plaintext_token: bool,
    /// The cluster CA's PEM certificate: talk TLS to nodes started with --tls-cert.
    #[arg(long, global = true, env = "REVOKD_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// A PEM client certificate to present over TLS (with --tls-key).
    #[arg(long, global = true, env = "REVOKCTL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM key of --tls-cert.
    #[arg(long, global = true, env = "REVOKCTL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Revoke a token id until it would have expired anyway.
    Revoke(RevokeArgs),
    /// Revoke every token of a subject, client, key or issuer issued before a time.
    RevokeRule(RevokeRuleArgs),
    /// List the rules.
    Rules,
    /// Remove a rule.
    RemoveRule(RuleTarget),
    /// Remove a token id from the revocation set.
    Unrevoke {
        /// The token's `jti`.
        jti: String,
    },
    /// Ask the cluster whether a token id is revoked.
    Check(CheckArgs),
    /// Revoke token ids from an NDJSON or CSV file, in batches, resumably.
    Import(ImportArgs),
    /// Write the whole revocation set (ids and rules) as NDJSON.
    Export(ExportArgs),
    /// Stream changes as they are applied.
    Watch(WatchArgs),
    /// Every node's view: role, term, revisions, lag, health.
    Status,
    /// Membership: list, add a learner, promote it to voter, remove a node.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Build a snapshot on every node now (compacting their logs).
    Snapshot,
    /// Generate load and report throughput and latency percentiles.
    Bench(BenchArgs),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// `revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's `jti`.
    pub jti: String,
    /// When the token expires: RFC 3339, unix seconds, or +duration (e.g. +1h).
    #[arg(long)]
    pub expires_at: String,
    /// Why (kept with the entry).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// The token's subject, for audit.
    #[arg(long, default_value = "")]
    pub subject: String,
}

/// Which rule: exactly one of the claim flags.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RuleTarget {
    /// The `sub` claim ("log out everywhere").
    #[arg(long)]
    pub sub: Option<String>,
    /// The `azp` / `client_id` claim.
    #[arg(long)]
    pub client: Option<String>,
    /// The signing key's `kid`.
    #[arg(long)]
    pub kid: Option<String>,
    /// The `iss` claim.
    #[arg(long)]
    pub iss: Option<String>,
}

/// `revoke-rule`.
#[derive(Debug, Args)]
pub struct RevokeRuleArgs {
    /// Which claim and value.
    #[command(flatten)]
    pub target: RuleTarget,
    /// Tokens issued before this are revoked: RFC 3339, unix seconds, or +duration. Default:
    /// now.
    #[arg(long)]
    pub before: Option<String>,
    /// Why.
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The token's `jti`.
    pub jti: String,
    /// Reflect every write acknowledged before the call (Raft read index).
    #[arg(long)]
    pub linearizable: bool,
}

/// `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file: NDJSON (`{"jti":..,"expires_at":..,"reason":..,"subject":..}` per line) or CSV
    /// with a header row `jti,expires_at[,reason][,subject]`. `expires_at` takes the same forms
    /// as `revoke --expires-at`.
    pub file: PathBuf,
    /// The format; by default from the extension (.csv is CSV, anything else NDJSON).
    #[arg(long, value_parser = ["ndjson", "csv"])]
    pub format: Option<String>,
    /// Lines per batch (one atomic log entry each), at most 10,000.
    #[arg(long, default_value_t = 5_000)]
    pub batch: usize,
    /// Continue from where an earlier run stopped (its progress is kept in
    /// FILE.revokctl-progress, mode 0600, with the input's size and SHA-256: a progress file
    /// of another input, or of this one changed since, is refused).
    #[arg(long)]
    pub resume: bool,
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write here instead of standard output.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Stream changes after this revision (default: from now on).
    #[arg(long)]
    pub from_revision: Option<u64>,
    /// Stop after this many revisions with changes.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// `member`.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List voters and learners.
    List,
    /// Add a node as a learner (it receives the log but does not vote) and wait until it has
    /// caught up.
    AddLearner {
        /// The new node's id.
        id: u64,
        /// Its gRPC address (host:port).
        address: String,
    },
    /// Make a learner a voter.
    Promote {
        /// The node's id.
        id: u64,
    },
    /// Remove a node from the voters and learners.
    Remove {
        /// The node's id.
        id: u64,
    },
}

/// `bench`: what to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Durable revokes through the leader.
    Revoke,
    /// Remote `Check` calls (LOCAL, or LINEARIZABLE with --linearizable).
    Check,
    /// `is_revoked` on a local replica (no network).
    Cache,
    /// Revoke acknowledged -> visible in --replicas replicas.
    Propagation,
    /// --read-ratio LOCAL checks per revoke.
    Mixed,
}

/// `bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub mode: Mode,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Operations per second across all workers; 0 means as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Stop after this many operations.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// `check`: LINEARIZABLE instead of LOCAL.
    #[arg(long)]
    pub linearizable: bool,
    /// `propagation`: replicas to start in this process.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// `mixed`: reads per write.
    #[arg(long, default_value_t = 9)]
    pub read_ratio: u32,
    /// Token ids revoked before `check`, `cache` and `mixed` start, for reads to find.
    #[arg(long, default_value_t = 1_000)]
    pub preload: usize,
}
