//! Snapshot decoding: any bytes (a corrupt or hostile snapshot file, or one received from a
//! peer) decode to an error or to a set that encodes back to an equal set. Never a panic.
//! Half the inputs get a valid header and checksum around them, so the body decoder behind
//! the checksum is fuzzed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revokd_core::RevocationSet;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        // Magic and version as the encoder writes them, then length and checksum of `rest`.
        let mut b = RevocationSet::new().encode_snapshot()[..8].to_vec();
        b.extend_from_slice(&(rest.len() as u64).to_le_bytes());
        b.extend_from_slice(&crc32(rest).to_le_bytes());
        b.extend_from_slice(rest);
        b
    } else {
        rest.to_vec()
    };
    if let Ok(set) = RevocationSet::decode_snapshot(&bytes) {
        let again = set.encode_snapshot();
        let back = RevocationSet::decode_snapshot(&again).expect("a re-encoded snapshot decodes");
        assert_eq!(back.digest(), set.digest());
        assert_eq!(back.revision(), set.revision());
    }
});

fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}
