//! The systemd notification protocol (`sd_notify(3)`): `READY=1` once the
//! listeners are up, `RELOADING=1` … `READY=1` around a reload,
//! `STOPPING=1` when a drain starts, `STATUS=` for `systemctl status`, and
//! `WATCHDOG=1` every half of `WATCHDOG_USEC` when the unit has
//! `WatchdogSec=`.
//!
//! The protocol is one datagram per message on the unix socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). Outside
//! systemd the variable is unset and every call does nothing. A send that
//! fails is logged at `debug` and otherwise ignored: a notification is
//! advice to the service manager, never a reason to stop.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go; `None` outside systemd.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the
    /// watchdog is ours only when `WATCHDOG_PID` is unset or our pid).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let addr = socket_addr(path.to_str()?)?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// Whether a service manager listens.
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Send `state` (newline-separated `KEY=value` lines).
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    /// How often to send `WATCHDOG=1`: half the manager's timeout, as
    /// `sd_watchdog_enabled(3)` advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.is_enabled()).map(|w| w / 2)
    }
}

/// `NOTIFY_SOCKET`'s value as an address: `@name` is abstract (Linux).
fn socket_addr(path: &str) -> Option<std::os::unix::net::SocketAddr> {
    if let Some(name) = path.strip_prefix('@') {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::linux::net::SocketAddrExt;
            return std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok();
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = name;
            return None;
        }
    }
    std::os::unix::net::SocketAddr::from_pathname(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_as_one_datagram_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let addr = socket_addr(path.to_str().expect("utf-8")).expect("addr");
        let n = Notifier { socket: Some((UnixDatagram::unbound().expect("socket"), addr)), watchdog: None };
        n.notify("READY=1\nSTATUS=serving");
        n.notify("STOPPING=1");
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
        let len = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_there_is_no_watchdog() {
        let n = Notifier { socket: None, watchdog: Some(Duration::from_secs(10)) };
        n.notify("READY=1");
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn abstract_names_are_understood() {
        assert!(socket_addr("@umproxy-test").is_some());
    }
}
