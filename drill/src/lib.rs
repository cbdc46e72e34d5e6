//! Restore drills, as a library the `drtest` binary and the agent's drill jobs both call: open
//! the repository through the targets that survive a scenario, select the snapshot a plan names,
//! restore it into a scratch directory verifying every byte, run the plan's validation commands,
//! measure RTO and RPO against the objectives, and record the evidence in the audit log.

mod engine;
pub mod report;
pub mod validate;

pub use engine::{run, DrillRecord, OpenSurviving, Phases, Plan, Surroundings};

use drvault_repo::Repository;

/// Appends a drill's record to the repository's audit log (`drill.run`, its result `ok` or
/// `failed: <reason>`); returns the entry's sequence number.
pub async fn record(repo: &Repository, record: &DrillRecord) -> drvault_repo::Result<u64> {
    let evidence = serde_json::to_value(record)
        .map_err(|e| drvault_repo::Error::Internal(format!("drill record: {e}")))?;
    let result = if record.passed {
        "ok".to_string()
    } else {
        format!("failed: {}", record.reason)
    };
    repo.audit()
        .append("drill.run", evidence, &result)
        .await
        .map(|e| e.seq)
}

#[cfg(test)]
mod tests;
