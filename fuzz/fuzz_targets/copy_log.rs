//! Feeds arbitrary bytes to the copy journal's parser (a file a crash may
//! have torn anywhere): it must return, never panic, and what it accepts
//! must be usable to decide which units are in.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use pgmigrate::copy::copy_log::parse;

fuzz_target!(|data: &[u8]| {
    let journal = parse(&String::from_utf8_lossy(data));
    let last = journal.last_seq();
    let progress: HashMap<usize, u64> = (0..4).map(|i| (i, last / 2)).collect();
    let committed = journal.committed(&progress);
    if let Some(plan) = &journal.plan {
        assert!(plan.len() <= data.len());
    }
    assert!(committed.len() <= data.len());
});
