//! The protocol core against real Windows traffic recorded by pypsrp's test suite.

use psfleet_tests::{corpus, shared};

#[test]
fn corpus_loads_completely() {
    let Some(dir) = shared::shared_dir("corpus_loads_completely") else {
        return;
    };
    let recordings = corpus::load(&dir);
    let exchanges: usize = recordings.iter().map(|r| r.exchanges.len()).sum();
    assert_eq!(recordings.len(), 60, "recorded files");
    assert!(exchanges > 400, "only {exchanges} exchanges loaded");
    let faults = recordings
        .iter()
        .flat_map(|r| &r.exchanges)
        .filter(|e| e.transport_error.as_ref().is_some_and(|t| t.code == 500))
        .count();
    assert_eq!(faults, 8, "exchanges annotated as HTTP 500 faults");
}
