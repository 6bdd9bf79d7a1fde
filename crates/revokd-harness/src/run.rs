//! Runs a scenario end to end: bring the topology up, start the workload, inject the
//! schedule's faults one after another, heal everything, then check the invariants on the
//! history and the final state, and write the report.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use revokd_client::{Client, ClientConfig, Revoke};
use revokd_proto::clock::unix_now;
use tokio::task::JoinSet;

use crate::check::check_invariants;
use crate::cluster::Deployment;
use crate::faults::{Cut, Fault, Target};
use crate::history::{Ack, History};
use crate::net::Site;
use crate::options::RunOptions;
use crate::report::Report;
use crate::workload::{Placement, Workload, WorkloadOptions};

/// Runs one scenario and returns its report (also written to `out_dir`). The report says
/// whether every invariant held; an error means the run itself could not be carried out.
pub async fn run(opts: RunOptions) -> Result<Report> {
    std::fs::create_dir_all(&opts.out_dir)?;
    let data = opts.out_dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    print_plan(&opts);
    let mut dep = Deployment::up_on(
        &opts.topology,
        &data,
        opts.seed,
        opts.backend.clone(),
        opts.tls,
    )
    .await
    .context("bringing the topology up")?;
    let history = Arc::new(History::new());
    let mut workload = start_workload(&opts, &dep, &history, &data).await?;

    inject_faults(&opts, &mut dep, &history).await?;
    workload.stop_traffic().await;

    heal_all(&mut dep).await?;
    let verdicts = check_invariants(&dep, &history, &workload.replicas).await;
    let replicas_for_report: Vec<String> = workload
        .replicas
        .iter()
        .map(|(r, rep)| format!("{r}:{}", rep.id()))
        .collect();
    workload.stop().await;
    let report = Report::build(&opts, &history, verdicts, replicas_for_report);
    report.write(&opts.out_dir)?;
    drop(dep);
    if report.passed() && !opts.keep_data {
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(report)
}

/// Starts the workload with the topology's writers, checkers and replicas in their regions.
async fn start_workload(
    opts: &RunOptions,
    dep: &Deployment,
    history: &Arc<History>,
    data: &Path,
) -> Result<Workload> {
    let placements = |count: fn(&crate::topology::Region) -> u32| -> Vec<Placement> {
        opts.topology
            .regions
            .iter()
            .flat_map(|r| {
                std::iter::repeat_n(
                    Placement {
                        region: r.name.clone(),
                        config: dep.client_config(&r.name),
                    },
                    count(r) as usize,
                )
            })
            .collect()
    };
    let writers = placements(|r| r.writers);
    let checkers = placements(|r| r.checkers);
    let replicas = placements(|r| r.replicas);
    let prefix = format!("{}-{}", opts.schedule.name, opts.seed);
    let workload = Workload::start(
        history.clone(),
        &WorkloadOptions {
            write_rate: opts.write_rate,
            check_rate: opts.check_rate,
            seed: opts.seed,
            prefix,
        },
        &writers,
        &checkers,
        &replicas,
        dep.voters(),
        dep.tls_ca.clone(),
    )
    .await?;
    println!(
        "   {} writers, {} checkers, {} replicas; data and logs in {}",
        writers.len(),
        checkers.len(),
        replicas.len(),
        data.display()
    );
    Ok(workload)
}

/// Everything healed and running again, with a leader, before the final checks.
async fn heal_all(dep: &mut Deployment) -> Result<()> {
    dep.heal()?;
    dep.net.reset_latency();
    dep.revive_all()?;
    dep.wait_leader(Duration::from_secs(60))
        .await
        .context("no leader after healing every fault")?;
    Ok(())
}

/// Prints the scenario and its steps.
fn print_plan(opts: &RunOptions) {
    println!(
        "== {} on {}: {} fault steps",
        opts.schedule.name,
        opts.topology.name,
        opts.schedule.steps.len()
    );
    for (i, st) in opts.schedule.steps.iter().enumerate() {
        println!(
            "   step {:>2}: after {:.1} s quiet, {}",
            i + 1,
            st.after.as_secs_f64(),
            st.fault
        );
    }
}

/// Runs the schedule's steps, lets it settle, and waits for every failover probe's
/// acknowledgement.
async fn inject_faults(
    opts: &RunOptions,
    dep: &mut Deployment,
    history: &Arc<History>,
) -> Result<()> {
    let mut inj = Injector {
        history,
        client: probe_client(dep).await?,
        probes: JoinSet::new(),
        n: 0,
        prefix: format!("{}-{}", opts.schedule.name, opts.seed),
    };
    for st in &opts.schedule.steps {
        tokio::time::sleep(st.after).await;
        apply(dep, &mut inj, &st.fault).await?;
    }
    tokio::time::sleep(opts.schedule.settle).await;
    // Every fault has healed, so every probe gets its acknowledgement.
    if tokio::time::timeout(Duration::from_secs(120), async {
        while inj.probes.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        bail!("a failover probe got no acknowledgement within 120 s after every fault healed");
    }
    Ok(())
}

/// Resolves a role to a node id.
async fn resolve(dep: &Deployment, target: &Target) -> Result<u64> {
    match target {
        Target::Node(id) => Ok(*id),
        Target::Leader => dep.wait_leader(Duration::from_secs(30)).await,
        Target::Follower => {
            let leader = dep.wait_leader(Duration::from_secs(30)).await?;
            dep.nodes
                .values()
                .find(|n| n.spec.voter && n.spec.id != leader && n.running() && !n.paused())
                .map(|n| n.spec.id)
                .ok_or_else(|| anyhow!("no running follower"))
        }
    }
}

/// Cuts `inside` off from every other site through the links, as `cut` says (from the
/// point of view of `inside`).
fn cut_off(dep: &Deployment, inside: &[Site], cut: Cut) {
    let outside = dep.net.others(inside);
    match cut {
        Cut::Both => dep.net.partition(inside, &outside, false),
        Cut::Outbound => dep.net.partition(inside, &outside, true),
        Cut::Inbound => dep.net.partition(&outside, inside, true),
    }
}

fn node_cut(dep: &mut Deployment, id: u64, cut: Cut) -> Result<()> {
    if cut == Cut::Both {
        // A real disconnect where the backend has one (Docker), else the links.
        return dep.isolate(id);
    }
    cut_off(dep, &[Site::Node(id)], cut);
    Ok(())
}

/// Records faults on the timeline and measures each one's failover: right after a fault is
/// in effect, a probe writes through a client that reaches every node directly (no links)
/// until the cluster acknowledges; that write was sent after the fault, so its
/// acknowledgement marks writes being accepted again. Probe writes are recorded like any
/// other and checked by the same invariants.
struct Injector<'h> {
    history: &'h Arc<History>,
    client: Client,
    probes: JoinSet<()>,
    n: u64,
    prefix: String,
}

impl Injector<'_> {
    /// The fault is in effect now: record it and start its probe.
    fn began(&mut self, what: String) -> usize {
        let ev = self.history.event("fault", what);
        self.n += 1;
        let jti = format!("{}-probe-{}", self.prefix, self.n);
        let (history, client) = (self.history.clone(), self.client.clone());
        self.probes.spawn(async move {
            history.with(|r| r.attempted.insert(jti.clone()));
            let at = history.with(|r| r.events[ev].at_ms);
            loop {
                let sent_ms = history.now_ms();
                if let Ok(res) = client
                    .revoke(Revoke::new(jti.clone(), unix_now() + 3600))
                    .await
                {
                    let ack_ms = history.now_ms();
                    history.with(|r| {
                        r.events[ev].failover_ms = Some(ack_ms - at);
                        r.acks.push(Ack {
                            jti,
                            region: "harness".into(),
                            sent_ms,
                            ack_ms,
                            revision: res.revision,
                        });
                    });
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        ev
    }
}

/// A client for failover probes: direct to every node, quick to give up on one.
async fn probe_client(dep: &Deployment) -> Result<Client> {
    let mut config = ClientConfig::new(dep.nodes.values().map(|n| n.addr.clone()));
    config.timeout = Duration::from_secs(120);
    config.attempt_timeout = Duration::from_millis(500);
    config.initial_backoff = Duration::from_millis(10);
    config.max_backoff = Duration::from_millis(100);
    config.heartbeat_interval = Duration::from_millis(200);
    config.actor = "revokd-harness-probe".into();
    config.tls = dep.tls_ca.clone().map(revokd_client::ClientTls::new);
    Ok(Client::connect(config).await?)
}

/// Injects one fault, holds it, heals it; records it on the timeline from the moment it is
/// in effect (`docker kill` alone can take a few hundred milliseconds).
async fn apply(dep: &mut Deployment, inj: &mut Injector<'_>, fault: &Fault) -> Result<()> {
    // The description names the concrete node, not just the role.
    let named = |id: u64| format!("{fault} -> node {id}");
    let history = inj.history.clone();
    match fault {
        Fault::Kill { target, down } => {
            let id = resolve(dep, target).await?;
            dep.kill(id)?;
            let ev = inj.began(named(id));
            tokio::time::sleep(*down).await;
            dep.start(id)?;
            history.end_event(ev);
        }
        Fault::Pause { target, duration } => {
            let id = resolve(dep, target).await?;
            dep.pause(id)?;
            let ev = inj.began(named(id));
            tokio::time::sleep(*duration).await;
            dep.resume(id)?;
            history.end_event(ev);
        }
        Fault::PartitionNode {
            target,
            cut,
            duration,
        } => {
            let id = resolve(dep, target).await?;
            node_cut(dep, id, *cut)?;
            let ev = inj.began(named(id));
            tokio::time::sleep(*duration).await;
            dep.heal()?;
            history.end_event(ev);
        }
        Fault::PartitionRegion {
            region,
            cut,
            duration,
        } => {
            cut_off(dep, &dep.net.region_sites(region), *cut);
            let ev = inj.began(fault.to_string());
            tokio::time::sleep(*duration).await;
            dep.net.heal();
            history.end_event(ev);
        }
        Fault::Latency {
            a,
            b,
            rtt,
            duration,
        } => {
            dep.net.set_region_rtt(a, b, *rtt, Duration::ZERO);
            let ev = inj.began(fault.to_string());
            tokio::time::sleep(*duration).await;
            dep.net.reset_latency();
            history.end_event(ev);
        }
        Fault::RollingRestart { gap } => {
            let ev = history.event("fault", fault.to_string());
            let ids: Vec<u64> = dep.nodes.keys().copied().collect();
            for id in ids {
                let stopped = tokio::task::block_in_place(|| dep.stop(id));
                stopped?;
                let one = inj.began(format!("restart node {id} (rolling)"));
                dep.start(id)?;
                history.end_event(one);
                // The next node goes only once a leader serves again.
                dep.wait_leader(Duration::from_secs(30)).await?;
                tokio::time::sleep(*gap).await;
            }
            history.end_event(ev);
        }
    }
    println!("   {:>6.1} s  {fault}", history.now_ms() / 1000.0);
    Ok(())
}
