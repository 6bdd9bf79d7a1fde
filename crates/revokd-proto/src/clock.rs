//! The wall clock (unix seconds) nodes and clients read: the system clock, or one the embedder
//! installs once for the whole process with [`use_clock`] (the deterministic simulation runs
//! every node and client on its simulated clock).

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

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
