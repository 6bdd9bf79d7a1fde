//! The traffic that runs while faults are injected: writers revoke through the client crate
//! from their regions, replicas follow the cluster from theirs, checkers read linearizably,
//! and a monitor samples the leader. Every task records into the [`History`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use revokd_client::{
    Client, ClientConfig, Consistency, Replica, ReplicaConfig, Revoke, StalenessPolicy, TokenQuery,
};
use revokd_proto::clock::unix_now;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::history::{Ack, History, Sighting, StaleRead};

/// How hard the workload pushes.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Revokes per second per writer (each writer has one request in flight).
    pub write_rate: f64,
    /// Linearizable checks per second per checker.
    pub check_rate: f64,
    /// Seeds the checkers' choices.
    pub seed: u64,
    /// Prefix of every token id (unique per run).
    pub prefix: String,
}

/// A client placed in a region.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The region.
    pub region: String,
    /// How it connects (through the region's links).
    pub config: ClientConfig,
}

/// The running workload.
pub struct Workload {
    stop_writes: watch::Sender<bool>,
    stop_replicas: watch::Sender<bool>,
    writers: JoinSet<()>,
    followers: JoinSet<()>,
    /// The replicas, by (region, name).
    pub replicas: Vec<(String, Arc<Replica>)>,
}

fn tuned(mut config: ClientConfig, actor: &str) -> ClientConfig {
    config.timeout = Duration::from_secs(10);
    config.heartbeat_interval = Duration::from_millis(250);
    config.attempt_timeout = Duration::from_secs(2);
    config.actor = actor.into();
    config
}

/// A client for `p`, named `name` (its actor, and in errors).
async fn connect(p: &Placement, name: &str) -> Result<Client> {
    Client::connect(tuned(p.config.clone(), name))
        .await
        .with_context(|| format!("{name}: connecting"))
}

/// A replica in `p`'s region, bootstrapped, that answers however stale it is.
async fn follower_replica(p: &Placement, name: &str) -> Result<Replica> {
    Replica::connect(
        connect(p, name).await?,
        ReplicaConfig {
            replica_id: name.into(),
            description: format!("revokd-harness replica in {}", p.region),
            // The harness measures staleness; it does not want answers refused.
            max_staleness: Duration::from_secs(3600),
            policy: StalenessPolicy::FailOpen,
            ..ReplicaConfig::default()
        },
        Duration::from_secs(30),
    )
    .await
    .with_context(|| format!("{name}: bootstrapping"))
}

impl Workload {
    /// Connects every replica (waiting for their bootstrap), then starts writers, checkers
    /// and the leader monitor.
    pub async fn start(
        history: Arc<History>,
        opts: &WorkloadOptions,
        writers: &[Placement],
        checkers: &[Placement],
        replicas: &[Placement],
        voters: Vec<(u64, String)>,
        tls_ca: Option<Vec<u8>>,
    ) -> Result<Workload> {
        let (stop_writes, stop_w) = watch::channel(false);
        let (stop_replicas, stop_r) = watch::channel(false);
        let mut followers = JoinSet::new();
        let mut reps = Vec::new();
        for (i, p) in replicas.iter().enumerate() {
            let name = format!("{}-replica-{i}", p.region);
            let replica = Arc::new(follower_replica(p, &name).await?);
            reps.push((p.region.clone(), replica.clone()));
            followers.spawn(follow(
                history.clone(),
                p.region.clone(),
                name,
                replica,
                stop_r.clone(),
            ));
        }
        followers.spawn(monitor(history.clone(), voters, tls_ca, stop_r));

        let mut tasks = JoinSet::new();
        for (i, p) in writers.iter().enumerate() {
            let name = format!("{}-writer-{i}", p.region);
            let client = connect(p, &name).await?;
            tasks.spawn(write(
                history.clone(),
                p.region.clone(),
                format!("{}-{name}", opts.prefix),
                client,
                opts.write_rate,
                stop_w.clone(),
            ));
        }
        for (i, p) in checkers.iter().enumerate() {
            let name = format!("{}-checker-{i}", p.region);
            let client = connect(p, &name).await?;
            tasks.spawn(check(
                history.clone(),
                client,
                opts.check_rate,
                format!("{}-never-written", opts.prefix),
                opts.seed ^ (i as u64 + 1),
                stop_w.clone(),
            ));
        }
        Ok(Workload {
            stop_writes,
            stop_replicas,
            writers: tasks,
            followers,
            replicas: reps,
        })
    }

    /// Stops writers and checkers and waits for their last requests (answered or failed).
    pub async fn stop_traffic(&mut self) {
        let _ = self.stop_writes.send(true);
        while self.writers.join_next().await.is_some() {}
    }

    /// Stops the replica followers and the monitor.
    pub async fn stop(mut self) {
        self.stop_traffic().await;
        let _ = self.stop_replicas.send(true);
        while self.followers.join_next().await.is_some() {}
    }
}

async fn write(
    history: Arc<History>,
    region: String,
    prefix: String,
    client: Client,
    rate: f64,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let expires = unix_now() + 3600;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        seq += 1;
        let jti = format!("{prefix}-{seq}");
        history.with(|r| r.attempted.insert(jti.clone()));
        let sent_ms = history.now_ms();
        match client.revoke(Revoke::new(jti.clone(), expires)).await {
            Ok(res) => {
                let ack_ms = history.now_ms();
                history.with(|r| {
                    r.acks.push(Ack {
                        jti,
                        region: region.clone(),
                        sent_ms,
                        ack_ms,
                        revision: res.revision,
                    })
                });
            }
            Err(e) => {
                let kind = match &e {
                    revokd_client::Error::Unavailable { .. } => "unavailable".to_owned(),
                    revokd_client::Error::Rejected { code, .. } => format!("rejected {code:?}"),
                    revokd_client::Error::Rpc { status, .. } => format!("{:?}", status.code()),
                    other => other.to_string(),
                };
                tracing::debug!(%jti, error = %e, "harness: write failed");
                history.with(|r| *r.write_errors.entry(kind).or_default() += 1);
            }
        }
    }
}

async fn check(
    history: Arc<History>,
    client: Client,
    rate: f64,
    never_written: String,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        // Every fifth check asks for an id nobody wrote; the others for one acknowledged
        // before the check starts.
        let target = if n.is_multiple_of(5) {
            None
        } else {
            history.with(|r| {
                if r.acks.is_empty() {
                    None
                } else {
                    // Favour recent acknowledgements: they are the ones a lagging read misses.
                    let len = r.acks.len();
                    let i = if rng.gen_bool(0.5) {
                        len - 1 - rng.gen_range(0..len.min(20))
                    } else {
                        rng.gen_range(0..len)
                    };
                    Some((r.acks[i].jti.clone(), r.acks[i].ack_ms))
                }
            })
        };
        let jti = match &target {
            Some((jti, _)) => jti.clone(),
            None => format!("{never_written}-{n}"),
        };
        let check_ms = history.now_ms();
        let query = TokenQuery {
            jti: &jti,
            ..Default::default()
        };
        match client.check(&query, Consistency::Linearizable).await {
            Ok(resp) => {
                let revoked = resp.is_revoked();
                history.with(|r| {
                    r.checks += 1;
                    match &target {
                        Some((jti, ack_ms)) if !revoked => r.stale_reads.push(StaleRead {
                            jti: jti.clone(),
                            ack_ms: *ack_ms,
                            check_ms,
                            revision: resp.revision,
                        }),
                        None if revoked => r.phantom_reads.push(jti.clone()),
                        _ => {}
                    }
                });
            }
            Err(_) => history.with(|r| r.check_errors += 1),
        }
    }
}

/// Watches one replica: when each acknowledged write becomes visible in it, and how stale
/// it gets.
async fn follow(
    history: Arc<History>,
    region: String,
    name: String,
    replica: Arc<Replica>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = 0usize;
    let mut pending: Vec<(String, f64)> = Vec::new();
    // Woken by every revision the replica applies, so a sighting is timed when it happens;
    // the tick picks up acknowledgements that arrive after their revision was applied.
    let mut revisions = replica.revisions();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = revisions.changed() => {}
            _ = tick.tick() => {}
        }
        history.with(|r| {
            pending.extend(r.acks[seen..].iter().map(|a| (a.jti.clone(), a.ack_ms)));
            seen = r.acks.len();
        });
        let now = history.now_ms();
        // The raw set, not `is_revoked`: a stale replica's policy must not count as seeing.
        let mut found = Vec::new();
        pending.retain(|(jti, ack_ms)| {
            if replica.get(jti).is_some() {
                found.push(Sighting {
                    region: region.clone(),
                    ack_ms: *ack_ms,
                    delay_ms: (now - ack_ms).max(0.0),
                });
                false
            } else {
                true
            }
        });
        let staleness = replica.staleness().as_secs_f64() * 1000.0;
        history.with(|r| {
            r.sightings.extend(found);
            let peak = r.staleness_peak_ms.entry(name.clone()).or_default();
            *peak = peak.max(staleness);
        });
    }
}

/// Samples the leader a majority of voters agree on, every 100 ms, asking the nodes
/// directly (the harness's own view, through no link).
async fn monitor(
    history: Arc<History>,
    voters: Vec<(u64, String)>,
    tls_ca: Option<Vec<u8>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<Option<u64>> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let leader =
            crate::cluster::majority_leader(&voters, Duration::from_millis(300), tls_ca.as_deref())
                .await;
        let at = history.now_ms();
        history.with(|r| r.leader_samples.push((at, leader)));
        if last != Some(leader) {
            let what = match leader {
                Some(l) => format!("leader is node {l}"),
                None => "no leader".into(),
            };
            history.event("leader", what);
            last = Some(leader);
        }
    }
}
