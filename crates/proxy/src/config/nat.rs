//! `[nat]`: NAT traversal for user agents without SIP Outbound
//! ([`crate::nat`]), and the keep-alive pings of their UDP bindings.

use std::time::Duration;

use serde::Deserialize;

use crate::nat::NatMode;

/// `[nat]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// `auto` (default), `always` or `off`.
    pub mode: NatMode,
    /// Time between two OPTIONS pings of a NAT'd UDP binding (±20 %
    /// jitter); zero: no pings.
    pub ping_interval: Duration,
    /// How long a ping waits for any response before it counts as failed.
    pub ping_timeout: Duration,
    /// Consecutive failed pings after which the binding is dropped.
    pub ping_failures: u32,
    /// Pings sent per second at most, over all bindings.
    pub max_pings_per_s: u32,
    /// NAT'd UDP bindings kept alive at most (beyond: not pinged).
    pub max_pinged_bindings: usize,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            mode: NatMode::Auto,
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(5),
            ping_failures: 3,
            max_pings_per_s: 200,
            max_pinged_bindings: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNat {
    mode: String,
    ping_interval_s: u64,
    ping_timeout_ms: u64,
    ping_failures: u32,
    max_pings_per_s: u32,
    max_pinged_bindings: usize,
}

impl Default for RawNat {
    fn default() -> Self {
        let d = NatConfig::default();
        RawNat {
            mode: "auto".into(),
            ping_interval_s: d.ping_interval.as_secs(),
            ping_timeout_ms: d.ping_timeout.as_millis() as u64,
            ping_failures: d.ping_failures,
            max_pings_per_s: d.max_pings_per_s,
            max_pinged_bindings: d.max_pinged_bindings,
        }
    }
}

impl RawNat {
    /// Check the section; the error is the key at fault and what is wrong.
    pub(super) fn validate(self) -> Result<NatConfig, (&'static str, String)> {
        let mode = NatMode::from_name(&self.mode)
            .ok_or(("nat.mode", format!("{:?}: expected \"auto\", \"always\" or \"off\"", self.mode)))?;
        if self.ping_interval_s > 86_400 {
            return Err(("nat.ping_interval_s", "must be at most 86400".into()));
        }
        if !(100..=60_000).contains(&self.ping_timeout_ms) {
            return Err(("nat.ping_timeout_ms", "must be 100..=60000".into()));
        }
        if !(1..=100).contains(&self.ping_failures) {
            return Err(("nat.ping_failures", "must be 1..=100".into()));
        }
        if !(1..=100_000).contains(&self.max_pings_per_s) {
            return Err(("nat.max_pings_per_s", "must be 1..=100000".into()));
        }
        if !(1..=10_000_000).contains(&self.max_pinged_bindings) {
            return Err(("nat.max_pinged_bindings", "must be 1..=10000000".into()));
        }
        Ok(NatConfig {
            mode,
            ping_interval: Duration::from_secs(self.ping_interval_s),
            ping_timeout: Duration::from_millis(self.ping_timeout_ms),
            ping_failures: self.ping_failures,
            max_pings_per_s: self.max_pings_per_s,
            max_pinged_bindings: self.max_pinged_bindings,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, NatConfig};
    use crate::nat::NatMode;

    const MINIMAL: &str =
        "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\n[proxy]\ndomains = [\"example.test\"]\n";

    fn parse(nat: &str) -> Result<Config, String> {
        Config::from_str_named(&format!("{MINIMAL}\n[nat]\n{nat}\n"), "umproxy.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn nat_defaults_to_auto_with_pings_every_thirty_seconds() {
        let c = Config::from_str_named(MINIMAL, "umproxy.toml").unwrap();
        assert_eq!(c.nat, NatConfig::default());
        assert_eq!(c.nat.mode, NatMode::Auto);
        assert_eq!(c.nat.ping_interval.as_secs(), 30);
    }

    #[test]
    fn nat_keys_are_read_and_checked() {
        let c = parse("mode = \"always\"\nping_interval_s = 0\nping_failures = 5\nmax_pings_per_s = 10").unwrap();
        assert_eq!(c.nat.mode, NatMode::Always);
        assert!(c.nat.ping_interval.is_zero());
        assert_eq!((c.nat.ping_failures, c.nat.max_pings_per_s), (5, 10));
        assert_eq!(parse("mode = \"off\"").unwrap().nat.mode, NatMode::Off);
        let e = parse("mode = \"sometimes\"").unwrap_err();
        assert!(e.contains("nat.mode") && e.contains("sometimes"), "{e}");
        assert!(parse("ping_failures = 0").unwrap_err().contains("nat.ping_failures"));
        assert!(parse("ping_timeout_ms = 10").unwrap_err().contains("nat.ping_timeout_ms"));
        assert!(parse("max_pings_per_s = 0").unwrap_err().contains("nat.max_pings_per_s"));
        assert!(parse("pings = 1").is_err(), "unknown keys are errors");
    }
}
