//! The `drvault` command.

fn main() -> std::process::ExitCode {
    drvault::drvault_main()
}
