//! Time-driven parts of ExUM as sans-IO state machines: `now` always comes
//! in as an argument (STYLE.md), so tests run on a virtual clock.
//!
//! - [`EscapeGuard`]: voice-mail escape (EXUM.md §5, behaviour 13).
//! - [`UmAttemptPlan`]: on-premises UM server failover (EXUM.md §4
//!   [OCEXUM-retry], behaviour 8).
//! - [`HealthTable`]: UM server health from OPTIONS pings.

use crate::exum::model::UmServer;
use sip_message::{HostKind, Uri};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tracing::debug;

/// Default voice-mail escape window (Lync `PSTNVoicemailEscapeTimer`).
pub const DEFAULT_ESCAPE: Duration = Duration::from_millis(1500);
/// How many 3xx redirects (UM Call Router → Mailbox UM) one plan follows.
pub const MAX_REDIRECTS: u8 = 3;

/// Voice-mail escape for one call: a watched branch (mobile / PSTN leg of
/// simultaneous ring) answered within `window` of its INVITE is taken for a
/// carrier voice mail system: the core ends that branch (ACK + BYE) and keeps
/// the others ringing.
#[derive(Debug, Clone)]
pub struct EscapeGuard {
    window: Duration,
    /// Branch number (the core's, per call) → when its INVITE was sent.
    started: Vec<(u32, Instant)>,
}

impl EscapeGuard {
    pub fn new(window: Duration) -> EscapeGuard {
        EscapeGuard { window, started: Vec::new() }
    }

    /// Watch a branch: its INVITE left at `now`.
    pub fn handle_branch_sent(&mut self, branch: u32, now: Instant) {
        self.started.retain(|(b, _)| *b != branch);
        self.started.push((branch, now));
    }

    /// A 2xx arrived on `branch` at `now`: `true` means escape (end the
    /// branch, keep ringing), `false` means a real answer. Unwatched
    /// branches and a zero window never escape.
    #[must_use]
    pub fn handle_answer(&self, branch: u32, now: Instant) -> bool {
        match self.started.iter().find(|(b, _)| *b == branch) {
            Some((_, sent)) if !self.window.is_zero() => now.saturating_duration_since(*sent) < self.window,
            _ => false,
        }
    }
}

/// UM server health from OPTIONS pings. Servers never pinged count as up.
#[derive(Debug, Clone, Default)]
pub struct HealthTable {
    // Keys are dial-plan FQDNs from our own configuration.
    servers: HashMap<String, (bool, Instant)>,
}

impl HealthTable {
    pub fn new() -> HealthTable {
        HealthTable::default()
    }

    /// Record an OPTIONS result (`up` = any response; timeout or transport
    /// error = down). Logged at `debug` on change.
    pub fn mark(&mut self, server: &str, up: bool, now: Instant) {
        let key = server.to_ascii_lowercase();
        let changed = self.servers.get(&key).is_none_or(|(was, _)| *was != up);
        if changed {
            debug!(server = %key, up, "UM server health changed");
            self.servers.insert(key, (up, now));
        }
    }

    pub fn is_up(&self, server: &str) -> bool {
        self.servers.get(&server.to_ascii_lowercase()).is_none_or(|(up, _)| *up)
    }

    /// Every server and whether it is up, for the `umproxy_exum_um_target_health` gauge.
    pub fn iter(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        self.servers.iter().map(|(k, (up, _))| (k.as_str(), *up))
    }
}

/// What the core does next for the INVITE to UM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UmAttempt {
    /// Send the INVITE (new branch) to `server`; if no final response by
    /// `deadline`, call [`UmAttemptPlan::handle_timeout`].
    Send { attempt: u32, server: UmServer, deadline: Instant },
    /// A UM server answered 2xx: the call is in UM's hands.
    Answered,
    /// Every server failed: answer the caller with `status` (480) and log
    /// the failure.
    Failed(UmFailure),
}

/// All UM servers failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmFailure {
    /// The response to the caller: 480 ([OCEXUM-retry]).
    pub status: u16,
    /// Each server tried, in order, with why it failed (`503`, `timeout`,
    /// `transport`, `redirect limit`…), for the log line.
    pub tried: Vec<(String, String)>,
}

impl fmt::Display for UmFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("all UM servers failed:")?;
        for (i, (s, why)) in self.tried.iter().enumerate() {
            write!(f, "{} {s} ({why})", if i == 0 { "" } else { "," })?;
        }
        Ok(())
    }
}

/// The order of UM servers for one INVITE to on-premises UM, and what to do
/// on each result. The core numbers nothing itself: every [`UmAttempt::Send`]
/// carries an `attempt` number, and results for an older attempt are ignored.
#[derive(Debug, Clone)]
pub struct UmAttemptPlan {
    order: Vec<UmServer>,
    next: usize,
    timeout: Duration,
    attempt: u32,
    current: Option<(UmServer, Instant)>,
    redirects: u8,
    tried: Vec<(String, String)>,
    is_done: bool,
}

impl UmAttemptPlan {
    /// Order `servers` (the dial plan's order) skipping those `health` marks
    /// down — unless all are down, then all of them, in order.
    pub fn new(servers: &[UmServer], health: &HealthTable, attempt_timeout: Duration) -> UmAttemptPlan {
        let up: Vec<UmServer> = servers.iter().filter(|s| health.is_up(&s.fqdn)).cloned().collect();
        let order = if up.is_empty() { servers.to_vec() } else { up };
        UmAttemptPlan {
            order,
            next: 0,
            timeout: attempt_timeout,
            attempt: 0,
            current: None,
            redirects: 0,
            tried: Vec::new(),
            is_done: false,
        }
    }

    /// The servers in the order they will be tried.
    pub fn order(&self) -> &[UmServer] {
        &self.order
    }

    /// The first attempt.
    #[must_use]
    pub fn start(&mut self, now: Instant) -> UmAttempt {
        self.advance(now)
    }

    /// When the current attempt times out.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.as_ref().map(|(_, d)| *d)
    }

    /// A final response for `attempt`. `contact` is the first Contact URI of
    /// a 3xx. Provisional responses are not for this method. `None`: stale
    /// attempt, nothing to do.
    #[must_use]
    pub fn handle_response(
        &mut self,
        attempt: u32,
        status: u16,
        contact: Option<&str>,
        now: Instant,
    ) -> Option<UmAttempt> {
        if attempt != self.attempt || self.current.is_none() || self.is_done {
            return None;
        }
        match status {
            200..=299 => {
                self.current = None;
                self.is_done = true;
                Some(UmAttempt::Answered)
            }
            300..=399 => {
                // The UM Call Router redirects to the Mailbox UM service.
                let to = contact.and_then(server_from_contact);
                match to {
                    Some(server) if self.redirects < MAX_REDIRECTS => {
                        self.redirects += 1;
                        self.fail_current(&status.to_string());
                        Some(self.send(server, now))
                    }
                    Some(_) => {
                        self.fail_current("redirect limit");
                        Some(self.advance(now))
                    }
                    None => {
                        self.fail_current(&format!("{status} without usable Contact"));
                        Some(self.advance(now))
                    }
                }
            }
            _ => {
                self.fail_current(&status.to_string());
                Some(self.advance(now))
            }
        }
    }

    /// The attempt timer fired (call at or after [`Self::poll_timeout`]).
    #[must_use]
    pub fn handle_timeout(&mut self, now: Instant) -> Option<UmAttempt> {
        match &self.current {
            Some((_, deadline)) if now >= *deadline => {
                self.fail_current("timeout");
                Some(self.advance(now))
            }
            _ => None,
        }
    }

    /// The INVITE of `attempt` could not be sent (connect, TLS, DNS failure).
    #[must_use]
    pub fn handle_transport_error(&mut self, attempt: u32, now: Instant) -> Option<UmAttempt> {
        if attempt != self.attempt || self.current.is_none() {
            return None;
        }
        self.fail_current("transport");
        Some(self.advance(now))
    }

    fn fail_current(&mut self, why: &str) {
        if let Some((s, _)) = self.current.take() {
            self.tried.push((s.fqdn, why.to_owned()));
        }
    }

    fn send(&mut self, server: UmServer, now: Instant) -> UmAttempt {
        self.attempt = self.attempt.wrapping_add(1);
        let deadline = now + self.timeout;
        self.current = Some((server.clone(), deadline));
        UmAttempt::Send { attempt: self.attempt, server, deadline }
    }

    fn advance(&mut self, now: Instant) -> UmAttempt {
        match self.order.get(self.next).cloned() {
            Some(server) => {
                self.next += 1;
                self.send(server, now)
            }
            None => {
                self.is_done = true;
                UmAttempt::Failed(UmFailure { status: 480, tried: std::mem::take(&mut self.tried) })
            }
        }
    }
}

/// A redirect target: host (FQDN or IP) and port of a Contact URI.
fn server_from_contact(text: &str) -> Option<UmServer> {
    let t = text.trim();
    let t = t.strip_prefix('<').and_then(|r| r.split_once('>')).map(|(u, _)| u).unwrap_or(t);
    let uri = Uri::parse(t.as_bytes())?;
    let host = uri.host().trim_start_matches('[').trim_end_matches(']');
    let ip = match uri.host_kind() {
        HostKind::Ipv4(a) => Some(IpAddr::V4(a)),
        HostKind::Ipv6(a) => Some(IpAddr::V6(a)),
        HostKind::Domain => None,
    };
    let address = ip.zip(uri.port()).map(|(ip, port)| SocketAddr::new(ip, port));
    Some(UmServer { fqdn: host.to_ascii_lowercase(), address, port: uri.port() })
}
