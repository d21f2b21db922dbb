//! Route information preprocessing (RFC 3261 §16.4) and the choice of the
//! next hop for a request that already carries a route (§16.6 step 6–7).

use sip_message::{Message, Uri};

/// What §16.4 does to a request before it is routed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteEdits {
    /// Strict-router compatibility: the previous hop put our Record-Route URI
    /// in the Request-URI; the real Request-URI is the last Route value,
    /// which is removed. `Some(uri)` is the URI to restore.
    pub restore_request_uri: Option<String>,
    /// How many Route values from the top name this proxy and are popped
    /// (two after a double Record-Route, RFC 5658).
    pub pop: usize,
    /// The Route values left after the edits, top first (URIs only).
    pub remaining: Vec<String>,
}

impl RouteEdits {
    /// Whether a Route value stays on the request: it is then forwarded to
    /// the first one without asking the router (§16.6 step 6).
    pub fn next_route(&self) -> Option<&str> {
        self.remaining.first().map(String::as_str)
    }
}

/// Compute the §16.4 edits. `is_me(uri)` says whether a URI names this proxy
/// (one of its listeners).
pub fn preprocess(msg: &Message, is_me: impl Fn(&Uri<'_>) -> bool) -> RouteEdits {
    preprocess_with(msg, msg.request_uri().as_ref(), is_me)
}

/// [`preprocess`] with the Request-URI already parsed (`ruri`, from
/// `msg.request_uri()`), for a caller that reads it again afterwards.
pub fn preprocess_with(msg: &Message, ruri: Option<&Uri<'_>>, is_me: impl Fn(&Uri<'_>) -> bool) -> RouteEdits {
    let mut routes: Vec<Uri<'_>> = msg.routes().map(|r| r.uri).collect();
    let mut edits = RouteEdits::default();
    if let Some(ruri) = ruri {
        // §16.4: a Request-URI we placed into a Record-Route means the
        // previous hop is a strict router. (Without a Route there is
        // nothing to restore: no need to ask whether it names us.)
        if !routes.is_empty() && is_me(ruri) {
            if let Some(last) = routes.pop() {
                edits.restore_request_uri = Some(last.as_str().to_string());
            }
        }
    }
    // §16.4: pop the top Route if it is ours; after a double Record-Route the
    // next one is ours too.
    while let Some(top) = routes.first() {
        if !is_me(top) || edits.pop >= 2 {
            break;
        }
        routes.remove(0);
        edits.pop += 1;
    }
    edits.remaining = routes.iter().map(|u| u.as_str().to_string()).collect();
    edits
}

/// Apply route edits to an editor. The Request-URI becomes `request_uri`
/// when given (a router's rewrite), else the restored one of a strict-router
/// hop, else stays; it is set here only, since one span takes one edit.
pub fn apply<'m>(
    mut ed: sip_message::edit::Editor<'m>,
    edits: &RouteEdits,
    request_uri: Option<&str>,
) -> sip_message::edit::Editor<'m> {
    if let Some(uri) = request_uri.or(edits.restore_request_uri.as_deref()) {
        ed = ed.set_request_uri(uri);
    }
    if edits.restore_request_uri.is_some() {
        // Rewriting the Route set is the only way to drop its last value with
        // span edits: remove all Route lines and write back what remains.
        ed = ed.remove_header(sip_message::HeaderName::Route);
        for r in &edits.remaining {
            ed = ed.push_route(&format!("<{r}>"));
        }
        return ed;
    }
    for _ in 0..edits.pop {
        ed = ed.pop_route();
    }
    ed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ruri: &str, routes: &str) -> Message {
        let text = format!(
            "BYE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@example.test>;tag=1\r\n\
             To: <sip:b@example.test>;tag=2\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\n{routes}Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        Message::parse_slice(text.as_bytes()).expect("test message parses")
    }

    fn me(u: &Uri<'_>) -> bool {
        u.host() == "10.0.0.1"
    }

    #[test]
    fn loose_route_pops_our_entry_and_keeps_the_rest() {
        let m = msg("sip:b@192.0.2.5", "Route: <sip:10.0.0.1;lr>, <sip:192.0.2.60;lr>\r\n");
        let e = preprocess(&m, me);
        assert_eq!(e.pop, 1);
        assert_eq!(e.next_route(), Some("sip:192.0.2.60;lr"));
        let out = Message::parse(apply(m.edit(), &e, None).finish(), &Default::default()).expect("reparses");
        let left: Vec<_> = out.routes().map(|r| r.uri.as_str().to_string()).collect();
        assert_eq!(left, vec!["sip:192.0.2.60;lr"]);
    }

    #[test]
    fn double_record_route_pops_both() {
        let m = msg("sip:b@192.0.2.5", "Route: <sip:10.0.0.1;transport=tcp;lr>\r\nRoute: <sip:10.0.0.1;lr>\r\n");
        let e = preprocess(&m, me);
        assert_eq!(e.pop, 2);
        assert_eq!(e.next_route(), None);
        let out = Message::parse(apply(m.edit(), &e, None).finish(), &Default::default()).expect("reparses");
        assert_eq!(out.route_count(), 0);
    }

    #[test]
    fn strict_router_upstream_restores_request_uri() {
        let m = msg("sip:10.0.0.1;lr", "Route: <sip:192.0.2.60;lr>, <sip:b@192.0.2.5>\r\n");
        let e = preprocess(&m, me);
        assert_eq!(e.restore_request_uri.as_deref(), Some("sip:b@192.0.2.5"));
        assert_eq!(e.next_route(), Some("sip:192.0.2.60;lr"));
        let out = Message::parse(apply(m.edit(), &e, None).finish(), &Default::default()).expect("reparses");
        assert_eq!(out.request_uri_str(), Some("sip:b@192.0.2.5"));
        let left: Vec<_> = out.routes().map(|r| r.uri.as_str().to_string()).collect();
        assert_eq!(left, vec!["sip:192.0.2.60;lr"]);
    }

    #[test]
    fn foreign_top_route_is_left_alone() {
        let m = msg("sip:b@192.0.2.5", "Route: <sip:192.0.2.60;lr>\r\n");
        let e = preprocess(&m, me);
        assert_eq!(e.pop, 0);
        assert_eq!(e.next_route(), Some("sip:192.0.2.60;lr"));
    }
}
