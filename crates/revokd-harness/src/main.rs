//! `revokd-harness`: bring a topology up (`up`/`down`), or run a chaos scenario (`chaos`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use revokd_harness::cluster::{self, Deployment, UpState};
use revokd_harness::faults::{default_topology, schedule, SCENARIOS};
use revokd_harness::options::RunOptions;
use revokd_harness::run::run;
use revokd_harness::topology::{Topology, BUILTIN};

/// Multi-region chaos harness for revokd.
#[derive(Parser)]
#[command(name = "revokd-harness", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where nodes run.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    /// Local `revokd` processes behind the harness's link proxies (no root, no containers).
    Process,
    /// Containers of `--image` on a Docker network made for the run (docker kill, pause,
    /// network disconnect); links still go through the harness's proxies.
    Docker,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring a topology up and keep it up (links included) until interrupted or `down`.
    Up {
        /// A topology name (see `list`) or a TOML file.
        topology: String,
        /// Data, logs and the state file `down` reads.
        #[arg(long, default_value = ".harness")]
        dir: PathBuf,
        /// Seeds the links' jitter.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Run the nodes with TLS (a development CA under DIR/data/certs).
        #[arg(long)]
        tls: bool,
    },
    /// Stop what `up` started (by the PIDs it recorded).
    Down {
        /// The directory given to `up`.
        #[arg(long, default_value = ".harness")]
        dir: PathBuf,
    },
    /// Run a scenario (see `list`): faults while a recorded workload runs, then the
    /// invariants. Exit status 0 when every invariant held, 1 when one broke.
    Chaos {
        /// The scenario.
        scenario: String,
        /// The topology (name or file). [default: the scenario's own]
        #[arg(long)]
        topology: Option<String>,
        /// Seeds the random schedule, the links' jitter and the checkers.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Total fault time of `random` (for example `2m`).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Revokes per second per writer.
        #[arg(long, default_value_t = 50.0)]
        write_rate: f64,
        /// Linearizable checks per second per checker.
        #[arg(long, default_value_t = 20.0)]
        check_rate: f64,
        /// Where report.json, report.md, timeline.svg (and data after a failure) go.
        /// [default: target/chaos/<scenario>-<seed>]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Keep node data and logs after a passing run.
        #[arg(long)]
        keep_data: bool,
        /// Where nodes run.
        #[arg(long, value_enum, default_value = "process")]
        backend: Backend,
        /// The node image for `--backend docker` (scripts/docker-image.sh builds it).
        #[arg(long, default_value = "revokd:local")]
        image: String,
        /// Run the nodes with TLS (a development CA made for the run) and every client over it.
        #[arg(long)]
        tls: bool,
    },
    /// List the scenarios and topologies.
    List,
    /// Print one Markdown table row per run from the `report.json` of each directory given.
    Summary {
        /// Output directories of `chaos` runs.
        dirs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HARNESS_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("revokd-harness: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("revokd-harness: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs one subcommand: one arm each, so its length grows with the CLI, not with logic.
async fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Up {
            topology,
            dir,
            seed,
            tls,
        } => up(&topology, &dir, seed, tls).await,
        Cmd::Down { dir } => down(&dir),
        Cmd::Summary { dirs } => {
            print!("{}", summary(&dirs)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::List => {
            println!("scenarios (default topology):");
            for (name, topo, what) in SCENARIOS {
                println!("  {name:<18} {topo:<30} {what}");
            }
            println!("topologies (deploy/topologies/*.toml, also built in):");
            for (name, _) in BUILTIN {
                let t = Topology::load(name)?;
                let regions: Vec<String> = t
                    .regions
                    .iter()
                    .map(|r| format!("{} {}v+{}l", r.name, r.voters, r.learners))
                    .collect();
                println!("  {name:<30} {}", regions.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Chaos {
            scenario,
            topology,
            seed,
            duration,
            write_rate,
            check_rate,
            out,
            keep_data,
            backend,
            image,
            tls,
        } => {
            let topo_name = match topology {
                Some(t) => t,
                None => default_topology(&scenario)
                    .with_context(|| format!("unknown scenario {scenario:?}; see `list`"))?
                    .to_owned(),
            };
            let topology = Topology::load(&topo_name)?;
            let schedule = schedule(&scenario, &topology, seed, duration)?;
            let out_dir =
                out.unwrap_or_else(|| PathBuf::from(format!("target/chaos/{scenario}-{seed}")));
            let report = run(RunOptions {
                topology,
                schedule,
                seed,
                write_rate,
                check_rate,
                out_dir: out_dir.clone(),
                keep_data,
                backend: match backend {
                    Backend::Process => cluster::Backend::Process,
                    Backend::Docker => cluster::Backend::Docker { image },
                },
                tls,
            })
            .await?;
            println!("\n{}", report.markdown());
            println!(
                "report: {}/report.md, report.json, timeline.svg",
                out_dir.display()
            );
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn up(topology: &str, dir: &Path, seed: u64, tls: bool) -> Result<ExitCode> {
    let state = dir.join("harness.json");
    if state.exists() {
        bail!(
            "{} exists: a topology is already up there; run `revokd-harness down --dir {}`",
            state.display(),
            dir.display()
        );
    }
    let topology = Topology::load(topology)?;
    let dep = Deployment::up_on(
        &topology,
        &dir.join("data"),
        seed,
        cluster::Backend::Process,
        tls,
    )
    .await?;
    dep.write_state(&state)?;
    println!(
        "topology {} is up (harness pid {})",
        topology.name,
        std::process::id()
    );
    println!(
        "{:<4} {:<10} {:<8} {:<22} {:<22} log",
        "id", "region", "role", "grpc", "metrics"
    );
    for n in dep.nodes.values() {
        println!(
            "{:<4} {:<10} {:<8} {:<22} {:<22} {}",
            n.spec.id,
            n.spec.region,
            if n.spec.voter { "voter" } else { "learner" },
            n.addr,
            n.metrics,
            n.log.display()
        );
    }
    for r in &topology.regions {
        let map = dep.net.address_map(&r.name);
        let via: Vec<&str> = map.values().map(String::as_str).collect();
        println!(
            "from {}: dial {} (each node through the region's links)",
            r.name,
            via.join(",")
        );
    }
    let all: Vec<&str> = dep.nodes.values().map(|n| n.addr.as_str()).collect();
    let tls_flag = if tls {
        format!(
            " --tls-ca {}",
            dir.join("data").join("certs").join("ca.pem").display()
        )
    } else {
        String::new()
    };
    println!(
        "no added latency: revokctl --endpoints {} status{tls_flag}",
        all.join(",")
    );
    println!(
        "stop with Ctrl-C or `revokd-harness down --dir {}`",
        dir.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(dep);
    let _ = std::fs::remove_file(&state);
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// A Markdown table of several runs' headline figures.
fn summary(dirs: &[PathBuf]) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| Scenario | Topology | Backend | Seed | Acked | Lost | Worst failover | Without leader (total / longest) | Propagation p99 (worst region) | Worst replica staleness | Invariants |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for dir in dirs {
        let path = dir.join("report.json");
        let r: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let failover = r["faults"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["failover_ms"].as_f64())
            .fold(0.0, f64::max);
        let (region, p99) = r["propagation"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v["p99_ms"].as_f64().unwrap_or(0.0)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or_default();
        let stale = r["staleness_peak_ms"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_f64())
            .fold(0.0, f64::max);
        let held = r["verdicts"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|v| v["held"].as_bool() == Some(true));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.0} ms | {:.0} / {:.0} ms | {p99:.0} ms ({region}) | {stale:.0} ms | {} |",
            r["scenario"].as_str().unwrap_or("?"),
            r["topology"].as_str().unwrap_or("?"),
            r["backend"].as_str().unwrap_or("process"),
            r["seed"],
            r["revokes_acknowledged"],
            r["revokes_lost"],
            failover,
            f("leaderless_ms"),
            f("longest_leaderless_ms"),
            if held { "all held" } else { "BROKEN" }
        );
    }
    Ok(out)
}

/// Whether `pid` is still the process we started (PIDs are reused).
fn is_ours(pid: u32, name: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(name))
        .unwrap_or(false)
}

fn down(dir: &Path) -> Result<ExitCode> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let path = dir.join("harness.json");
    let state: UpState = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    if is_ours(state.harness_pid, "revokd-harness") {
        let _ = kill(Pid::from_raw(state.harness_pid as i32), Signal::SIGTERM);
        for _ in 0..100 {
            if !is_ours(state.harness_pid, "revokd-harness") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Nodes left behind (the harness was killed): stop them by their recorded PIDs.
    for (id, pid) in &state.nodes {
        if is_ours(*pid, "revokd") {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            println!("stopped node {id} (pid {pid})");
        }
    }
    let _ = std::fs::remove_file(&path);
    println!("down");
    Ok(ExitCode::SUCCESS)
}
