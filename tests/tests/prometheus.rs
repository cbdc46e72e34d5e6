//! The Prometheus side (packaging/prometheus/): the alerting rules load and their unit tests pass
//! under `promtool`, a real agent's scrape passes `promtool check metrics`, and every series the
//! rules use is one the agent exports. promtool (Debian's `prometheus` package) is installed by
//! scripts/test; a missing one fails the test rather than skipping it.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use drvault_tests::agent::*;
use drvault_tests::Env;

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("packaging/prometheus")
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_alerting_rules_load_and_pass_their_unit_tests() {
    let check = promtool(&["check", "rules", "drvault-alerts.yml"], None);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains("5 rules found"), "{}", text(&check));
    let test = promtool(&["test", "rules", "drvault-alerts.test.yml"], None);
    assert!(test.status.success(), "{}", text(&test));
    // The unit tests really test: a rule that never fires fails them.
    let scratch = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(rules_dir().join("drvault-alerts.yml")).unwrap();
    std::fs::write(
        scratch.path().join("drvault-alerts.yml"),
        rules.replace("drvault_target_up == 0", "drvault_target_up == 2"),
    )
    .unwrap();
    std::fs::copy(
        rules_dir().join("drvault-alerts.test.yml"),
        scratch.path().join("drvault-alerts.test.yml"),
    )
    .unwrap();
    let broken = Command::new("promtool")
        .args(["test", "rules", "drvault-alerts.test.yml"])
        .current_dir(scratch.path())
        .output()
        .unwrap();
    assert!(!broken.status.success(), "{}", text(&broken));
}

/// The `drvault_*` names the rules use.
fn series_in_rules() -> Vec<String> {
    let rules = std::fs::read_to_string(rules_dir().join("drvault-alerts.yml")).unwrap();
    let mut names: Vec<String> = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
        .flat_map(|l| {
            l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("drvault_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn a_real_scrape_passes_promtool_and_holds_every_series_the_rules_use() {
    let env = Env::new();
    env.init();
    let (config, port) = backup_agent_config(&env, "* * * * * *");
    let mut agent = start_agent(&env, &config, None);
    let mut metrics = String::new();
    wait_until(
        "a backup and a target survey are reported",
        Duration::from_secs(90),
        || {
            metrics = std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| http_get(port, "/metrics").1)
                .unwrap_or_default();
            metrics.contains("drvault_rpo_seconds{") && metrics.contains("drvault_target_up{")
        },
    );
    signal(&agent, "TERM");
    wait_exit(&mut agent, Duration::from_secs(60));

    let lint = promtool(&["check", "metrics"], Some(&metrics));
    assert!(lint.status.success(), "{}\n{metrics}", text(&lint));
    let used = series_in_rules();
    assert!(used.len() >= 5, "{used:?}");
    for name in used {
        assert!(
            metrics.contains(&format!("\n{name}{{")) || metrics.contains(&format!("\n{name} ")),
            "the rules use {name}, which the agent does not export:\n{metrics}"
        );
    }
}
