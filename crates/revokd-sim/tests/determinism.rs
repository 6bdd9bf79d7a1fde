//! The simulation is deterministic: one seed gives the same history byte for byte, run twice
//! in a row or with another seed in between (state left in the process by an earlier run,
//! such as tokio's global task ids, must not leak into a later one).

use revokd_sim::{run, Options};

// Seed 90 after seed 89 is the regression for the one leak found so far: a crashed node's
// tasks are dropped in the order of tokio's process-wide task ids, and the messages its dying
// sockets sent made seed 90's history depend on what ran before it (the driver now cuts a node
// off before crashing it).
#[test]
fn the_same_seed_gives_the_same_history() {
    let opts = Options::default();
    for (seed, other) in [(3, 90), (90, 89), (11, 4)] {
        let a = run(seed, &opts);
        let again = run(seed, &opts);
        let _ = run(other, &opts);
        let after_other = run(seed, &opts);
        assert!(
            a.history.lines().count() > 100,
            "a run with a workload:\n{}",
            a.history
        );
        for b in [&again, &after_other] {
            assert_eq!(a.schedule, b.schedule);
            assert!(
                a.history == b.history,
                "seed {seed} diverged:\n--- first\n{}\n--- then\n{}",
                a.history,
                b.history
            );
            assert_eq!(a.failures, b.failures);
        }
    }
}
