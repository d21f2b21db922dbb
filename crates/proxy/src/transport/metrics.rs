//! The transports' Prometheus families, registered once per hub. Every
//! label takes its values from a fixed set (transport names, the
//! `&'static str` kinds below), so peers cannot grow the series count.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use sip_message::{ErrorKind, FramingError, Limit};

use super::types::Transport;

pub(crate) struct TransportMetrics {
    /// Per-message counters resolved once: `with_label_values` hashes and
    /// locks, too dear for every datagram.
    received: [IntCounter; 3],
    sent: [IntCounter; 3],
    pub parse_errors: IntCounterVec,
    pub overload: IntCounterVec,
    pub send_failures: IntCounterVec,
    pub connections_open: IntGaugeVec,
    pub connections: IntCounterVec,
    pub connections_rejected: IntCounterVec,
    pub connections_closed: IntCounterVec,
    pub tls_handshake_failures: IntCounterVec,
    /// By listener address (`outbound` for ours) and result (`ok`, `failed`).
    pub tls_handshakes: IntCounterVec,
    pub keepalives: IntCounterVec,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

impl TransportMetrics {
    pub fn register(reg: &Registry) -> Result<TransportMetrics, prometheus::Error> {
        let connections_open = IntGaugeVec::new(
            Opts::new("umproxy_transport_connections_open", "TCP and TLS connections open now"),
            &["transport"],
        )?;
        reg.register(Box::new(connections_open.clone()))?;
        let received = counter(
            reg,
            "umproxy_transport_messages_received_total",
            "SIP messages received and parsed",
            &["transport"],
        )?;
        let sent = counter(
            reg,
            "umproxy_transport_messages_sent_total",
            "SIP messages written to the network",
            &["transport"],
        )?;
        let per_transport = |c: &IntCounterVec| TRANSPORTS.map(|t| c.with_label_values(&[t.param_name()]));
        let tls_handshakes = counter(
            reg,
            "umproxy_transport_tls_handshakes_total",
            "TLS handshakes by listener address (outbound: ours) and result",
            &["listener", "result"],
        )?;
        for result in ["ok", "failed"] {
            tls_handshakes.with_label_values(&["outbound", result]);
        }
        let m = TransportMetrics {
            tls_handshakes,
            received: per_transport(&received),
            sent: per_transport(&sent),
            parse_errors: counter(
                reg,
                "umproxy_transport_parse_errors_total",
                "Messages or streams that failed to parse or frame, by error kind",
                &["transport", "kind"],
            )?,
            overload: counter(
                reg,
                "umproxy_transport_overload_total",
                "Messages the core refused because its queue was full (kind: rejected_503 or dropped)",
                &["transport", "kind"],
            )?,
            send_failures: counter(
                reg,
                "umproxy_transport_send_failures_total",
                "Sends that failed, by reason",
                &["transport", "reason"],
            )?,
            connections_open,
            connections: counter(
                reg,
                "umproxy_transport_connections_total",
                "TCP and TLS connections opened",
                &["transport", "direction"],
            )?,
            connections_rejected: counter(
                reg,
                "umproxy_transport_connections_rejected_total",
                "Inbound connections refused by a limit",
                &["transport", "reason"],
            )?,
            connections_closed: counter(
                reg,
                "umproxy_transport_connections_closed_total",
                "TCP and TLS connections closed, by reason",
                &["transport", "reason"],
            )?,
            tls_handshake_failures: counter(
                reg,
                "umproxy_transport_tls_handshake_failures_total",
                "TLS handshakes that failed, by direction and reason",
                &["direction", "reason"],
            )?,
            keepalives: counter(
                reg,
                "umproxy_transport_keepalives_total",
                "RFC 5626 CRLF keep-alive pings answered",
                &["transport"],
            )?,
        };
        m.precreate();
        Ok(m)
    }

    /// Zero series for the bounded label sets, so that every family is in
    /// the first scrape (dashboards and alerts see 0, not "no data").
    fn precreate(&self) {
        for t in ["tcp", "tls"] {
            self.connections_open.with_label_values(&[t]);
            self.keepalives.with_label_values(&[t]);
            for d in ["inbound", "outbound"] {
                self.connections.with_label_values(&[t, d]);
            }
            for r in ["max_connections", "max_per_ip"] {
                self.connections_rejected.with_label_values(&[t, r]);
            }
            self.connections_closed.with_label_values(&[t, "idle"]);
        }
        for t in TRANSPORTS {
            for k in ["rejected_503", "dropped"] {
                self.overload.with_label_values(&[t.param_name(), k]);
            }
            for f in ["connect", "tls", "closed", "overloaded", "no_route"] {
                self.send_failures.with_label_values(&[t.param_name(), f]);
            }
            self.parse_errors.with_label_values(&[t.param_name(), "syntax"]);
        }
        for d in ["inbound", "outbound"] {
            self.tls_handshake_failures.with_label_values(&[d, "timeout"]);
        }
    }

    pub fn received(&self, t: Transport) -> &IntCounter {
        &self.received[index(t)]
    }

    /// Messages received over every transport.
    pub fn received_total(&self) -> u64 {
        self.received.iter().map(IntCounter::get).sum()
    }

    pub fn sent(&self, t: Transport) -> &IntCounter {
        &self.sent[index(t)]
    }

    pub fn count_parse_error(&self, t: Transport, kind: &'static str) {
        self.parse_errors.with_label_values(&[t.param_name(), kind]).inc();
    }
}

const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

fn index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
    }
}

/// A bounded label for a parse error.
pub(crate) fn parse_error_kind(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::StartLine => "start_line",
        ErrorKind::Version => "version",
        ErrorKind::RequestUri => "request_uri",
        ErrorKind::StatusCode => "status_code",
        ErrorKind::HeaderLine => "header_line",
        ErrorKind::Header(_) => "header",
        ErrorKind::MissingHeader(_) => "missing_header",
        ErrorKind::DuplicateHeader(_) => "duplicate_header",
        ErrorKind::CSeqMethodMismatch => "cseq_method_mismatch",
        ErrorKind::BodyTruncated => "body_truncated",
        ErrorKind::MissingContentLength => "missing_content_length",
        ErrorKind::Truncated => "truncated",
        ErrorKind::LimitExceeded(l) => limit_kind(*l),
        _ => "other",
    }
}

/// A bounded label for a stream framing error.
pub(crate) fn framing_error_kind(e: &FramingError) -> &'static str {
    match e {
        FramingError::MissingContentLength => "framing_missing_content_length",
        FramingError::BadContentLength => "framing_bad_content_length",
        FramingError::LimitExceeded(l) => limit_kind(*l),
        _ => "framing_other",
    }
}

fn limit_kind(l: Limit) -> &'static str {
    match l {
        Limit::MessageSize => "limit_message_size",
        Limit::HeaderCount => "limit_header_count",
        Limit::HeaderLine => "limit_header_line",
        Limit::UriLength => "limit_uri_length",
        Limit::ViaCount => "limit_via_count",
        Limit::RouteCount => "limit_route_count",
        Limit::BodySize => "limit_body_size",
    }
}
