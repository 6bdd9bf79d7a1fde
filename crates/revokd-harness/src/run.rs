//! Runs a scenario end to end: bring the topology up, start the workload, inject the
//! schedule's faults one after another, heal everything, then check the invariants on the
//! history and the final state, and write the report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::check::check_invariants;
use crate::cluster::Deployment;
use crate::faults::{Cut, Fault, Schedule, Target};
use crate::history::History;
use crate::net::Site;
use crate::report::Report;
use crate::topology::Topology;
use crate::workload::{Placement, Workload, WorkloadOptions};

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where nodes run.
    pub topology: Topology,
    /// The faults.
    pub schedule: Schedule,
    /// Seeds proxies' jitter and checkers' choices (the schedule is already built from it).
    pub seed: u64,
    /// Revokes per second per writer.
    pub write_rate: f64,
    /// Checks per second per checker.
    pub check_rate: f64,
    /// Where the report, the timeline and (unless removed) node data and logs go.
    pub out_dir: PathBuf,
    /// Keep node data and logs after a passing run (they are always kept after a failure).
    pub keep_data: bool,
}

/// Runs one scenario and returns its report (also written to `out_dir`). The report says
/// whether every invariant held; an error means the run itself could not be carried out.
pub async fn run(opts: RunOptions) -> Result<Report> {
    std::fs::create_dir_all(&opts.out_dir)?;
    let data = opts.out_dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    println!(
        "== {} on {}: {} fault steps",
        opts.schedule.name,
        opts.topology.name,
        opts.schedule.steps.len()
    );
    let mut dep = Deployment::up(&opts.topology, &data, opts.seed)
        .await
        .context("bringing the topology up")?;
    let history = Arc::new(History::new());
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
    let mut workload = Workload::start(
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
    )
    .await?;
    println!(
        "   {} writers, {} checkers, {} replicas; data and logs in {}",
        writers.len(),
        checkers.len(),
        replicas.len(),
        data.display()
    );

    for st in &opts.schedule.steps {
        tokio::time::sleep(st.after).await;
        apply(&mut dep, &history, &st.fault).await?;
    }
    tokio::time::sleep(opts.schedule.settle).await;
    workload.stop_traffic().await;

    // Everything healed and running again before the final checks.
    dep.net.heal();
    dep.net.reset_latency();
    dep.revive_all()?;
    dep.wait_leader(Duration::from_secs(60))
        .await
        .context("no leader after healing every fault")?;
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

fn node_cut(dep: &Deployment, id: u64, cut: Cut) {
    let me = [Site::Node(id)];
    let rest: Vec<Site> = dep
        .net
        .all_sites()
        .into_iter()
        .filter(|s| *s != Site::Node(id))
        .collect();
    match cut {
        Cut::Both => dep.net.partition(&me, &rest, false),
        Cut::Outbound => dep.net.partition(&me, &rest, true),
        Cut::Inbound => dep.net.partition(&rest, &me, true),
    }
}

/// Injects one fault, holds it, heals it; records it on the timeline.
async fn apply(dep: &mut Deployment, history: &History, fault: &Fault) -> Result<()> {
    // The description names the concrete node, not just the role.
    let named = |id: u64| format!("{fault} -> node {id}");
    match fault {
        Fault::Kill { target, down } => {
            let id = resolve(dep, target).await?;
            let ev = history.event("fault", named(id));
            dep.kill(id)?;
            tokio::time::sleep(*down).await;
            dep.start(id)?;
            history.end_event(ev);
        }
        Fault::Pause { target, duration } => {
            let id = resolve(dep, target).await?;
            let ev = history.event("fault", named(id));
            dep.pause(id)?;
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
            let ev = history.event("fault", named(id));
            node_cut(dep, id, *cut);
            tokio::time::sleep(*duration).await;
            dep.net.heal();
            history.end_event(ev);
        }
        Fault::PartitionRegion {
            region,
            cut,
            duration,
        } => {
            let ev = history.event("fault", fault.to_string());
            let inside = dep.net.region_sites(region);
            let outside: Vec<Site> = dep
                .net
                .all_sites()
                .into_iter()
                .filter(|s| !inside.contains(s))
                .collect();
            match cut {
                Cut::Both => dep.net.partition(&inside, &outside, false),
                Cut::Outbound => dep.net.partition(&inside, &outside, true),
                Cut::Inbound => dep.net.partition(&outside, &inside, true),
            }
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
            let ev = history.event("fault", fault.to_string());
            dep.net.set_region_rtt(a, b, *rtt, Duration::ZERO);
            tokio::time::sleep(*duration).await;
            dep.net.reset_latency();
            history.end_event(ev);
        }
        Fault::RollingRestart { gap } => {
            let ev = history.event("fault", fault.to_string());
            let ids: Vec<u64> = dep.nodes.keys().copied().collect();
            for id in ids {
                let one = history.event("fault", format!("restart node {id} (rolling)"));
                let stopped = tokio::task::block_in_place(|| dep.stop(id));
                stopped?;
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
