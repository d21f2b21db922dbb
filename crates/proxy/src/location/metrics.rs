//! Prometheus families of the registrar, location stores and auth.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::registrar::RegisterResult;

/// Registered once at start; label values are fixed sets (bounded).
#[derive(Clone)]
pub struct LocationMetrics {
    /// `umproxy_registrations_active`: bindings held (embedded store: exact;
    /// Redis: not set by the registrar, the store cannot count cheaply).
    pub registrations_active: IntGauge,
    /// `umproxy_register_total{result}`, result = [`super::registrar::RegisterResult::label`].
    pub register_total: IntCounterVec,
    /// Its counters resolved once, in [`RegisterResult::ALL`] order.
    register_by: Vec<IntCounter>,
    /// `umproxy_auth_failures_total{reason}`, reason = [`super::auth::AuthFailure::label`] or `locked_out`.
    pub auth_failures_total: IntCounterVec,
    /// `umproxy_location_store_errors_total{store}`, store = `embedded` | `redis`.
    pub store_errors_total: IntCounterVec,
    /// `umproxy_location_unflushed_aors`: AORs the embedded store holds in
    /// memory ahead of its file (write-behind); 0 once committed.
    pub unflushed_aors: IntGauge,
}

impl LocationMetrics {
    /// Count a REGISTER by its result.
    pub fn count_register(&self, result: RegisterResult) {
        match RegisterResult::ALL.iter().position(|&r| r == result).and_then(|i| self.register_by.get(i)) {
            Some(c) => c.inc(),
            None => self.register_total.with_label_values(&[result.label()]).inc(),
        }
    }

    pub fn register(registry: &Registry) -> Result<LocationMetrics, prometheus::Error> {
        let registrations_active =
            IntGauge::new("umproxy_registrations_active", "Registration bindings currently held")?;
        let register_total = IntCounterVec::new(
            Opts::new("umproxy_register_total", "REGISTER requests handled by the registrar, by result"),
            &["result"],
        )?;
        let auth_failures_total = IntCounterVec::new(
            Opts::new("umproxy_auth_failures_total", "Failed digest authentications, by reason"),
            &["reason"],
        )?;
        let store_errors_total = IntCounterVec::new(
            Opts::new("umproxy_location_store_errors_total", "Location store operations that failed, by store"),
            &["store"],
        )?;
        let unflushed_aors = IntGauge::new(
            "umproxy_location_unflushed_aors",
            "AORs changed in memory and not yet committed to the embedded store's file",
        )?;
        registry.register(Box::new(unflushed_aors.clone()))?;
        registry.register(Box::new(registrations_active.clone()))?;
        registry.register(Box::new(register_total.clone()))?;
        registry.register(Box::new(auth_failures_total.clone()))?;
        registry.register(Box::new(store_errors_total.clone()))?;
        let register_by = RegisterResult::ALL.iter().map(|r| register_total.with_label_values(&[r.label()])).collect();
        // Zero series so that the families are in the first scrape.
        use crate::location::auth::AuthFailure as F;
        let failures = [
            F::Missing,
            F::Malformed,
            F::Unsupported,
            F::UriMismatch,
            F::UnknownUser,
            F::BadNonce,
            F::StaleNonce,
            F::Replay,
            F::WrongResponse,
        ];
        for reason in failures.iter().map(|f| f.label()).chain(["locked_out"]) {
            auth_failures_total.with_label_values(&[reason]);
        }
        for store in ["embedded", "redis"] {
            store_errors_total.with_label_values(&[store]);
        }
        Ok(LocationMetrics {
            registrations_active,
            register_total,
            register_by,
            auth_failures_total,
            store_errors_total,
            unflushed_aors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_register_once_and_are_exposed() {
        let reg = Registry::new();
        let m = LocationMetrics::register(&reg).unwrap();
        m.register_total.with_label_values(&["updated"]).inc();
        m.auth_failures_total.with_label_values(&["wrong_response"]).inc();
        m.store_errors_total.with_label_values(&["redis"]).inc();
        m.registrations_active.set(3);
        let names: Vec<String> = reg.gather().iter().map(|f| f.name().to_owned()).collect();
        for n in [
            "umproxy_registrations_active",
            "umproxy_register_total",
            "umproxy_auth_failures_total",
            "umproxy_location_store_errors_total",
            "umproxy_location_unflushed_aors",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert!(LocationMetrics::register(&reg).is_err(), "second registration must fail, not duplicate");
    }

    #[test]
    fn each_register_result_counts_under_its_own_label() {
        let m = LocationMetrics::register(&Registry::new()).unwrap();
        for (k, r) in RegisterResult::ALL.iter().enumerate() {
            for _ in 0..=k {
                m.count_register(*r);
            }
        }
        for (k, r) in RegisterResult::ALL.iter().enumerate() {
            assert_eq!(m.register_total.with_label_values(&[r.label()]).get(), k as u64 + 1, "{}", r.label());
        }
    }
}
