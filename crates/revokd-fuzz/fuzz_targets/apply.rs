//! State machine apply: any sequence of commands (as a log entry would carry them, postcard
//! encoded) applies without panicking, revisions never go backwards, two replicas applying
//! the same log agree, and a snapshot taken at the end restores the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revokd_core::{Command, RevocationSet};

fuzz_target!(|data: &[u8]| {
    // Each chunk between 0xFF bytes is one log entry.
    let commands: Vec<Command> = data
        .split(|b| *b == 0xFF)
        .filter_map(|chunk| postcard::from_bytes(chunk).ok())
        .collect();
    let (mut a, mut b) = (RevocationSet::new(), RevocationSet::new());
    for (i, cmd) in commands.iter().enumerate() {
        let revision = i as u64 + 1;
        let (applied_a, changes_a) = a.apply(revision, cmd);
        let (applied_b, changes_b) = b.apply(revision, cmd);
        assert_eq!(applied_a, applied_b);
        assert_eq!(changes_a, changes_b);
        assert_eq!(a.revision(), revision);
    }
    assert_eq!(a.digest(), b.digest());
    let restored = RevocationSet::decode_snapshot(&a.encode_snapshot()).expect("own snapshot");
    assert_eq!(restored.digest(), a.digest());
});
