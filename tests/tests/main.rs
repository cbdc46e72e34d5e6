//! The end-to-end suite as one test binary: each file beside this one is a module (one link
//! instead of one per file, and `cargo test` schedules every test of the suite on one pool).
//! Files keep their names, so `scripts/test mount::` runs what tests/tests/mount.rs holds.

mod agent;
mod agent_robustness;
mod audit_fork;
mod cli_errors;
mod closed_output;
mod conformance;
mod database_recipes;
mod debian_package;
mod delete_safety;
mod docs;
mod drills;
mod faults;
mod fleet;
mod fs_snapshot;
mod fuzz_corpus;
mod georedundant;
mod host_keys;
mod hostile;
mod hostile_provider;
mod incident;
mod interleave;
mod key_mistakes;
mod key_slots;
mod keys;
mod layering;
mod local_attacker;
mod mount;
mod packaging;
mod partial_views;
mod postgres;
mod prometheus;
mod prune;
mod ransomware;
mod restore_tools;
mod retention;
mod roundtrip;
mod selecting_snapshots;
mod stream_backup;
