//! A run's figures and verdicts: computed from the history, written as JSON (`report.json`),
//! Markdown (`report.md`) and a timeline picture (`timeline.svg`: faults, leader changes,
//! write throughput and propagation delay per region over time).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use crate::check::{Verdict, Verdicts};
use crate::faults::Schedule;
use crate::history::{Event, History, Record};
use crate::options::RunOptions;

/// A timeline panel's drawing area.
type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;

/// A timeline panel: seconds across, the panel's measure up.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A fault on the timeline: from, to (s) and what it was.
type Shaded<'e> = (f64, f64, &'e str);

/// Percentiles of a distribution, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Spread {
    /// Samples.
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Spread {
        // Up to an hour, in microseconds, with 3 significant digits.
        let mut h =
            Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        for v in values {
            // Microseconds, so sub-millisecond delays keep their precision.
            h.saturating_record((v * 1000.0).max(0.0) as u64);
        }
        if h.is_empty() {
            return Spread::default();
        }
        Spread {
            samples: h.len(),
            p50_ms: h.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct FaultFigures {
    /// What it was (with the node it hit).
    pub what: String,
    /// When it began (s since the run started).
    pub at_s: f64,
    /// When it was healed.
    pub healed_s: Option<f64>,
    /// From the fault (in effect) to the acknowledgement of a probe write sent right after
    /// it, through a client that reaches every node directly.
    pub failover_ms: Option<f64>,
}

/// Everything a run measured and concluded.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario.
    pub scenario: String,
    /// The topology.
    pub topology: String,
    /// Where nodes ran: `process` or `docker`.
    pub backend: String,
    /// The seed.
    pub seed: u64,
    /// The schedule that ran.
    pub schedule: Schedule,
    /// Run time, in seconds.
    pub duration_s: f64,
    /// Revokes sent.
    pub revokes_attempted: usize,
    /// Revokes acknowledged.
    pub revokes_acknowledged: usize,
    /// Acknowledged revokes missing anywhere at the end (must be 0).
    pub revokes_lost: usize,
    /// Failed writes by kind (their outcome is unknown: present or not, both are allowed).
    pub write_errors: BTreeMap<String, u64>,
    /// Send to acknowledgement.
    pub write_latency: Spread,
    /// Each fault with its failover time.
    pub faults: Vec<FaultFigures>,
    /// Total time no leader had a majority's agreement, in ms.
    pub leaderless_ms: f64,
    /// The longest such stretch, in ms.
    pub longest_leaderless_ms: f64,
    /// Leader changes seen.
    pub leader_changes: usize,
    /// Leader changes on heal: a fault healed while a majority had agreed on one leader
    /// for [`KEPT_BEFORE_HEAL_MS`], and another leader had a majority's agreement within
    /// [`HEAL_WINDOW_MS`] after (before the next fault). Pre-vote's goal is none.
    pub leader_changes_on_heal: Vec<String>,
    /// Acknowledgement to visibility in replicas, per region.
    pub propagation: BTreeMap<String, Spread>,
    /// Worst staleness per replica, in ms.
    pub staleness_peak_ms: BTreeMap<String, f64>,
    /// Replicas that followed the cluster.
    pub replicas: Vec<String>,
    /// Linearizable checks answered.
    pub checks: u64,
    /// Linearizable checks that failed (unavailable during a fault).
    pub check_errors: u64,
    /// The invariants.
    pub verdicts: Verdicts,
    #[serde(skip)]
    events: Vec<Event>,
    #[serde(skip)]
    throughput: Vec<(f64, f64)>,
    #[serde(skip)]
    sightings: BTreeMap<String, Vec<(f64, f64)>>,
    #[serde(skip)]
    leaders: Vec<(f64, Option<u64>)>,
}

fn leaderless(samples: &[(f64, Option<u64>)]) -> (f64, f64) {
    let (mut total, mut longest, mut run) = (0.0f64, 0.0f64, 0.0f64);
    for w in samples.windows(2) {
        if w[0].1.is_none() {
            let d = w[1].0 - w[0].0;
            total += d;
            run += d;
            longest = longest.max(run);
        } else {
            run = 0.0;
        }
    }
    (total, longest)
}

/// Each fault on the timeline, with when it healed and its failover time.
fn fault_figures(events: &[Event]) -> Vec<FaultFigures> {
    events
        .iter()
        .filter(|e| e.kind == "fault")
        .map(|e| FaultFigures {
            what: e.what.clone(),
            at_s: e.at_ms / 1000.0,
            healed_s: e.end_ms.map(|m| m / 1000.0),
            failover_ms: e.failover_ms,
        })
        .collect()
}

/// Replica sightings per region, as (acknowledged at, in s; delay, in ms).
fn sightings_by_region(r: &Record) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut by_region: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in &r.sightings {
        by_region
            .entry(s.region.clone())
            .or_default()
            .push((s.ack_ms / 1000.0, s.delay_ms));
    }
    by_region
}

/// Acknowledged revokes missing at the end, from the durability verdict.
fn lost(verdicts: &[Verdict]) -> usize {
    verdicts
        .iter()
        .find(|v| v.invariant.starts_with("every acknowledged revoke"))
        .map(|v| {
            // A lost id counts once, however many nodes miss it.
            let mut ids: Vec<&str> = v
                .examples
                .iter()
                .filter_map(|e| e.split(' ').next())
                .collect();
            ids.dedup();
            if v.violations > v.examples.len() {
                v.violations
            } else {
                ids.len()
            }
        })
        .unwrap_or(0)
}

/// Acknowledged writes per second, in half-second buckets up to `now_ms`.
fn throughput(r: &Record, now_ms: f64) -> Vec<(f64, f64)> {
    let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
    for a in &r.acks {
        *buckets.entry((a.ack_ms / 500.0) as u64).or_default() += 1;
    }
    let last = (now_ms / 500.0) as u64;
    (0..=last)
        .map(|b| (b as f64 / 2.0, *buckets.get(&b).unwrap_or(&0) as f64 * 2.0))
        .collect()
}

/// How long before a heal a majority must have agreed on one leader for a change after it
/// to count as a change on heal.
pub const KEPT_BEFORE_HEAL_MS: f64 = 1_000.0;
/// How long after a heal a change of leader counts as caused by it: time for the node that
/// came back to time out twice with the longest timeouts the topologies derive.
pub const HEAL_WINDOW_MS: f64 = 5_000.0;

/// Leader changes on heal (see [`Report::leader_changes_on_heal`]), from the fault events
/// and the leader samples (time, the leader a majority agrees on), described.
fn changes_on_heal(events: &[Event], samples: &[(f64, Option<u64>)]) -> Vec<String> {
    let starts: Vec<f64> = events
        .iter()
        .filter(|e| e.kind == "fault")
        .map(|e| e.at_ms)
        .collect();
    let mut found = Vec::new();
    for fault in events.iter().filter(|e| e.kind == "fault") {
        let Some(healed) = fault.end_ms else {
            continue;
        };
        let until = starts
            .iter()
            .copied()
            .filter(|&t| t > healed)
            .fold(healed + HEAL_WINDOW_MS, f64::min);
        let before: Vec<Option<u64>> = samples
            .iter()
            .filter(|(t, _)| (healed - KEPT_BEFORE_HEAL_MS..=healed).contains(t))
            .map(|(_, l)| *l)
            .collect();
        let Some(&Some(kept)) = before.first() else {
            continue;
        };
        if before.iter().any(|l| *l != Some(kept)) {
            continue;
        }
        let next = samples
            .iter()
            .filter(|(t, _)| *t > healed && *t <= until)
            .find_map(|(t, l)| l.filter(|l| *l != kept).map(|l| (*t, l)));
        if let Some((at, leader)) = next {
            found.push(format!(
                "{}: node {kept} led a majority at the heal ({:.1} s); node {leader} led {:.0} ms later",
                fault.what,
                healed / 1000.0,
                at - healed
            ));
        }
    }
    found
}

/// Leader changes: every "leader is" event after the first.
fn leader_changes(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| e.kind == "leader" && e.what.starts_with("leader is"))
        .count()
        .saturating_sub(1)
}

impl Report {
    /// Computes the figures.
    pub fn build(
        opts: &RunOptions,
        history: &History,
        verdicts: Verdicts,
        replicas: Vec<String>,
    ) -> Report {
        let duration_s = history.now_ms() / 1000.0;
        history.with(|r: &mut Record| {
            let (leaderless_ms, longest_leaderless_ms) = leaderless(&r.leader_samples);
            let by_region = sightings_by_region(r);
            let propagation = by_region
                .iter()
                .map(|(k, v)| (k.clone(), Spread::of(v.iter().map(|p| p.1))))
                .collect();
            Report {
                scenario: opts.schedule.name.clone(),
                topology: opts.topology.name.clone(),
                backend: match opts.backend {
                    crate::cluster::Backend::Process => "process".into(),
                    crate::cluster::Backend::Docker { .. } => "docker".into(),
                },
                seed: opts.seed,
                schedule: opts.schedule.clone(),
                duration_s,
                revokes_attempted: r.attempted.len(),
                revokes_acknowledged: r.acks.len(),
                revokes_lost: lost(&verdicts),
                write_errors: r.write_errors.clone(),
                write_latency: Spread::of(r.acks.iter().map(|a| a.ack_ms - a.sent_ms)),
                faults: fault_figures(&r.events),
                leaderless_ms,
                longest_leaderless_ms,
                leader_changes: leader_changes(&r.events),
                leader_changes_on_heal: changes_on_heal(&r.events, &r.leader_samples),
                propagation,
                staleness_peak_ms: r.staleness_peak_ms.clone(),
                replicas,
                checks: r.checks,
                check_errors: r.check_errors,
                verdicts,
                events: r.events.clone(),
                throughput: throughput(r, history.now_ms()),
                sightings: by_region,
                leaders: r.leader_samples.clone(),
            }
        })
    }

    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.held)
    }

    /// Writes `report.json`, `report.md` and `timeline.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        self.timeline(&dir.join("timeline.svg"))
            .context("drawing timeline.svg")?;
        Ok(())
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(
            m,
            "# Chaos run: {} on {} ({} backend, seed {})\n",
            self.scenario, self.topology, self.backend, self.seed
        );
        let _ = writeln!(
            m,
            "**{}** in {:.1} s. Timeline: `timeline.svg`; every figure: `report.json`.\n",
            if self.passed() {
                "Every invariant held"
            } else {
                "INVARIANTS BROKEN"
            },
            self.duration_s
        );
        self.figures_md(&mut m);
        self.propagation_md(&mut m);
        self.faults_md(&mut m);
        self.invariants_md(&mut m);
        m
    }

    /// The table of headline figures.
    fn figures_md(&self, m: &mut String) {
        let _ = writeln!(m, "| Figure | Value |\n|---|---|");
        let _ = writeln!(
            m,
            "| revokes acknowledged | {} |",
            self.revokes_acknowledged
        );
        let _ = writeln!(m, "| revokes lost | {} |", self.revokes_lost);
        let _ = writeln!(
            m,
            "| revokes failed (outcome unknown) | {} |",
            self.write_errors.values().sum::<u64>()
        );
        let _ = writeln!(
            m,
            "| write latency p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
            self.write_latency.p50_ms, self.write_latency.p99_ms, self.write_latency.max_ms
        );
        let _ = writeln!(
            m,
            "| time without a leader (total / longest) | {:.0} / {:.0} ms |",
            self.leaderless_ms, self.longest_leaderless_ms
        );
        let _ = writeln!(m, "| leader changes | {} |", self.leader_changes);
        let _ = writeln!(
            m,
            "| leader changes on heal (a majority had kept its leader) | {} |",
            self.leader_changes_on_heal.len()
        );
        let _ = writeln!(
            m,
            "| linearizable checks (failed during faults) | {} ({}) |",
            self.checks, self.check_errors
        );
        if let Some((name, peak)) = self
            .staleness_peak_ms
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
        {
            let _ = writeln!(m, "| worst replica staleness | {peak:.0} ms ({name}) |");
        }
    }

    /// Propagation delay per region.
    fn propagation_md(&self, m: &mut String) {
        let _ = writeln!(
            m,
            "\n## Propagation (acknowledged to visible in the replica)\n\n| Region | Samples | p50 | p99 | max |\n|---|---|---|---|---|"
        );
        for (region, s) in &self.propagation {
            let _ = writeln!(
                m,
                "| {region} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
                s.samples, s.p50_ms, s.p99_ms, s.max_ms
            );
        }
    }

    /// Each fault with its failover time.
    fn faults_md(&self, m: &mut String) {
        let _ = writeln!(
            m,
            "\n## Faults\n\n| At | Fault | Healed | Failover (fault to the acknowledgement of a write sent right after it) |\n|---|---|---|---|"
        );
        for f in &self.faults {
            let _ = writeln!(
                m,
                "| {:.1} s | {} | {} | {} |",
                f.at_s,
                f.what,
                f.healed_s
                    .map(|h| format!("{h:.1} s"))
                    .unwrap_or_else(|| "-".into()),
                f.failover_ms
                    .map(|v| format!("{v:.0} ms"))
                    .unwrap_or_else(|| "no write after it".into())
            );
        }
    }

    /// Each invariant, with examples of what broke it.
    fn invariants_md(&self, m: &mut String) {
        let _ = writeln!(m, "\n## Invariants\n");
        for v in &self.verdicts {
            let _ = writeln!(
                m,
                "- {} {}{}",
                if v.held { "held:" } else { "BROKEN:" },
                v.invariant,
                if v.held {
                    String::new()
                } else {
                    format!(" ({} violations)", v.violations)
                }
            );
            for e in &v.examples {
                let _ = writeln!(m, "  - {e}");
            }
        }
    }

    /// Draws the timeline: throughput, propagation delay per region and the leader, with
    /// fault intervals shaded across all three.
    fn timeline(&self, path: &Path) -> Result<()> {
        let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, rest) = root.split_vertically(36);
        title.draw(&Text::new(
            format!(
                "revokd chaos: {} on {} (seed {}) - {}",
                self.scenario,
                self.topology,
                self.seed,
                if self.passed() {
                    "every invariant held"
                } else {
                    "INVARIANTS BROKEN"
                }
            ),
            (12, 10),
            ("sans-serif", 20).into_font(),
        ))?;
        let panels = rest.split_evenly((3, 1));
        let faults: Vec<Shaded<'_>> = self
            .events
            .iter()
            .filter(|e| e.kind == "fault")
            .map(|e| {
                (
                    e.at_ms / 1000.0,
                    e.end_ms.unwrap_or(e.at_ms + 200.0) / 1000.0,
                    e.what.as_str(),
                )
            })
            .collect();
        self.throughput_panel(&panels[0], &faults)?;
        self.propagation_panel(&panels[1], &faults)?;
        self.leader_panel(&panels[2], &faults)?;
        root.present()?;
        Ok(())
    }

    /// One panel of the timeline, time on the x axis up to the run's end, with its mesh
    /// drawn and the faults shaded.
    fn panel<'a, 'b>(
        &self,
        area: &'a Area<'b>,
        caption: &str,
        y_max: f64,
        faults: &[Shaded<'_>],
    ) -> Result<Chart<'a, 'b>> {
        let t_max = self.duration_s.max(1.0);
        let shade = RGBColor(255, 120, 120).mix(0.18).filled();
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
        chart.configure_mesh().x_desc("s").draw()?;
        chart.draw_series(
            faults
                .iter()
                .map(|(a, b, _)| Rectangle::new([(*a, 0.0), (*b, y_max)], shade)),
        )?;
        Ok(chart)
    }

    /// Acknowledged revokes per second, with each fault's name at its start.
    fn throughput_panel(&self, area: &Area<'_>, faults: &[Shaded<'_>]) -> Result<()> {
        let y_max = self.throughput.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
        let mut chart = self.panel(
            area,
            "acknowledged revokes per second (shaded: faults)",
            y_max,
            faults,
        )?;
        chart.draw_series(faults.iter().enumerate().map(|(i, (a, _, what))| {
            let label: String = what.chars().take(48).collect();
            Text::new(
                label,
                (*a, y_max * (0.95 - 0.09 * (i % 4) as f64)),
                ("sans-serif", 11).into_font(),
            )
        }))?;
        chart.draw_series(LineSeries::new(self.throughput.iter().copied(), &BLUE))?;
        Ok(())
    }

    /// Propagation delay per region, one colour each.
    fn propagation_panel(&self, area: &Area<'_>, faults: &[Shaded<'_>]) -> Result<()> {
        let d_max = self
            .sightings
            .values()
            .flatten()
            .map(|p| p.1)
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = self.panel(
            area,
            "propagation delay per region (ms, ack to visible in replica)",
            d_max,
            faults,
        )?;
        for (i, (region, pts)) in self.sightings.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 2, color.filled())))?
                .label(region.as_str())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }

    /// The leader a majority agrees on, as a step line (0 when there is none).
    fn leader_panel(&self, area: &Area<'_>, faults: &[Shaded<'_>]) -> Result<()> {
        let ids = self.leaders.iter().filter_map(|l| l.1).max().unwrap_or(1) as f64 + 0.5;
        let mut chart = self.panel(
            area,
            "leader (node id; 0 = none a majority agrees on)",
            ids,
            faults,
        )?;
        let mut steps = Vec::new();
        for w in self.leaders.windows(2) {
            let v = w[0].1.unwrap_or(0) as f64;
            steps.push((w[0].0 / 1000.0, v));
            steps.push((w[1].0 / 1000.0, v));
        }
        chart.draw_series(LineSeries::new(steps, RED.stroke_width(2)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(at_ms: f64, end_ms: f64) -> Event {
        Event {
            at_ms,
            end_ms: Some(end_ms),
            kind: "fault".into(),
            what: format!("fault at {at_ms}"),
            failover_ms: None,
        }
    }

    /// Samples every 100 ms over `[from, to)`, all naming `leader`.
    fn led(from: f64, to: f64, leader: Option<u64>) -> Vec<(f64, Option<u64>)> {
        (0..)
            .map(|i| from + 100.0 * i as f64)
            .take_while(|t| *t < to)
            .map(|t| (t, leader))
            .collect()
    }

    #[test]
    fn a_change_after_a_heal_counts_only_if_a_majority_kept_one_leader_up_to_it() {
        // The fault heals at 5 s; node 2 led from 3 s; node 1 takes over at 6 s.
        let mut samples = led(0.0, 3_000.0, Some(1));
        samples.extend(led(3_000.0, 6_000.0, Some(2)));
        samples.extend(led(6_000.0, 9_000.0, Some(1)));
        let events = [fault(2_000.0, 5_000.0)];
        let found = changes_on_heal(&events, &samples);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("node 2 led a majority")
                && found[0].contains("node 1 led 1000 ms later")
        );
        // The same change after the window, or after the next fault began, is not the heal's.
        let mut slow = led(0.0, 8_000.0, Some(1));
        slow.extend(led(8_000.0, 9_000.0, Some(2)));
        assert!(changes_on_heal(&[fault(500.0, 2_000.0)], &slow).is_empty());
        let next = [fault(2_000.0, 5_000.0), fault(5_500.0, 7_000.0)];
        assert!(changes_on_heal(&next, &samples).is_empty());
        // No leader a majority agreed on just before the heal: nothing was kept.
        let mut gap = led(0.0, 4_500.0, Some(2));
        gap.extend(led(4_500.0, 5_100.0, None));
        gap.extend(led(5_100.0, 9_000.0, Some(1)));
        assert!(changes_on_heal(&events, &gap).is_empty());
        // The leader kept through the heal: nothing to count.
        assert!(changes_on_heal(&events, &led(0.0, 9_000.0, Some(2))).is_empty());
    }
}
