//! The driver: builds one simulated world per seed, steps it while the workload runs and the
//! scheduled faults come and go, heals everything, waits (in simulated time) for the cluster
//! to serve again and converge, then checks the invariants.
//!
//! Invariants checked on every run:
//! - every acknowledged revoke (and rule) that nobody undid is present on every node and every
//!   replica after the heal; every acknowledged unrevoke (rule removal) is absent;
//! - nothing is present that no client asked for;
//! - revisions never go backwards on a node (within one life of its process) or in a replica,
//!   and one client's acknowledged writes carry non-decreasing revisions;
//! - a linearizable check that started after a revoke was acknowledged sees it, and one of an
//!   id nobody wrote (yet) does not;
//! - all nodes end with the same state digest and revision, and every replica with the
//!   nodes' content;
//! - liveness: after the heal, a write is acknowledged and everything converges within
//!   [`Options::liveness_within`] of simulated time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use revokd::config::Config;
use revokd::node::Node;
use revokd::storage::MemDisk;
use revokd::Platform;
use revokd_client::Replica;
use revokd_core::{RevocationSet, RuleKind};

use crate::faults::{self, Fault, Scheduled};
use crate::history::{Answer, History, Op, Pending, Record};
use crate::leadership::{Leadership, NodeNow};
use crate::net::{self, PORT};
use crate::workload::{self, Phase, EPOCH_SECS};

/// The shape of a run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Founding voters.
    pub nodes: usize,
    /// Spare nodes, started to join: in about half the runs they are added as voters (and
    /// removed again) while the faults go on.
    pub spares: usize,
    /// Writer clients.
    pub writers: usize,
    /// Client replicas.
    pub replicas: usize,
    /// Faults start in `[faults_from, faults_until)`.
    pub faults_from: Duration,
    /// See `faults_from`.
    pub faults_until: Duration,
    /// Writers and the checker stop at this simulated time; everything is healed then.
    pub workload_until: Duration,
    /// After the heal, the cluster must acknowledge a write and converge within this.
    pub liveness_within: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 3,
            spares: 2,
            writers: 2,
            replicas: 2,
            faults_from: Duration::from_millis(1_500),
            faults_until: Duration::from_secs(6),
            workload_until: Duration::from_secs(8),
            liveness_within: Duration::from_secs(30),
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The faults, as scheduled.
    pub schedule: Vec<Scheduled>,
    /// The history as text (identical for two runs of one seed).
    pub history: String,
    /// Every invariant that failed; empty when the run passed.
    pub failures: Vec<String>,
    /// Operations completed, writes acknowledged, checks answered.
    pub ops: (usize, usize, usize),
    /// Simulated time from the heal to the first acknowledged write.
    pub recovered_after: Option<Duration>,
    /// Node crashes, the unflushed writes they lost or tore, and how many they tore.
    pub crashes: (u64, u64, u64),
    /// Simulated length of the run.
    pub simulated: Duration,
    /// Election rounds (terms beyond the first) and leader changes.
    pub elections: (u64, u64),
    /// Leaders a majority kept, deposed by a term raised while they had no quorum.
    pub late_depositions: u64,
    /// Write items the nodes skipped because their client had given up on them and a later
    /// write of that client had been applied (`revokd_core::order`): the most any running
    /// node counted.
    pub superseded: u64,
}

impl Report {
    /// The failing seed, its schedule and failures, for the log of a failed run.
    pub fn explain(&self) -> String {
        let mut out = format!(
            "seed {} FAILED (replay: SIM_SEED={} scripts/sim.sh; SIM_TRACE=info adds the logs)\nfault schedule:\n",
            self.seed, self.seed
        );
        for s in &self.schedule {
            out.push_str(&format!("  {s}\n"));
        }
        out.push_str("failures:\n");
        for f in &self.failures {
            out.push_str(&format!("  {f}\n"));
        }
        out
    }
}

/// The founders, the spares, and the admin client's queue of membership changes.
struct Membership {
    founders: Vec<u64>,
    spares: Vec<(u64, String)>,
    queue: Arc<Mutex<std::collections::VecDeque<workload::Change>>>,
}

/// The last started incarnation of a node's process, and its host's clock.
#[derive(Default)]
struct Probe {
    node: Option<Node>,
    incarnation: u64,
    /// How far the host's wall clock is from the simulated time (seconds; a clock jump).
    clock_offset: Arc<AtomicI64>,
}

fn node_config(id: u64, members: &BTreeMap<u64, String>, election_ms: u64) -> Config {
    let founder = members.contains_key(&id);
    Config {
        id,
        listen: ([0, 0, 0, 0], PORT).into(),
        advertise: format!("n{id}:{PORT}"),
        initial_cluster: if founder {
            members.clone()
        } else {
            BTreeMap::new()
        },
        join: !founder,
        heartbeat: Duration::from_millis(100),
        election_timeout: Duration::from_millis(election_ms),
        // Every campaign draws its timeout in [min, 2 min) from fastrand, which the driver
        // seeds: the production range, reproducible.
        election_timeout_max: None,
        // Small, so that snapshots are built, sent and restored from in most runs.
        snapshot_logs: 150,
        snapshot_keep_logs: 20,
        purge_interval: Duration::from_secs(1),
        default_deadline: Duration::from_secs(2),
        // Simulated hosts on a simulated network: no TLS, and not loopback.
        insecure: true,
        ..Config::default()
    }
}

/// Runs the simulation for `seed`, on a thread of its own: the thread-local state that
/// libraries keep (random generators, hasher keys) then starts fresh, so a seed replays the
/// same whether it runs alone or after others.
pub fn run(seed: u64, opts: &Options) -> Report {
    let opts = opts.clone();
    std::thread::Builder::new()
        .name(format!("sim-{seed}"))
        .spawn(move || run_here(seed, &opts))
        .expect("spawn the simulation thread")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Each node's last started process, as the driver watches it.
type Probes = Vec<Arc<Mutex<Probe>>>;
/// Each client replica, once it bootstrapped.
type ReplicaSlots = Vec<Arc<Mutex<Option<Replica>>>>;

/// One seed's simulated world: the hosts it runs and what the driver watches of them.
struct World<'a> {
    sim: turmoil::Sim<'a>,
    history: History,
    phase: Phase,
    /// The founding voters' host names.
    names: Vec<String>,
    /// Every node's host name, founders then spares.
    all_nodes: Vec<String>,
    /// The founders' addresses: where every client starts.
    endpoints: Vec<String>,
    disks: Vec<Arc<MemDisk>>,
    probes: Probes,
    /// The longest a message takes between two hosts without a latency fault.
    max_latency: Duration,
    replica_names: Vec<String>,
    replicas: ReplicaSlots,
    membership: Membership,
    /// Every host, for faults that cut one off from all the others.
    hosts: Vec<String>,
}

/// The driver's state while it steps a world.
#[derive(Default)]
struct Drive {
    active: Vec<(Duration, Fault)>,
    next_fault: usize,
    healed: bool,
    /// The probe's first acknowledged write after the heal: (ms after the heal, revision).
    probe_ack: Arc<Mutex<Option<(u64, u64)>>>,
    /// Per node: (incarnation, revision, purge watermark) last seen.
    seen: Vec<(u64, u64, i64)>,
    converged: bool,
    failures: Vec<String>,
    leadership: Leadership,
    /// Nodes isolated now, since when.
    isolated: BTreeMap<String, Duration>,
    /// Crashed nodes, with the incarnation that crashed (it is gone until the next starts).
    crashed: BTreeMap<String, u64>,
    /// Until when a leader stepping down is explained by a membership change.
    membership_changing_until: Option<Duration>,
}

/// How long after a membership change ends a leader may still step down because of it.
const MEMBERSHIP_SETTLE: Duration = Duration::from_secs(3);

fn run_here(seed: u64, opts: &Options) -> Report {
    // Every node and client reads the simulated clock, and the client's jitter is seeded.
    revokd_proto::clock::use_clock(workload::sim_unix_now);
    fastrand::seed(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    // The order of every draw from `rng` and of every host and client started below is part
    // of what a seed means: keep it.
    let mut world = World::build(seed, opts, &mut rng);
    let schedule = faults::schedule(
        seed,
        &world.names,
        &world.replica_names,
        opts.spares > 0,
        opts.faults_from,
        opts.faults_until,
    );
    let mut drive = Drive {
        seen: vec![(0, 0, 0); world.all_nodes.len()],
        leadership: Leadership::new(world.max_latency),
        ..Drive::default()
    };
    world.drive(&mut drive, &schedule, opts);
    world.report(seed, schedule, drive, opts)
}

impl World<'_> {
    /// The simulator, every node host and every client, in the seed's order.
    fn build(seed: u64, opts: &Options, rng: &mut StdRng) -> World<'static> {
        let max_latency = Duration::from_millis(rng.random_range(2..25));
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
            .simulation_duration(
                opts.workload_until + opts.liveness_within + Duration::from_secs(30),
            )
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(Duration::from_micros(rng.random_range(100..1_000)))
            .max_message_latency(max_latency)
            .tcp_capacity(1 << 16)
            .enable_random_order()
            .build();
        let history = History::default();
        let phase = Phase {
            stop_at: opts.workload_until,
            done: Arc::new(AtomicBool::new(false)),
        };

        let names: Vec<String> = (1..=opts.nodes).map(|i| format!("n{i}")).collect();
        let all_nodes: Vec<String> = (1..=opts.nodes + opts.spares)
            .map(|i| format!("n{i}"))
            .collect();
        let members: BTreeMap<u64, String> = (1..=opts.nodes as u64)
            .map(|i| (i, format!("n{i}:{PORT}")))
            .collect();
        let endpoints: Vec<String> = members.values().cloned().collect();
        let (disks, probes) = host_nodes(&mut sim, rng, &all_nodes, &members);
        let replica_names: Vec<String> = (1..=opts.replicas).map(|i| format!("r{i}")).collect();
        let replicas = start_clients(
            &mut sim,
            seed,
            opts,
            &replica_names,
            &endpoints,
            &history,
            &phase,
        );

        let admin_queue: Arc<Mutex<std::collections::VecDeque<workload::Change>>> = Arc::default();
        sim.client(
            "admin",
            workload::admin(
                endpoints.clone(),
                history.clone(),
                phase.clone(),
                admin_queue.clone(),
            ),
        );
        let membership = Membership {
            founders: members.keys().copied().collect(),
            spares: (opts.nodes as u64 + 1..=(opts.nodes + opts.spares) as u64)
                .map(|id| (id, format!("n{id}:{PORT}")))
                .collect(),
            queue: admin_queue,
        };
        let mut hosts: Vec<String> = all_nodes.clone();
        hosts.push("admin".into());
        hosts.extend((1..=opts.writers).map(|w| format!("w{w}")));
        hosts.push("c1".into());
        hosts.extend(replica_names.iter().cloned());
        World {
            sim,
            history,
            phase,
            names,
            all_nodes,
            endpoints,
            disks,
            probes,
            max_latency,
            replica_names,
            replicas,
            membership,
            hosts,
        }
    }

    /// Steps the world, starting and ending faults on schedule and healing everything at
    /// the end of the workload, until it converged after the heal or ran out of time.
    fn drive(&mut self, d: &mut Drive, schedule: &[Scheduled], opts: &Options) {
        let heal_at = opts.workload_until;
        loop {
            let now = self.sim.elapsed();
            self.start_due_faults(d, schedule, now);
            self.end_faults(d, now, now >= heal_at && !d.healed);
            if now >= heal_at && !d.healed {
                self.heal(d, schedule, now);
            }
            self.check_revisions(d);
            self.sample_leadership(d, now);
            if d.healed {
                let acked = *d.probe_ack.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((_, revision)) = acked {
                    if is_converged(&self.probes, &self.replicas, revision) {
                        d.converged = true;
                        break;
                    }
                }
                if now >= heal_at + opts.liveness_within {
                    break;
                }
            }
            match self.sim.step() {
                Ok(_) => {}
                Err(e) => {
                    d.failures.push(format!("the simulation stopped: {e}"));
                    break;
                }
            }
        }
    }

    /// Starts every scheduled fault whose time has come.
    fn start_due_faults(&mut self, d: &mut Drive, schedule: &[Scheduled], now: Duration) {
        while d.next_fault < schedule.len() && schedule[d.next_fault].at <= now {
            let s = &schedule[d.next_fault];
            self.apply(&s.fault, true);
            self.history
                .event(now.as_millis() as u64, format!("fault: {}", s.fault));
            d.active.push((s.at + s.lasts, s.fault.clone()));
            d.next_fault += 1;
            match &s.fault {
                Fault::Isolate(n) => {
                    d.isolated.insert(n.clone(), now);
                }
                Fault::Crash(n, _) => {
                    if let Some(i) = self.all_nodes.iter().position(|x| x == n) {
                        let p = self.probes[i].lock().unwrap_or_else(|e| e.into_inner());
                        d.crashed.insert(n.clone(), p.incarnation);
                    }
                    // A crash cuts and repairs every link of the node, which lifts holds on
                    // them too: an isolated node is no longer fully cut off.
                    d.isolated.clear();
                }
                Fault::Grow => d.membership_changing_until = Some(Duration::MAX),
                _ => {}
            }
        }
    }

    /// Ends the faults that are over, or all of them when `all` (the heal).
    fn end_faults(&mut self, d: &mut Drive, now: Duration, all: bool) {
        let (ending, still): (Vec<_>, Vec<_>) =
            d.active.drain(..).partition(|(end, _)| *end <= now || all);
        d.active = still;
        for (_, f) in ending {
            match &f {
                // Releasing held links also releases another isolation's hold on the same
                // link (holds do not stack): ending an isolation releases a link of every
                // other isolated node, so none of them is fully cut off any more.
                Fault::Isolate(_) | Fault::Crash(..) => d.isolated.clear(),
                // Ending a cut of one link (turmoil's release, or its repair, which also ends
                // a hold) opens that link whatever held it: an isolation of either end is
                // over.
                Fault::Partition(a, b) | Fault::Loss(a, b) | Fault::OneWay(a, b) => {
                    d.isolated.remove(a);
                    d.isolated.remove(b);
                }
                Fault::Grow => d.membership_changing_until = Some(now + MEMBERSHIP_SETTLE),
                _ => {}
            }
            self.apply(&f, false);
            self.history
                .event(now.as_millis() as u64, format!("healed: {f}"));
        }
    }

    /// The heal: no more faults, and a probe that times the first acknowledged write.
    fn heal(&mut self, d: &mut Drive, schedule: &[Scheduled], now: Duration) {
        d.healed = true;
        d.next_fault = schedule.len();
        self.history
            .event(now.as_millis() as u64, "everything healed".into());
        self.sim.client(
            "probe",
            workload::probe(
                self.endpoints.clone(),
                self.history.clone(),
                d.probe_ack.clone(),
            ),
        );
    }

    /// Samples every running node's part in Raft (see [`Leadership`]).
    fn sample_leadership(&self, d: &mut Drive, now: Duration) {
        let mut nodes = Vec::with_capacity(self.probes.len());
        for (name, probe) in self.all_nodes.iter().zip(&self.probes) {
            let p = probe.lock().unwrap_or_else(|e| e.into_inner());
            let gone = d.crashed.get(name).is_some_and(|inc| p.incarnation <= *inc);
            if !gone {
                d.crashed.remove(name);
            }
            nodes.push((
                p.node.clone().filter(|_| !gone),
                d.isolated.get(name).copied(),
            ));
        }
        let now_nodes: Vec<NodeNow<'_>> = nodes
            .iter()
            .map(|(node, isolated_since)| NodeNow {
                node: node.as_ref(),
                isolated_since: *isolated_since,
            })
            .collect();
        let excused = d.membership_changing_until.is_some_and(|t| now < t);
        d.leadership.sample(now, &now_nodes, excused);
    }

    /// Revisions and purge watermarks never go backwards within one life of a node, and no
    /// node purges through a time still to come (a clock jump must not reach the state).
    fn check_revisions(&self, d: &mut Drive) {
        for (i, probe) in self.probes.iter().enumerate() {
            let p = probe.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(node) = &p.node {
                let (r, purged) = {
                    let sm = node.sm.read();
                    (sm.set.revision(), sm.set.purged_through())
                };
                let (inc, last, last_purged) = d.seen[i];
                let name = &self.all_nodes[i];
                if inc == p.incarnation && r < last {
                    self.history
                        .violation(format!("{name} went back from revision {last} to {r}"));
                }
                if inc == p.incarnation && purged < last_purged {
                    self.history.violation(format!(
                        "{name}'s purge watermark went back from {last_purged} to {purged}"
                    ));
                }
                // A purge ahead of the true time drops revocations that are still live.
                let truth = EPOCH_SECS as i64 + self.sim.elapsed().as_secs() as i64;
                if purged > truth + 1 && (inc, last_purged) != (p.incarnation, purged) {
                    self.history.violation(format!(
                        "{name} purged through {purged}, {}s ahead of the true time",
                        purged - truth
                    ));
                }
                d.seen[i] = (p.incarnation, r, purged);
            }
        }
    }

    /// Liveness, the final state and the history checked; the run's figures.
    fn report(self, seed: u64, schedule: Vec<Scheduled>, d: Drive, opts: &Options) -> Report {
        let Drive {
            probe_ack,
            converged,
            mut failures,
            leadership,
            ..
        } = d;
        failures.extend(
            leadership
                .disruptive
                .iter()
                .map(|e| format!("pre-vote: a leader a majority kept was deposed: {e}")),
        );
        failures.extend(
            leadership
                .quorum_unnoticed
                .iter()
                .map(|e| format!("check-quorum: {e}")),
        );
        let simulated = self.sim.elapsed();
        let acked = *probe_ack.lock().unwrap_or_else(|e| e.into_inner());
        match acked {
            None => failures.push(format!(
                "liveness: no write acknowledged within {:?} of the heal",
                opts.liveness_within
            )),
            Some(_) if !converged => failures.push(format!(
                "liveness: nodes and replicas did not converge within {:?} of the heal: {}",
                opts.liveness_within,
                describe(&self.probes, &self.replicas)
            )),
            Some(_) => {}
        }
        let history = &self.history;
        let records = history.records();
        if converged {
            let now = self.sim.since_epoch().as_secs() as i64;
            failures.extend(check_final(
                history,
                &self.probes,
                &self.replicas,
                &self.all_nodes,
                &self.replica_names,
                now,
            ));
        }
        failures.extend(check_history(&records, &history.pending()));
        failures.extend(history.violations());
        self.phase.done.store(true, Ordering::Release);
        let crashes = self.disks.iter().fold((0, 0, 0), |(c, l, t), d| {
            let (c2, l2, t2) = d.crash_stats();
            (c + c2, l + l2, t + t2)
        });
        let writes = records
            .iter()
            .filter(|r| matches!(r.answer, Answer::Written { .. }))
            .count();
        let checks = records
            .iter()
            .filter(|r| matches!(r.answer, Answer::Checked { .. }))
            .count();
        Report {
            seed,
            schedule,
            history: history.render(),
            failures,
            ops: (records.len(), writes, checks),
            recovered_after: acked.map(|(ms, _)| Duration::from_millis(ms)),
            crashes,
            simulated,
            elections: (leadership.rounds(), leadership.changes),
            late_depositions: leadership.late_depositions,
            superseded: self
                .probes
                .iter()
                .filter_map(|p| superseded_on(p))
                .max()
                .unwrap_or(0),
        }
    }
}

/// Hosts every node (founders, then spares), each drawing its disk's latency and then its
/// election timeout from `rng`.
fn host_nodes(
    sim: &mut turmoil::Sim<'_>,
    rng: &mut StdRng,
    all_nodes: &[String],
    members: &BTreeMap<u64, String>,
) -> (Vec<Arc<MemDisk>>, Probes) {
    let mut disks = Vec::new();
    let mut probes = Vec::new();
    for (i, name) in all_nodes.iter().enumerate() {
        let id = i as u64 + 1;
        let disk = MemDisk::new(Duration::from_millis(rng.random_range(0..3)));
        let probe: Arc<Mutex<Probe>> = Arc::default();
        let offset = probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clock_offset
            .clone();
        let election_ms = rng.random_range(300..400);
        let (d, p, m) = (disk.clone(), probe.clone(), members.clone());
        sim.host(name.as_str(), move || {
            let (disk, probe, config) = (d.clone(), p.clone(), node_config(id, &m, election_ms));
            let offset = offset.clone();
            async move {
                let incoming = net::incoming().await?;
                let platform = Platform {
                    disk: Some(disk.disk()),
                    dialer: net::dialer(),
                    metrics_listener: None,
                    on_start: Some(Box::new(move |node: &Node| {
                        let mut p = probe.lock().unwrap_or_else(|e| e.into_inner());
                        p.node = Some(node.clone());
                        p.incarnation += 1;
                    })),
                    wall: Some(Arc::new(move || workload::sim_wall(&offset))),
                    ..Platform::default()
                };
                revokd::run_on(config, platform, incoming, std::future::pending()).await?;
                Ok(())
            }
        });
        disks.push(disk);
        probes.push(probe);
    }
    (disks, probes)
}

/// Starts the writers, the checker and the replicas (in that order); returns the replicas'
/// slots.
fn start_clients(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    opts: &Options,
    replica_names: &[String],
    endpoints: &[String],
    history: &History,
    phase: &Phase,
) -> ReplicaSlots {
    for w in 0..opts.writers {
        let name = format!("w{}", w + 1);
        sim.client(
            name.as_str(),
            workload::writer(
                name.clone(),
                seed.wrapping_mul(31).wrapping_add(w as u64),
                endpoints.to_vec(),
                history.clone(),
                phase.clone(),
            ),
        );
    }
    sim.client(
        "c1",
        workload::checker(
            "c1".into(),
            seed.wrapping_mul(37),
            endpoints.to_vec(),
            history.clone(),
            phase.clone(),
        ),
    );
    let mut replicas: ReplicaSlots = Vec::new();
    for name in replica_names {
        let slot: Arc<Mutex<Option<Replica>>> = Arc::default();
        sim.client(
            name.as_str(),
            workload::replica(
                name.clone(),
                endpoints.to_vec(),
                history.clone(),
                phase.clone(),
                slot.clone(),
            ),
        );
        replicas.push(slot);
    }
    replicas
}

impl World<'_> {
    /// Starts (`on`) or ends a fault. One arm per kind of fault, on and off side by side: a
    /// table read as a whole, longer than most functions because there are that many faults.
    fn apply(&mut self, fault: &Fault, on: bool) {
        let others =
            |n: &str| -> Vec<String> { self.hosts.iter().filter(|x| *x != n).cloned().collect() };
        match fault {
            Fault::Partition(a, b) => {
                if on {
                    self.sim.hold(a.as_str(), b.as_str())
                } else {
                    self.sim.release(a.as_str(), b.as_str())
                }
            }
            Fault::OneWay(a, b) => {
                if on {
                    self.sim.partition_oneway(a.as_str(), b.as_str())
                } else {
                    self.sim.repair_oneway(a.as_str(), b.as_str())
                }
            }
            Fault::Isolate(n) => {
                for o in others(n) {
                    if on {
                        self.sim.hold(n.as_str(), o.as_str())
                    } else {
                        self.sim.release(n.as_str(), o.as_str())
                    }
                }
            }
            Fault::Loss(a, b) => {
                if on {
                    self.sim.partition(a.as_str(), b.as_str())
                } else {
                    self.sim.repair(a.as_str(), b.as_str())
                }
            }
            Fault::Latency(a, b, d) => {
                let d = if on { *d } else { Duration::from_millis(1) };
                self.sim.set_link_latency(a.as_str(), b.as_str(), d);
            }
            Fault::Crash(n, tear) => {
                if on {
                    // The runtime drops the node's tasks in the order of tokio's task ids, which
                    // are global to the process: cut the node off first, so that what its dying
                    // sockets send is lost in the same way whatever ran before in this process.
                    for o in others(n) {
                        self.sim.partition(n.as_str(), o.as_str());
                    }
                    self.sim.crash(n.as_str());
                    for o in others(n) {
                        self.sim.repair(n.as_str(), o.as_str());
                    }
                    if let Some(i) = self.names.iter().position(|x| x == n) {
                        match tear {
                            Some(per_mille) => self.disks[i].crash_torn(*per_mille),
                            None => self.disks[i].crash(),
                        };
                    }
                } else {
                    self.sim.bounce(n.as_str());
                }
            }
            Fault::Grow => {
                let change = if on {
                    workload::Change::Grow(
                        self.membership.founders.clone(),
                        self.membership.spares.clone(),
                    )
                } else {
                    workload::Change::Shrink(self.membership.founders.clone())
                };
                self.membership
                    .queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(change);
            }
            Fault::ClockJump(n, secs) => {
                if let Some(i) = self.all_nodes.iter().position(|x| x == n) {
                    let p = self.probes[i].lock().unwrap_or_else(|e| e.into_inner());
                    p.clock_offset
                        .store(if on { *secs } else { 0 }, Ordering::Relaxed);
                }
            }
            Fault::DisconnectReplica(r) => {
                for n in &self.names {
                    if on {
                        self.sim.hold(r.as_str(), n.as_str())
                    } else {
                        self.sim.release(r.as_str(), n.as_str())
                    }
                }
            }
        }
    }
}

fn node_state(probe: &Mutex<Probe>) -> Option<(u64, u32)> {
    let p = probe.lock().unwrap_or_else(|e| e.into_inner());
    let node = p.node.as_ref()?;
    let sm = node.sm.read();
    Some((sm.set.revision(), sm.set.digest()))
}

/// How many write items a running node skipped as superseded.
fn superseded_on(probe: &Mutex<Probe>) -> Option<u64> {
    let p = probe.lock().unwrap_or_else(|e| e.into_inner());
    Some(p.node.as_ref()?.sm.superseded())
}

fn replica_of(slot: &Mutex<Option<Replica>>) -> Option<Replica> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The members (voters and learners) as the most advanced node knows them, as indexes into
/// `probes`.
fn members(probes: &[Arc<Mutex<Probe>>]) -> Vec<usize> {
    let mut best: Option<(u64, Vec<usize>)> = None;
    for p in probes {
        let p = p.lock().unwrap_or_else(|e| e.into_inner());
        let Some(node) = &p.node else { continue };
        let revision = node.sm.read().set.revision();
        if best.as_ref().is_some_and(|(r, _)| *r >= revision) {
            continue;
        }
        let m = node.raft.metrics().borrow().membership_config.clone();
        let ids: Vec<usize> = m
            .membership()
            .nodes()
            .map(|(id, _)| *id as usize - 1)
            .filter(|i| *i < probes.len())
            .collect();
        best = Some((revision, ids));
    }
    best.map(|(_, ids)| ids).unwrap_or_default()
}

/// Every member at one revision (at least `revision`) with one digest, and every replica at
/// it.
fn is_converged(
    probes: &[Arc<Mutex<Probe>>],
    replicas: &[Arc<Mutex<Option<Replica>>>],
    revision: u64,
) -> bool {
    let members = members(probes);
    if members.is_empty() {
        return false;
    }
    let states: Vec<Option<(u64, u32)>> = members.iter().map(|i| node_state(&probes[*i])).collect();
    let Some(Some(first)) = states.first().cloned() else {
        return false;
    };
    first.0 >= revision
        && states.iter().all(|s| *s == Some(first))
        && replicas
            .iter()
            .all(|r| replica_of(r).is_some_and(|r| r.revision() == first.0))
}

fn describe(probes: &[Arc<Mutex<Probe>>], replicas: &[Arc<Mutex<Option<Replica>>>]) -> String {
    let nodes: Vec<String> = probes
        .iter()
        .map(|p| format!("{:?}", node_state(p)))
        .collect();
    let reps: Vec<String> = replicas
        .iter()
        .map(|r| format!("{:?}", replica_of(r).map(|r| r.revision())))
        .collect();
    format!("nodes (revision, digest) {nodes:?}, replicas {reps:?}")
}

/// What the acknowledged writes say the end state must be: per token id and per rule subject,
/// `Some(true)` present, `Some(false)` absent, `None` either (an outcome unknown, or an
/// expiry); and every key anyone asked for (rules as `rule:<subject>`).
#[derive(Default)]
struct Expected {
    tokens: BTreeMap<String, Option<bool>>,
    rules: BTreeMap<String, Option<bool>>,
    asked: BTreeSet<String>,
}

fn expected(
    records: &[Record],
    invoked: BTreeSet<String>,
    pending: &[Pending],
    now: i64,
) -> Expected {
    let mut e = Expected {
        asked: invoked,
        ..Expected::default()
    };
    // A write with no answer yet may or may not have taken effect, like a failed one (it is
    // invoked after every write its client had answered, so it is the key's last word).
    let answered = records
        .iter()
        .map(|r| (&r.op, matches!(r.answer, Answer::Written { .. })));
    let unanswered = pending.iter().map(|p| (&p.op, false));
    for (op, ok) in answered.chain(unanswered) {
        match op {
            Op::Revoke(k, exp) => {
                // Expired ones may have been purged, or not yet.
                let live = *exp == 0 || *exp > now + 5;
                e.tokens.insert(k.clone(), (ok && live).then_some(true));
            }
            Op::Unrevoke(k) => {
                e.tokens.insert(k.clone(), ok.then_some(false));
            }
            Op::AddRule(k) => {
                e.rules.insert(k.clone(), ok.then_some(true));
            }
            Op::RemoveRule(k) => {
                e.rules.insert(k.clone(), ok.then_some(false));
            }
            Op::Check(_) | Op::Membership(_) => {}
        }
    }
    e
}

/// The final state of every node and replica against the history.
fn check_final(
    history: &History,
    probes: &[Arc<Mutex<Probe>>],
    replicas: &[Arc<Mutex<Option<Replica>>>],
    names: &[String],
    replica_names: &[String],
    now: i64,
) -> Vec<String> {
    let mut out = Vec::new();
    let members = members(probes);
    let expected = expected(
        &history.records(),
        history.invoked(),
        &history.pending(),
        now,
    );
    for &i in &members {
        let p = probes[i].lock().unwrap_or_else(|e| e.into_inner());
        let Some(node) = &p.node else {
            out.push(format!("{} never started", names[i]));
            continue;
        };
        check_node(&names[i], &node.sm.read().set, &expected, &mut out);
    }
    // Replicas hold what the nodes hold.
    let Some(&first) = members.first() else {
        out.push("no members".into());
        return out;
    };
    let reference = probes[first]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .node
        .clone();
    if let Some(node) = reference {
        let sm = node.sm.read();
        for (j, slot) in replicas.iter().enumerate() {
            let Some(rep) = replica_of(slot) else {
                out.push(format!("replica {} never started", replica_names[j]));
                continue;
            };
            check_replica(
                &replica_names[j],
                &rep,
                &sm.set,
                &expected.tokens,
                now,
                &mut out,
            );
        }
    }
    out
}

/// One node's set against the history: every acknowledged write is reflected, and nothing
/// is present that nobody asked for.
fn check_node(name: &str, set: &RevocationSet, expected: &Expected, out: &mut Vec<String>) {
    let Expected {
        tokens,
        rules,
        asked,
    } = expected;
    for (k, want) in tokens {
        let has = set.token(k).is_some();
        if let Some(want) = want {
            if has != *want {
                out.push(format!(
                    "{name}: token {k} present={has}, acknowledged writes say {want}"
                ));
            }
        }
    }
    for (k, want) in rules {
        let has = set.rule(RuleKind::Subject, k).is_some();
        if let Some(want) = want {
            if has != *want {
                out.push(format!(
                    "{name}: rule {k} present={has}, acknowledged writes say {want}"
                ));
            }
        }
    }
    for t in set.tokens() {
        if !asked.contains(t.jti()) {
            out.push(format!(
                "{name}: token {} present, but nobody asked for it",
                t.jti()
            ));
        }
    }
    for r in set.rules() {
        if !asked.contains(&format!("rule:{}", r.value)) {
            out.push(format!(
                "{name}: rule {} present, but nobody asked for it",
                r.value
            ));
        }
    }
}

/// One replica against a node's set: it holds every unexpired token the node holds, none
/// that acknowledged writes removed, and as many rules.
fn check_replica(
    name: &str,
    rep: &Replica,
    set: &RevocationSet,
    tokens: &BTreeMap<String, Option<bool>>,
    now: i64,
    out: &mut Vec<String>,
) {
    for t in set.tokens() {
        if rep.get(t.jti()).is_none() && t.expires_at() > now {
            out.push(format!("replica {name}: missing token {}", t.jti()));
        }
    }
    for (k, want) in tokens {
        if *want == Some(false) && rep.get(k).is_some() {
            out.push(format!("replica {name}: holds unrevoked token {k}"));
        }
    }
    if rep.rule_count() != set.rule_count() {
        out.push(format!(
            "replica {name}: {} rules, the cluster {}",
            rep.rule_count(),
            set.rule_count()
        ));
    }
}

/// Checks on the history alone: linearizable checks, and each client's revisions.
fn check_history(records: &[Record], pending: &[Pending]) -> Vec<String> {
    let mut out = Vec::new();
    for r in records {
        let (Op::Check(k), Answer::Checked { revoked, revision }) = (&r.op, &r.answer) else {
            continue;
        };
        let acked_before = records.iter().any(|w| {
            matches!(&w.op, Op::Revoke(j, _) if j == k)
                && matches!(w.answer, Answer::Written { .. })
                && w.completed_ms < r.invoked_ms
        });
        // An unrevoke invoked before the check answered may have taken effect, answered or
        // not.
        let undone = records
            .iter()
            .any(|w| matches!(&w.op, Op::Unrevoke(j) if j == k) && w.invoked_ms <= r.completed_ms)
            || pending.iter().any(|p| {
                matches!(&p.op, Op::Unrevoke(j) if j == k) && p.invoked_ms <= r.completed_ms
            });
        let asked = records
            .iter()
            .any(|w| matches!(&w.op, Op::Revoke(j, _) if j == k) && w.invoked_ms <= r.completed_ms);
        if acked_before && !undone && !revoked {
            out.push(format!(
                "stale read: {} checked {k} at {}ms (revision {revision}) after its revoke was acknowledged, and was told not revoked",
                r.client, r.invoked_ms
            ));
        }
        if !asked && *revoked {
            out.push(format!(
                "phantom: {} checked {k} at {}ms and was told revoked; nobody had asked",
                r.client, r.invoked_ms
            ));
        }
    }
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for r in records {
        if let Answer::Written { committed, .. } = r.answer {
            let prev = last.entry(r.client.as_str()).or_insert(0);
            if committed < *prev {
                out.push(format!(
                    "{}: a later write was acknowledged at revision {committed}, after one at {prev}",
                    r.client
                ));
            }
            *prev = (*prev).max(committed);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(client: &str, op: Op, invoked_ms: u64, completed_ms: u64, answer: Answer) -> Record {
        Record {
            client: client.into(),
            op,
            invoked_ms,
            completed_ms,
            answer,
        }
    }

    fn ok(revision: u64) -> Answer {
        Answer::Written {
            revision,
            committed: revision,
        }
    }

    const LATER: i64 = EPOCH_SECS as i64 + 86_400;

    fn pending_unrevoke(jti: &str, invoked_ms: u64) -> Vec<Pending> {
        vec![Pending {
            client: "w1".into(),
            op: Op::Unrevoke(jti.into()),
            invoked_ms,
        }]
    }

    #[test]
    fn an_acknowledged_write_is_the_final_word_unless_a_later_one_is_unanswered() {
        let records = vec![
            rec("w1", Op::Revoke("a".into(), LATER), 0, 10, ok(1)),
            rec("w1", Op::Revoke("b".into(), LATER), 10, 20, ok(2)),
            rec("w1", Op::Unrevoke("b".into()), 20, 30, ok(3)),
            rec(
                "w1",
                Op::Revoke("c".into(), LATER),
                30,
                40,
                Answer::Failed("unavailable".into()),
            ),
        ];
        let now = EPOCH_SECS as i64;
        let e = expected(&records, BTreeSet::new(), &[], now);
        assert_eq!(e.tokens["a"], Some(true));
        assert_eq!(e.tokens["b"], Some(false));
        assert_eq!(
            e.tokens["c"], None,
            "a failed write may or may not have happened"
        );

        // Seed 423: the unrevoke of "a" was still unanswered when the run ended.
        let pending = pending_unrevoke("a", 50);
        let e = expected(&records, BTreeSet::new(), &pending, now);
        assert_eq!(e.tokens["a"], None);
        assert_eq!(e.tokens["b"], Some(false));
    }

    #[test]
    fn a_check_after_an_acknowledgement_must_see_it_unless_an_unrevoke_was_invoked() {
        let revoke = rec("w1", Op::Revoke("a".into(), LATER), 0, 10, ok(1));
        let stale = rec(
            "c1",
            Op::Check("a".into()),
            20,
            30,
            Answer::Checked {
                revoked: false,
                revision: 1,
            },
        );
        let failures = check_history(&[revoke.clone(), stale.clone()], &[]);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("stale read"), "{failures:?}");

        let pending = pending_unrevoke("a", 25);
        assert!(check_history(&[revoke.clone(), stale.clone()], &pending).is_empty());
        // An unrevoke invoked only after the check answered excuses nothing.
        let late = pending_unrevoke("a", 31);
        assert_eq!(check_history(&[revoke, stale], &late).len(), 1);
    }

    #[test]
    fn a_revoked_answer_for_an_id_nobody_wrote_is_a_phantom() {
        let phantom = rec(
            "c1",
            Op::Check("ghost-1".into()),
            0,
            10,
            Answer::Checked {
                revoked: true,
                revision: 3,
            },
        );
        let failures = check_history(&[phantom], &[]);
        assert!(
            failures.len() == 1 && failures[0].starts_with("phantom"),
            "{failures:?}"
        );
    }

    #[test]
    fn one_clients_acknowledged_revisions_never_go_back() {
        let records = vec![
            rec("w1", Op::Revoke("a".into(), LATER), 0, 10, ok(5)),
            rec("w1", Op::Revoke("b".into(), LATER), 10, 20, ok(4)),
            rec("w2", Op::Revoke("c".into(), LATER), 10, 20, ok(3)),
        ];
        let failures = check_history(&records, &[]);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("w1:"), "{failures:?}");
    }
}
