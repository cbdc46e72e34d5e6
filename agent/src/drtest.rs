//! The `drtest` command: restore drills with RTO/RPO evidence.

fn main() -> std::process::ExitCode {
    drvault::drtest_main()
}
