//! The wall clock (unix seconds) nodes and clients read: the system clock, or one the embedder
//! installs once for the whole process with [`use_clock`] (the deterministic simulation runs
//! every node and client on its simulated clock); and a node's [`Clock`], which a stepped wall
//! clock does not move.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static CLOCK: OnceLock<fn() -> i64> = OnceLock::new();

/// Makes every node and client in this process read `clock` instead of the system clock;
/// the first call wins.
pub fn use_clock(clock: fn() -> i64) {
    let _ = CLOCK.set(clock);
}

/// The current unix time in seconds.
pub fn unix_now() -> i64 {
    if let Some(clock) = CLOCK.get() {
        return clock();
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Where a [`Clock`] reads the wall time: the time since the unix epoch.
pub type WallSource = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The wall source every process has: the clock [`use_clock`] installed, else the system
/// clock.
pub fn system_wall() -> WallSource {
    Arc::new(|| match CLOCK.get() {
        Some(clock) => Duration::from_secs(clock().max(0) as u64),
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    })
}

/// How far the wall clock may drift from the kept time before it counts as stepped.
pub const STEP_TOLERANCE: Duration = Duration::from_secs(1);

/// A node's clock: the wall time read once, when it is made, and kept from then on by the
/// monotonic clock (tokio's, which the simulation drives). A wall clock stepped later (an
/// operator's `date -s`, an NTP step, a VM restored from a snapshot) does not move it: a
/// leader whose clock jumped a day ahead would otherwise purge revocations a day early, and
/// one stepped back would stamp rules in the past. Timers never read the wall clock, so a
/// step cannot make them fire in a burst either.
///
/// [`Clock::step_secs`] compares the wall clock with the kept time; after fixing a clock, restart
/// the node to take the new time. What this cannot see is a clock that was already wrong
/// when the node started: start revokd after time sync (systemd's `time-sync.target`).
pub struct Clock {
    source: WallSource,
    started_wall: Duration,
    started: tokio::time::Instant,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("started_wall", &self.started_wall)
            .finish()
    }
}

impl Clock {
    /// A clock kept from `source`'s time now.
    pub fn new(source: WallSource) -> Clock {
        let started_wall = source();
        Clock {
            source,
            started_wall,
            started: tokio::time::Instant::now(),
        }
    }

    /// The kept time since the unix epoch.
    pub fn since_epoch(&self) -> Duration {
        self.started_wall + self.started.elapsed()
    }

    /// The kept time in unix seconds.
    pub fn now(&self) -> i64 {
        self.since_epoch().as_secs() as i64
    }

    /// How far the wall clock is from the kept time now, in seconds (positive: ahead), if by
    /// more than [`STEP_TOLERANCE`]; 0 otherwise.
    pub fn step_secs(&self) -> f64 {
        let kept = self.since_epoch();
        let wall = (self.source)();
        match wall.abs_diff(kept) > STEP_TOLERANCE {
            true if wall > kept => (wall - kept).as_secs_f64(),
            true => -(kept - wall).as_secs_f64(),
            false => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn a_stepped_wall_clock_does_not_move_the_kept_time() {
        // Half a second into a second, so the test's own run time cannot cross one.
        let wall = Arc::new(AtomicU64::new(1_800_000_000_500));
        let read = wall.clone();
        let clock = Clock::new(Arc::new(move || {
            Duration::from_millis(read.load(Ordering::Relaxed))
        }));
        assert_eq!(clock.now(), 1_800_000_000);
        assert_eq!(clock.step_secs(), 0.0);
        // The wall clock jumps a day ahead: the kept time does not.
        wall.fetch_add(86_400_000, Ordering::Relaxed);
        assert_eq!(clock.now(), 1_800_000_000);
        assert!((clock.step_secs() - 86_400.0).abs() < 0.4);
        // ... and back, past where it was: still not.
        wall.fetch_sub(2 * 86_400_000, Ordering::Relaxed);
        assert_eq!(clock.now(), 1_800_000_000);
        assert!((clock.step_secs() + 86_400.0).abs() < 0.4);
        // Drift within the tolerance is not a step.
        wall.fetch_add(86_400_000 + 300, Ordering::Relaxed);
        assert_eq!(clock.step_secs(), 0.0);
    }
}
