//! One module per subcommand; [`run`] connects (when the command needs the cluster) and
//! dispatches.

pub mod bench;
pub mod docs;
pub mod export;
pub mod import;
pub mod member;
pub mod revoke;
pub mod rules;
pub mod status;
pub mod watch;

use revokd_client::{Client, ClientConfig, RuleKind, WriteOutcome, WriteResult};

use crate::cli::{Cli, Command, RuleTarget};
use crate::error::{CliError, EXIT_OK};
use crate::output::{Printer, Record};

/// Everything a command needs.
pub struct Ctx {
    /// The connection.
    pub client: Client,
    /// Where results go.
    pub printer: Printer,
    /// The global flags.
    pub cli: Cli,
}

/// The TLS settings from `--tls-ca` (and `--tls-cert`/`--tls-key`), if given.
pub fn tls(cli: &Cli) -> Result<Option<revokd_client::ClientTls>, CliError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))
    };
    let Some(ca) = &cli.tls_ca else {
        if cli.tls_cert.is_some() {
            return Err(CliError::Usage("--tls-cert needs --tls-ca".into()));
        }
        return Ok(None);
    };
    let mut tls = revokd_client::ClientTls::new(read(ca)?);
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        tls.identity = Some((read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

/// The bearer token: `--token` (or `REVOKD_TOKEN`), or the contents of `--token-file`.
fn token(cli: &Cli) -> Result<Option<String>, CliError> {
    let Some(path) = &cli.token_file else {
        return Ok(cli.token.clone());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("--token-file {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError::Usage(format!(
            "--token-file {} is empty",
            path.display()
        )));
    }
    Ok(Some(token.to_owned()))
}

/// Runs the command; returns the exit code on success paths that still report something
/// (an import with rejected lines).
pub async fn run(cli: Cli) -> Result<i32, CliError> {
    match &cli.command {
        Command::Completions { shell } => return docs::completions(*shell),
        Command::Man => return docs::man(),
        _ => {}
    }
    let mut config = ClientConfig::new(cli.endpoints.iter().cloned());
    config.timeout = cli.timeout;
    config.actor = cli.actor.clone();
    config.bearer_token = token(&cli)?;
    config.allow_plaintext_token = cli.allow_plaintext_token;
    config.tls = tls(&cli)?;
    let client = Client::connect(config).await?;
    let ctx = Ctx {
        client,
        printer: Printer::new(cli.output),
        cli,
    };
    match &ctx.cli.command {
        Command::Revoke(a) => revoke::revoke(&ctx, a).await,
        Command::Unrevoke { jti } => revoke::unrevoke(&ctx, jti).await,
        Command::Check(a) => revoke::check(&ctx, a).await,
        Command::RevokeRule(a) => rules::revoke_rule(&ctx, a).await,
        Command::Rules => rules::list(&ctx).await,
        Command::RemoveRule(t) => rules::remove(&ctx, t).await,
        Command::Import(a) => import::run(&ctx, a).await,
        Command::Export(a) => export::run(&ctx, a).await,
        Command::Watch(a) => watch::run(&ctx, a).await,
        Command::Status => status::status(&ctx).await,
        Command::Snapshot => status::snapshot(&ctx).await,
        Command::Member(m) => member::run(&ctx, m).await,
        Command::Bench(a) => bench::run(&ctx, a).await,
        Command::Completions { .. } | Command::Man => Ok(EXIT_OK),
    }
}

/// The claim kind and value a rule flag names.
pub fn rule_target(t: &RuleTarget) -> (RuleKind, String) {
    match (&t.sub, &t.client, &t.kid, &t.iss) {
        (Some(v), ..) => (RuleKind::Subject, v.clone()),
        (_, Some(v), ..) => (RuleKind::Client, v.clone()),
        (_, _, Some(v), _) => (RuleKind::Key, v.clone()),
        (_, _, _, Some(v)) => (RuleKind::Issuer, v.clone()),
        // clap's group makes exactly one required.
        _ => (RuleKind::Subject, String::new()),
    }
}

/// The outcome's name in output.
pub fn outcome_name(o: WriteOutcome) -> &'static str {
    match o {
        WriteOutcome::Applied => "applied",
        WriteOutcome::AlreadyPresent => "already_present",
        WriteOutcome::AlreadyExpired => "already_expired",
        WriteOutcome::NotFound => "not_found",
    }
}

/// A write's result as a record, after `what` identifies the target.
pub fn write_record(what: (&'static str, String), w: &WriteResult) -> Record {
    Record::new()
        .field(what.0, what.1)
        .field("outcome", outcome_name(w.outcome))
        .field("revision", w.revision)
        .field("committed_revision", w.committed_revision)
        .field("leader", w.leader_id)
}

/// A rule kind's name in output (the flag that selects it).
pub fn kind_name(k: RuleKind) -> &'static str {
    match k {
        RuleKind::Subject => "sub",
        RuleKind::Client => "client",
        RuleKind::Key => "kid",
        RuleKind::Issuer => "iss",
    }
}
