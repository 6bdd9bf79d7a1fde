//! The simulated clients: writers (revokes, rules, unrevokes), a checker (linearizable checks
//! of what was acknowledged, and of ids nobody wrote), client replicas following the cluster,
//! and the probe that measures liveness after the faults heal. Every answer goes into the
//! [`History`].

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use revokd_client::{
    Client, ClientConfig, Consistency, Replica, ReplicaConfig, Revoke, RuleKind, TokenQuery,
};

use crate::history::{now_ms, Answer, History, Op};
use crate::net;

/// The unix second every run starts at (the simulated epoch).
pub const EPOCH_SECS: u64 = 1_800_000_000;

/// Unix seconds on the simulated clock.
pub fn sim_unix_now() -> i64 {
    turmoil::since_epoch()
        .map(|d| d.as_secs() as i64)
        .unwrap_or(EPOCH_SECS as i64)
}

/// A node host's wall clock: the simulated time, `offset` seconds off (a clock jump).
pub fn sim_wall(offset: &AtomicI64) -> Duration {
    let now = turmoil::since_epoch().unwrap_or(Duration::from_secs(EPOCH_SECS));
    let offset = offset.load(Ordering::Relaxed);
    match offset >= 0 {
        true => now + Duration::from_secs(offset as u64),
        false => now.saturating_sub(Duration::from_secs(offset.unsigned_abs())),
    }
}

/// A client tuned for the simulation: short timeouts, so calls fail (and are retried by the
/// workload) rather than hang across partitions.
pub fn client_config(endpoints: &[String], actor: &str) -> ClientConfig {
    let mut c = ClientConfig::new(endpoints.iter().cloned());
    c.dialer = net::dialer();
    c.timeout = Duration::from_secs(3);
    c.attempt_timeout = Duration::from_millis(700);
    c.connect_timeout = Duration::from_millis(300);
    c.heartbeat_interval = Duration::from_millis(250);
    c.actor = actor.to_owned();
    c
}

/// A short name for a client error (the history must not carry text that could vary).
fn failure(e: &revokd_client::Error) -> String {
    match e {
        revokd_client::Error::Rejected { code, .. } => format!("rejected {code:?}"),
        revokd_client::Error::Unavailable { .. } => "unavailable".into(),
        revokd_client::Error::Rpc { status, .. } => format!("rpc {:?}", status.code()),
        _ => "other".into(),
    }
}

fn written(r: Result<revokd_client::WriteResult, revokd_client::Error>) -> Answer {
    match r {
        Ok(w) => Answer::Written {
            revision: w.revision,
            committed: w.committed_revision,
        },
        Err(e) => Answer::Failed(failure(&e)),
    }
}

/// Until when the workload runs, and the flag that ends the long-lived clients.
#[derive(Clone)]
pub struct Phase {
    /// Writers and the checker stop invoking at this simulated time.
    pub stop_at: Duration,
    /// Set by the driver when the run is over; replicas exit then.
    pub done: Arc<AtomicBool>,
}

/// A writer: revokes fresh ids (a tenth of them short-lived, so purges happen), and now and
/// then unrevokes one of its own, adds a subject rule or removes one. Each id or subject is
/// written by one writer only, so the expected final state is known from its answers.
pub async fn writer(
    name: String,
    seed: u64,
    endpoints: Vec<String>,
    history: History,
    phase: Phase,
) -> turmoil::Result {
    let client = Client::connect(client_config(&endpoints, &name)).await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut next, mut revoked, mut rules) = (0u64, Vec::<String>::new(), Vec::<String>::new());
    while turmoil::sim_elapsed().unwrap_or_default() < phase.stop_at {
        let roll = rng.random_range(0..100);
        let op = if roll < 8 && !revoked.is_empty() {
            Op::Unrevoke(revoked.swap_remove(rng.random_range(0..revoked.len())))
        } else if roll < 16 {
            next += 1;
            let subject = format!("{name}-s{next}");
            rules.push(subject.clone());
            Op::AddRule(subject)
        } else if roll < 20 && !rules.is_empty() {
            Op::RemoveRule(rules.swap_remove(rng.random_range(0..rules.len())))
        } else {
            next += 1;
            let jti = format!("{name}-t{next}");
            let ttl = if roll < 30 {
                rng.random_range(2..8)
            } else {
                86_400
            };
            revoked.push(jti.clone());
            Op::Revoke(jti, sim_unix_now() + ttl)
        };
        history.invoke(&name, &op);
        let invoked = now_ms();
        let result = match &op {
            Op::Unrevoke(jti) => client.unrevoke(jti).await,
            Op::AddRule(subject) => {
                client
                    .revoke_rule(RuleKind::Subject, subject, Some(sim_unix_now()), "sim")
                    .await
            }
            Op::RemoveRule(subject) => client.remove_rule(RuleKind::Subject, subject).await,
            Op::Revoke(jti, expires_at) => {
                client.revoke(Revoke::new(jti.clone(), *expires_at)).await
            }
            // Writers only write: checks are the checker's, membership the admin's.
            Op::Check(_) | Op::Membership(_) => continue,
        };
        let answer = written(result);
        history.record(&name, op, invoked, answer);
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..60))).await;
    }
    Ok(())
}

/// The checker: linearizable checks of ids whose revoke was acknowledged (and that nobody
/// unrevoked), and of ids nobody ever wrote.
pub async fn checker(
    name: String,
    seed: u64,
    endpoints: Vec<String>,
    history: History,
    phase: Phase,
) -> turmoil::Result {
    let client = Client::connect(client_config(&endpoints, &name)).await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ghosts = 0u64;
    while turmoil::sim_elapsed().unwrap_or_default() < phase.stop_at {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
        let jti = if rng.random_bool(0.25) {
            ghosts += 1;
            format!("ghost-{ghosts}")
        } else {
            let records = history.records();
            let acked: Vec<&str> = records
                .iter()
                .filter(|r| {
                    matches!(r.op, Op::Revoke(_, exp) if exp > crate::workload::sim_unix_now() + 60)
                        && matches!(r.answer, Answer::Written { .. })
                })
                .map(|r| r.op.key())
                .collect();
            if acked.is_empty() {
                continue;
            }
            acked[rng.random_range(0..acked.len())].to_owned()
        };
        let invoked = now_ms();
        let query = TokenQuery {
            jti: &jti,
            ..Default::default()
        };
        let answer = match client.check(&query, Consistency::Linearizable).await {
            Ok(r) => Answer::Checked {
                revoked: r.is_revoked(),
                revision: r.revision,
            },
            Err(e) => Answer::Failed(failure(&e)),
        };
        history.record(&name, Op::Check(jti), invoked, answer);
    }
    Ok(())
}

/// A client replica: bootstraps, follows the cluster, and records (as a violation) any
/// revision that goes backwards. It runs until the driver ends the run, and is left in
/// `slot` for the final checks.
pub async fn replica(
    name: String,
    endpoints: Vec<String>,
    history: History,
    phase: Phase,
    slot: Arc<Mutex<Option<Replica>>>,
) -> turmoil::Result {
    let client = Client::connect(client_config(&endpoints, &name)).await?;
    let config = ReplicaConfig {
        replica_id: name.clone(),
        max_staleness: Duration::from_secs(2),
        ..ReplicaConfig::default()
    };
    let replica = Replica::start(client, config)?;
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(replica.clone());
    let mut last = 0u64;
    while !phase.done.load(Ordering::Acquire) {
        let r = replica.revision();
        if r < last {
            history.violation(format!(
                "replica {name} went back from revision {last} to {r}"
            ));
        }
        last = r;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A membership change the driver asks the admin client for.
#[derive(Clone, Debug)]
pub enum Change {
    /// Add these nodes (id, address) as learners, then make every founder and them voters.
    Grow(Vec<u64>, Vec<(u64, String)>),
    /// Make these the voters.
    Shrink(Vec<u64>),
}

/// One membership call.
enum Step {
    Learner(u64, String),
    Voters(Vec<u64>),
}

/// The admin: carries out membership changes from `queue`, each retried until it is
/// acknowledged (membership calls are idempotent), until the run ends.
pub async fn admin(
    endpoints: Vec<String>,
    history: History,
    phase: Phase,
    queue: Arc<Mutex<std::collections::VecDeque<Change>>>,
) -> turmoil::Result {
    let client = Client::connect(client_config(&endpoints, "admin")).await?;
    while !phase.done.load(Ordering::Acquire) {
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let Some(change) = next else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Each step: what it is, and either a learner to add or the voters to set.
        let steps: Vec<(String, Step)> = match change {
            Change::Grow(founders, spares) => {
                let mut voters = founders.clone();
                voters.extend(spares.iter().map(|(id, _)| *id));
                let mut steps: Vec<_> = spares
                    .into_iter()
                    .map(|(id, addr)| (format!("add learner {id}"), Step::Learner(id, addr)))
                    .collect();
                steps.push((format!("voters {voters:?}"), Step::Voters(voters)));
                steps
            }
            Change::Shrink(voters) => vec![(format!("voters {voters:?}"), Step::Voters(voters))],
        };
        for (what, step) in steps {
            loop {
                let invoked = now_ms();
                let r = match &step {
                    Step::Learner(id, addr) => client.add_learner(*id, addr, true).await,
                    Step::Voters(voters) => client.change_membership(voters, false).await,
                };
                let answer = match &r {
                    Ok(m) => Answer::Written {
                        revision: m.revision,
                        committed: m.revision,
                    },
                    Err(e) => Answer::Failed(failure(e)),
                };
                history.record("admin", Op::Membership(what.clone()), invoked, answer);
                if r.is_ok() || phase.done.load(Ordering::Acquire) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}

/// After the heal: writes until one is acknowledged, and records when.
pub async fn probe(
    endpoints: Vec<String>,
    history: History,
    acked: Arc<Mutex<Option<(u64, u64)>>>,
) -> turmoil::Result {
    let client = Client::connect(client_config(&endpoints, "probe")).await?;
    let started = now_ms();
    let expires_at = sim_unix_now() + 86_400;
    let op = Op::Revoke("liveness-probe".into(), expires_at);
    history.invoke("probe", &op);
    loop {
        let invoked = now_ms();
        let r = client
            .revoke(Revoke::new("liveness-probe", expires_at))
            .await;
        let ok = r.as_ref().ok().map(|w| w.committed_revision);
        history.record("probe", op.clone(), invoked, written(r));
        if let Some(revision) = ok {
            *acked.lock().unwrap_or_else(|e| e.into_inner()) = Some((now_ms() - started, revision));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
