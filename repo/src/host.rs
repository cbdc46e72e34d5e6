//! Who and where this process is, for records others read: lease holders, backup sessions,
//! audit-log actors, drill operators.

/// The host's name (the kernel's nodename).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `user@host`: the login name from the environment, else the numeric uid.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", uid()));
    format!("{user}@{}", hostname())
}

fn uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The kernel's boot and this process's PID namespace (`<boot id>/pid:[inode]`), or empty when
/// either cannot be read. A pid names the same process only for readers with the same value:
/// containers sharing a host name but not a PID namespace differ here.
pub fn pid_scope() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_string())
        .unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if boot.is_empty() || ns.is_empty() {
        return String::new();
    }
    format!("{boot}/{ns}")
}

/// True only when `pid` of `host` in `scope` is known not to exist: the same host name, the
/// same boot and PID namespace as this process, and the kernel says no such process.
pub fn is_known_dead(host: &str, scope: &str, pid: u32) -> bool {
    if scope.is_empty() || host != hostname() || scope != pid_scope() {
        return false;
    }
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // Asked of the kernel (signal 0), not of /proc: under systemd's ProtectProc=invisible the
    // agent cannot see other users' processes there. EPERM means it exists.
    matches!(
        rustix::process::test_kill_process(pid),
        Err(e) if e == rustix::io::Errno::SRCH
    )
}
