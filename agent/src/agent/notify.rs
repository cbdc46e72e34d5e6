//! The systemd notification protocol (sd_notify(3)): datagrams such as `READY=1` sent to the
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honoured only when `$WATCHDOG_PID` is unset
    /// or this process).
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty())
            .and_then(|path| match Self::connect(&path) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("NOTIFY_SOCKET {path:?} is unusable ({e}); systemd will not hear from the agent");
                    None
                }
            });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    fn connect(path: &str) -> std::io::Result<(UnixDatagram, std::os::unix::net::SocketAddr)> {
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(path)?,
        };
        Ok((UnixDatagram::unbound()?, addr))
    }

    /// How often to send `WATCHDOG=1`: half the interval systemd expects, as sd_watchdog_enabled(3) advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Sends one message (newline-separated `KEY=value` lines). Failures are logged, never fatal:
    /// the agent's work does not depend on systemd hearing about it.
    pub fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                tracing::debug!("sd_notify {message:?} failed: {e}");
            }
        }
    }

    pub fn status(&self, text: &str) {
        // One line: a newline would start another assignment.
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }

    /// `RELOADING=1` must carry the monotonic time (systemd's Type=notify-reload protocol).
    pub fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }
}
