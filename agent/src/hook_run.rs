//! One hook's run as the job history keeps it: when it ran (`Phase`) and how it went. The
//! hooks module makes these, the history stores them; neither needs the other for it.

use serde::Serialize;

use drvault_drill::validate::Validation;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Before,
    After,
    OnFailure,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::After => "after",
            Phase::OnFailure => "on_failure",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "before" => Some(Phase::Before),
            "after" => Some(Phase::After),
            "on_failure" => Some(Phase::OnFailure),
            _ => None,
        }
    }
}

/// One hook's run, as the job history keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct HookRun {
    pub phase: Phase,
    #[serde(flatten)]
    pub run: Validation,
}

impl HookRun {
    pub fn passed(&self) -> bool {
        self.run.passed()
    }

    /// "before hook `cmd` exited with 3: <last line of output>".
    pub fn failure(&self) -> String {
        let how = if self.run.timed_out {
            "timed out".to_string()
        } else {
            match self.run.exit_code {
                Some(code) => format!("exited with {code}"),
                None => "was killed".to_string(),
            }
        };
        let last = self
            .run
            .output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default();
        format!(
            "{} hook `{}` {how}{last}",
            self.phase.as_str(),
            self.run.command
        )
    }
}
