//! NAT traversal through a real NAT (issue 18): a SIPp phone in a network
//! namespace behind a router namespace doing source NAT (masquerade) toward
//! the namespace where umproxy listens (see `e2e_support::netns`). Outside
//! callers are SIPp in umproxy's namespace, which has no route to the
//! phone's private network.
//!
//! The phone's REGISTER and the caller's INVITE share a Call-ID, so that
//! the one SIPp run of the phone takes the call its registration leads to.

use std::net::SocketAddr;
use std::time::Duration;

use e2e_support::netns::{NatLab, PHONE_IP, ROUTER_OUTSIDE_IP, SERVER_IP};
use e2e_support::sipp::SippProcess;
use e2e_support::{poll_until, Proxy, ProxyConfig, Sipp, SippOutcome, SippTransport};

use crate::{have_sipp, umproxy};

/// Who ends the call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hangup {
    Phone,
    Caller,
}

fn transport_name(t: SippTransport) -> &'static str {
    match t {
        SippTransport::Udp => "udp",
        SippTransport::Tcp => "tcp",
    }
}

/// The phone: registers as `user` (Via and Contact name its own address,
/// rport asked unless `rport` is false), then takes one call and ends it or
/// waits for the caller to.
fn phone_scenario(user: &str, call_id: &str, hangup: Hangup, rport: bool) -> String {
    let rport = if rport { ";rport" } else { "" };
    let end = match hangup {
        Hangup::Phone => format!(
            r#"  <pause milliseconds="200"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]{rport}
      [routes]
      From: <sip:{user}@example.test>;tag=phone1
      To: <sip:caller@example.test>;tag=caller1
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"#
        ),
        Hangup::Caller => r#"  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"#
        .to_string(),
    };
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="phone">
<!-- call-id {call_id} -->
  <send retrans="500">
    <![CDATA[
      REGISTER sip:example.test SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]{rport}
      From: <sip:{user}@example.test>;tag=reg1
      To: <sip:{user}@example.test>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
      Expires: 300
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <recv request="INVITE" rrs="true"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=phone1
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=phone1
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=phone 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio 7078 RTP/AVP 0
    ]]>
  </send>
  <recv request="ACK"/>
{end}  <timewait milliseconds="500"/>
</scenario>
"#
    )
}

/// The outside caller: calls `user`, ACKs the 2xx along its route set to
/// its Contact, and ends the call or waits for the phone to.
fn caller_scenario(user: &str, call_id: &str, hangup: Hangup) -> String {
    let end = match hangup {
        Hangup::Caller => format!(
            r#"  <pause milliseconds="300"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:caller@example.test>;tag=caller1
      To: <sip:{user}@example.test>;tag=phone1
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"#
        ),
        Hangup::Phone => r#"  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"#
        .to_string(),
    };
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="caller">
<!-- call-id {call_id} -->
  <send retrans="500">
    <![CDATA[
      INVITE sip:{user}@example.test SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@example.test>;tag=caller1
      To: <sip:{user}@example.test>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio 6000 RTP/AVP 0
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:caller@example.test>;tag=caller1
      To: <sip:{user}@example.test>;tag=phone1
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
{end}  <timewait milliseconds="500"/>
</scenario>
"#
    )
}

/// A caller whose call must fail with `code`.
fn rejected_caller_scenario(user: &str, code: u16) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="rejected caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:{user}@example.test SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-rej-[call_number]
      From: <sip:caller@example.test>;tag=caller2
      To: <sip:{user}@example.test>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="{code}"/>
  <send>
    <![CDATA[
      ACK sip:{user}@example.test SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-rej-[call_number]
      From: <sip:caller@example.test>;tag=caller2
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#
    )
}

/// umproxy in the server namespace, registrations in its own directory,
/// no digest authentication (these tests are about where packets go).
fn proxy_config(lab: &NatLab, nat: &str) -> ProxyConfig {
    ProxyConfig::new().in_netns(&lab.server, SERVER_IP).extra(&format!("[auth]\nenabled = false\n\n[nat]\n{nat}\n"))
}

/// The phone behind the NAT, registering to `proxy`; returns once its
/// REGISTER was answered.
fn register_phone(lab: &NatLab, proxy: SocketAddr, scenario: String, transport: SippTransport) -> SippProcess {
    let phone = Sipp::scenario_text(scenario.clone())
        .in_netns(&lab.phone, PHONE_IP)
        .arg("-cid_str")
        .arg(call_id_of(&scenario))
        .transport(transport)
        .remote(proxy)
        .calls(1)
        .trace_msg()
        .arg("-aa")
        .timeout(Duration::from_secs(40))
        .spawn();
    let registered =
        poll_until(Duration::from_secs(10), || phone.messages_so_far().contains("SIP/2.0 200 OK").then_some(()));
    assert!(registered.is_some(), "the phone's REGISTER was not answered:\n{}", phone.messages_so_far());
    phone
}

/// The Call-ID a scenario of this file is for (SIPp maps messages to its
/// calls by Call-ID, so both sides are given it with `-cid_str`).
fn call_id_of(scenario: &str) -> String {
    scenario
        .lines()
        .find_map(|l| l.trim().strip_prefix("<!-- call-id "))
        .and_then(|r| r.strip_suffix(" -->"))
        .unwrap_or("x")
        .to_string()
}

fn call(lab: &NatLab, proxy: SocketAddr, scenario: String) -> SippOutcome {
    Sipp::scenario_text(scenario.clone())
        .in_netns(&lab.server, SERVER_IP)
        .arg("-cid_str")
        .arg(call_id_of(&scenario))
        .remote(proxy)
        .calls(1)
        .trace_msg()
        .timeout(Duration::from_secs(20))
        .run()
}

/// The first line and the named header of each message in `msgs` that
/// starts with `start`.
fn find<'a>(msgs: &'a [String], start: &str) -> Vec<&'a String> {
    msgs.iter().filter(|m| m.starts_with(start)).collect()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A whole call through the NAT: the phone registers, the outside caller's
/// INVITE reaches it (at the NAT's public address, the Request-URI its
/// Contact), it answers, and the call is ended by `hangup`.
fn call_through_nat(transport: SippTransport, hangup: Hangup, tag: &str) {
    if !have_sipp() {
        return;
    }
    let Some(lab) = NatLab::create() else { return };
    let proxy = Proxy::start(umproxy(), proxy_config(&lab, "mode = \"auto\""));
    let call_id = format!("nat-{tag}@phone");
    let phone = register_phone(&lab, proxy.udp_addr(), phone_scenario("phone", &call_id, hangup, true), transport);
    let caller = call(&lab, proxy.udp_addr(), caller_scenario("phone", &call_id, hangup));
    let phone = phone.wait();
    caller.assert_all_succeeded(1);
    phone.assert_all_succeeded(1);

    let t = transport_name(transport);
    let phone_in = phone.received_messages();
    // RFC 3581: the REGISTER's 200 tells the phone its public address.
    let reg_ok = find(&phone_in, "SIP/2.0 200");
    let via = reg_ok.first().and_then(|m| header(m, "Via")).unwrap_or_default();
    assert!(via.contains(&format!("received={ROUTER_OUTSIDE_IP}")), "200 to REGISTER: Via {via}");
    if transport == SippTransport::Udp {
        assert!(via.contains("rport=4"), "rport holds the NAT's port (40000-40999): Via {via}");
    }
    // The INVITE reached the phone with its Contact as Request-URI.
    let invite = find(&phone_in, "INVITE ");
    let contact = format!("sip:phone@{PHONE_IP}:");
    assert!(invite.first().is_some_and(|m| m.starts_with(&format!("INVITE {contact}"))), "{invite:?}");
    // The caller saw the phone's Contact marked with the NAT's address.
    let caller_in = caller.received_messages();
    let ok = find(&caller_in, "SIP/2.0 200");
    let marked = ok.first().and_then(|m| header(m, "Contact")).unwrap_or_default();
    assert!(marked.contains(&format!(";alias={ROUTER_OUTSIDE_IP}~")) && marked.contains(&format!("~{t}")), "{marked}");
    match hangup {
        // The phone's BYE reached the caller.
        Hangup::Phone => assert_eq!(find(&caller_in, "BYE ").len(), 1, "{caller_in:?}"),
        // The caller's BYE reached the phone, to its Contact as it wrote it.
        Hangup::Caller => {
            let bye = find(&phone_in, "BYE ");
            let line = bye.first().and_then(|m| m.lines().next()).unwrap_or_default();
            assert!(line.starts_with(&format!("BYE {contact}")) && !line.contains("alias"), "{line}");
        }
    }
    let counted = format!(r#"umproxy_nat_contacts_registered_total{{transport="{t}"}}"#);
    assert_eq!(proxy.metric(&counted), 1.0, "the NAT'd contact is counted");
    let pinged = if transport == SippTransport::Udp { 1.0 } else { 0.0 };
    assert_eq!(proxy.metric("umproxy_nat_keepalive_bindings"), pinged, "UDP bindings are pinged, TCP ones not");
}

#[test]
fn udp_phone_behind_nat_is_called_and_its_bye_reaches_the_caller() {
    call_through_nat(SippTransport::Udp, Hangup::Phone, "u1");
}

#[test]
fn udp_phone_behind_nat_is_called_and_the_callers_bye_reaches_it() {
    call_through_nat(SippTransport::Udp, Hangup::Caller, "u2");
}

#[test]
fn tcp_phone_behind_nat_is_called_over_its_connection_and_hangs_up() {
    call_through_nat(SippTransport::Tcp, Hangup::Phone, "t1");
}

#[test]
fn tcp_phone_behind_nat_gets_the_callers_bye_over_its_connection() {
    call_through_nat(SippTransport::Tcp, Hangup::Caller, "t2");
}

/// A NAT'd UDP binding outlives a restart of umproxy: it is stored with
/// the address the REGISTER came from, the NAT still maps it, and its
/// keep-alive pings resume.
#[test]
fn udp_phone_behind_nat_is_reached_after_a_restart() {
    if !have_sipp() {
        return;
    }
    let Some(lab) = NatLab::create() else { return };
    let proxy = Proxy::start(umproxy(), proxy_config(&lab, "mode = \"auto\""));
    let call_id = "nat-restart@phone";
    let phone = register_phone(
        &lab,
        proxy.udp_addr(),
        phone_scenario("phone", call_id, Hangup::Caller, true),
        SippTransport::Udp,
    );
    // The embedded store writes behind: the binding is on disk once no AOR
    // is left unflushed.
    let flushed =
        poll_until(Duration::from_secs(10), || (proxy.metric("umproxy_location_unflushed_aors") == 0.0).then_some(()));
    assert!(flushed.is_some(), "{}", proxy.metrics());
    let (config, dir) = proxy.stop();
    let proxy = Proxy::start_in(umproxy(), config, dir);
    assert_eq!(proxy.metric("umproxy_nat_keepalive_bindings"), 1.0, "pings resume for the loaded binding");
    let caller = call(&lab, proxy.udp_addr(), caller_scenario("phone", call_id, Hangup::Caller));
    let phone = phone.wait();
    caller.assert_all_succeeded(1);
    phone.assert_all_succeeded(1);
}

/// Keep-alive pings reach the phone through the NAT and are answered;
/// once the NAT forgets its mapping (conntrack flushed: an expired
/// pinhole), the pings fail, the binding is dropped and counted, and a
/// call to the phone finds nobody.
#[test]
fn pings_keep_the_pinhole_and_a_binding_whose_pings_fail_is_dropped() {
    if !have_sipp() {
        return;
    }
    let Some(lab) = NatLab::create() else { return };
    let nat = "mode = \"auto\"\nping_interval_s = 1\nping_timeout_ms = 500\nping_failures = 2";
    let proxy = Proxy::start(umproxy(), proxy_config(&lab, nat));
    let phone = register_phone(
        &lab,
        proxy.udp_addr(),
        phone_scenario("phone", "nat-ping@phone", Hangup::Caller, true),
        SippTransport::Udp,
    );
    assert_eq!(proxy.metric("umproxy_nat_keepalive_bindings"), 1.0);
    let answered = poll_until(Duration::from_secs(15), || {
        (proxy.metric(r#"umproxy_nat_pings_total{result="answered"}"#) >= 2.0).then_some(())
    });
    assert!(answered.is_some(), "pings answered through the NAT:\n{}", proxy.metrics());
    assert!(phone.messages_so_far().contains("OPTIONS sip:phone@192.168.77.2"), "the pings reach the phone");
    if !lab.flush_nat() {
        return;
    }
    let dropped = poll_until(Duration::from_secs(15), || {
        (proxy.metric("umproxy_nat_bindings_dropped_total") >= 1.0).then_some(())
    });
    assert!(dropped.is_some(), "the binding is dropped after failed pings:\n{}", proxy.metrics());
    assert!(proxy.metric(r#"umproxy_nat_pings_total{result="failed"}"#) >= 2.0);
    assert_eq!(proxy.metric("umproxy_nat_keepalive_bindings"), 0.0);
    let caller = Sipp::scenario_text(rejected_caller_scenario("phone", 404))
        .in_netns(&lab.server, SERVER_IP)
        .remote(proxy.udp_addr())
        .calls(1)
        .timeout(Duration::from_secs(10))
        .run();
    caller.assert_all_succeeded(1);
    drop(phone);
}

/// A phone that is not behind NAT (in umproxy's own network, Contact and
/// Via naming where it sends from) is handled as before: its Contact is
/// used as it is, not marked, not pinged, and its Via gains nothing it
/// did not ask for.
#[test]
fn a_phone_with_a_public_contact_is_handled_as_before() {
    if !have_sipp() {
        return;
    }
    let Some(lab) = NatLab::create() else { return };
    let proxy = Proxy::start(umproxy(), proxy_config(&lab, "mode = \"auto\""));
    let call_id = "nonat@phone";
    let phone = Sipp::scenario_text(phone_scenario("desk", call_id, Hangup::Caller, false))
        .in_netns(&lab.server, SERVER_IP)
        .arg("-cid_str")
        .arg(call_id)
        .remote(proxy.udp_addr())
        .calls(1)
        .trace_msg()
        .timeout(Duration::from_secs(30))
        .spawn();
    let registered =
        poll_until(Duration::from_secs(10), || phone.messages_so_far().contains("SIP/2.0 200 OK").then_some(()));
    assert!(registered.is_some(), "{}", phone.messages_so_far());
    let caller = call(&lab, proxy.udp_addr(), caller_scenario("desk", call_id, Hangup::Caller));
    let phone = phone.wait();
    caller.assert_all_succeeded(1);
    phone.assert_all_succeeded(1);
    let caller_in = caller.received_messages();
    let contact =
        find(&caller_in, "SIP/2.0 200").first().and_then(|m| header(m, "Contact")).unwrap_or_default().to_string();
    assert!(!contact.contains("alias"), "{contact}");
    let reg_ok = phone.received_messages();
    let via = find(&reg_ok, "SIP/2.0 200").first().and_then(|m| header(m, "Via")).unwrap_or_default().to_string();
    assert!(!via.contains("received") && !via.contains("rport"), "{via}");
    assert_eq!(proxy.metric("umproxy_nat_keepalive_bindings"), 0.0);
    assert_eq!(proxy.metric(r#"umproxy_nat_contacts_registered_total{transport="udp"}"#), 0.0);
    assert!(proxy.metrics().contains("umproxy_nat_contacts_registered_total"), "exported from start");
}

/// With `[nat] mode = "off"`, the phone behind NAT is reached at its
/// Contact as before this handling existed: from umproxy's network that
/// private address has no route, and the call fails (503) instead of
/// ringing the phone.
#[test]
fn with_nat_off_the_phone_behind_nat_is_not_reached() {
    if !have_sipp() {
        return;
    }
    let Some(lab) = NatLab::create() else { return };
    let proxy = Proxy::start(umproxy(), proxy_config(&lab, "mode = \"off\""));
    let phone = register_phone(
        &lab,
        proxy.udp_addr(),
        phone_scenario("phone", "nat-off@phone", Hangup::Caller, true),
        SippTransport::Udp,
    );
    let caller = Sipp::scenario_text(rejected_caller_scenario("phone", 503))
        .in_netns(&lab.server, SERVER_IP)
        .remote(proxy.udp_addr())
        .calls(1)
        .timeout(Duration::from_secs(20))
        .run();
    caller.assert_all_succeeded(1);
    assert!(!phone.messages_so_far().contains("INVITE sip:"), "the phone saw no INVITE");
    assert_eq!(proxy.metric(r#"umproxy_nat_contacts_registered_total{transport="udp"}"#), 0.0);
}
