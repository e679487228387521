//! No SSRF from a SIP header: a real INVITE whose `P-wsbridge-websocket-uri`
//! names the switch's own loopback (as 127.0.0.1, as `2130706433`, as a name
//! that resolves there) is refused under the defaults, and reaches the
//! server once `allowed-hosts` names it; the module's `http-headers` never
//! go to a host a SIP header chose. Each test has a FreeSWITCH of its own,
//! since it changes wsbridge.conf.

use std::time::Duration;

use test_support::esl::Esl;
use test_support::instance::FreeSwitch;

use crate::operating::reloadxml_until;
use crate::ws_server::{runtime, Router};
use crate::{encode, log_showing, ok_uuid, wait_gone_on, BUILD};

crate::tests! {
    ssrf::sip_header_uris_to_loopback_are_refused_unless_allowed,
    ssrf::http_headers_stay_off_a_sip_chosen_host,
}

/// A SIP call to FreeSWITCH's own profile whose INVITE carries `uri` in
/// `P-wsbridge-websocket-uri`, landing on an extension that bridges to
/// `wsbridge` with the URI left as the header's (`extension` may be
/// `sip_to_wsbridge`, whose dialplan takes it as its own). The caller's
/// originate reply.
fn invite(freeswitch: &FreeSwitch, esl: &mut Esl, extension: &str, uri: &str) -> String {
    esl.api(&format!(
        "originate {{sip_h_P-wsbridge-websocket-uri={},originate_timeout=15}}sofia/test/{extension}@127.0.0.1:{} &park",
        encode(uri),
        freeswitch.sip_port
    ))
}

/// The call is refused: the caller's INVITE fails, and no server hears of it.
fn assert_refused(reply: &str, incoming: &mut crate::ws_server::Incoming, what: &str) {
    assert!(reply.trim().starts_with("-ERR"), "{what}: the INVITE was answered: {reply}");
    assert!(incoming.nothing_within(Duration::from_millis(300)), "{what}: a connection was made");
}

/// The call reaches the server at `path`, which hears the first message; then the caller hangs up.
fn assert_admitted(reply: &str, esl: &mut Esl, incoming: &mut crate::ws_server::Incoming, what: &str) {
    let caller = ok_uuid(reply);
    let mut connection = incoming.next(Duration::from_secs(5));
    let first = runtime().block_on(connection.first_text());
    assert!(first.contains("content-type"), "{what}: first message {first}");
    assert!(esl.api(&format!("uuid_kill {caller}")).starts_with("+OK"), "{what}");
    wait_gone_on(esl, &caller, Duration::from_secs(5));
}

/// Under the sample wsbridge.conf (`allow-sip-header-uri` true, no
/// `allowed-hosts`) each of 127.0.0.1, `2130706433` and `localhost` from a
/// SIP header is refused, with a log line naming the rule; once
/// `allowed-hosts` names 127.0.0.1 and localhost those two are reached,
/// while `2130706433` stays refused (`INVALID_URL`, whoever gives it), and
/// cannot be put on `allowed-hosts` either.
pub fn sip_header_uris_to_loopback_are_refused_unless_allowed() {
    let router = Router::start();
    let freeswitch = FreeSwitch::start(&BUILD, &router.base(), 42);
    let mut esl = freeswitch.esl();
    let port = router.port;
    let log = freeswitch.log_path();
    let mut incoming = router.expect("/ssrf");

    let literal = format!("ws://127.0.0.1:{port}/ssrf");
    let decimal = format!("ws://2130706433:{port}/ssrf");
    let name = format!("ws://localhost:{port}/ssrf");
    // The caller hears the cause through the 403's Reason header; INVALID_URL
    // has no Q.850 number, so it hears the 484's INVALID_NUMBER_FORMAT.
    for (uri, heard) in
        [(&literal, "OUTGOING_CALL_BARRED"), (&decimal, "INVALID_NUMBER_FORMAT"), (&name, "OUTGOING_CALL_BARRED")]
    {
        let reply = invite(&freeswitch, &mut esl, "sip_header_uri_to_wsbridge", uri);
        assert_refused(&reply, &mut incoming, &format!("{uri} under the defaults"));
        assert_eq!(reply.trim(), format!("-ERR {heard}"), "{uri} under the defaults");
    }
    let refused = log_showing(
        &log,
        &[
            &format!(
                "refusing the call: {literal} names 127.0.0.1, a loopback address, and came from a SIP header; \
                 allowed-hosts does not name it (OUTGOING_CALL_BARRED)"
            ),
            "2130706433 is not an IPv4 address in canonical form",
            &format!("{name} resolves to "),
            "a loopback address, and came from a SIP header; allowed-hosts does not name it; hanging up with \
             OUTGOING_CALL_BARRED",
        ],
    );
    assert!(refused.contains("(INVALID_URL)"), "2130706433 is refused as an invalid URL");

    // An odd form cannot be put on the list: the list then allows nothing.
    freeswitch.set_wsbridge_conf(r#"<param name="allowed-hosts" value="2130706433"/>"#);
    reloadxml_until(&mut esl, "allowed-hosts = (invalid: nothing allowed)");
    log_showing(&log, &["param allowed-hosts: '2130706433': not an IPv4 address in canonical form"]);

    freeswitch.set_wsbridge_conf(r#"<param name="allowed-hosts" value="127.0.0.1, localhost"/>"#);
    reloadxml_until(&mut esl, "allowed-hosts = 127.0.0.1, localhost");
    for uri in [&literal, &name] {
        let reply = invite(&freeswitch, &mut esl, "sip_header_uri_to_wsbridge", uri);
        assert_admitted(&reply, &mut esl, &mut incoming, &format!("{uri} named in allowed-hosts"));
    }
    let reply = invite(&freeswitch, &mut esl, "sip_header_uri_to_wsbridge", &decimal);
    assert_refused(&reply, &mut incoming, "2130706433 with 127.0.0.1 on allowed-hosts");
    drop(esl);
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}

/// `http-headers` from wsbridge.conf: not sent to a host a SIP header chose
/// (even one whose addresses `allowed-hosts` admits by a block), sent to the
/// same host once the dialplan takes the URI as its own, or once
/// `allowed-hosts` names the host.
pub fn http_headers_stay_off_a_sip_chosen_host() {
    let router = Router::start();
    let freeswitch = FreeSwitch::start(&BUILD, &router.base(), 43);
    let mut esl = freeswitch.esl();
    let uri = format!("ws://localhost:{}/credentials", router.port);
    let mut incoming = router.expect("/credentials");
    let conf = |allowed: &str| {
        format!(
            r#"<param name="http-headers" value='{{"Authorization":"Bearer conf-secret"}}'/><param name="allowed-hosts" value="{allowed}"/>"#
        )
    };
    let mut authorization_seen = |esl: &mut Esl, extension: &str| {
        let caller = ok_uuid(&invite(&freeswitch, esl, extension, &uri));
        let connection = incoming.next(Duration::from_secs(5));
        assert!(esl.api(&format!("uuid_kill {caller}")).starts_with("+OK"));
        wait_gone_on(esl, &caller, Duration::from_secs(5));
        connection.headers.iter().find(|(name, _)| name == "authorization").map(|(_, value)| value.clone())
    };

    // A block admits localhost's addresses but does not name the host.
    freeswitch.set_wsbridge_conf(&conf("127.0.0.0/8, ::1"));
    reloadxml_until(&mut esl, "allowed-hosts = 127.0.0.0/8, ::1");
    assert_eq!(authorization_seen(&mut esl, "sip_header_uri_to_wsbridge"), None, "chosen by a SIP header");
    log_showing(
        &freeswitch.log_path(),
        &[&format!(
            "{uri} came from a SIP header and allowed-hosts does not name it: http-headers and the TLS client \
             certificate are not sent to it"
        )],
    );
    let dialplan = authorization_seen(&mut esl, "sip_to_wsbridge");
    assert_eq!(dialplan.as_deref(), Some("Bearer conf-secret"), "the dialplan's own URI");

    freeswitch.set_wsbridge_conf(&conf("localhost"));
    reloadxml_until(&mut esl, "allowed-hosts = localhost");
    let named = authorization_seen(&mut esl, "sip_header_uri_to_wsbridge");
    assert_eq!(named.as_deref(), Some("Bearer conf-secret"), "a host allowed-hosts names");
    drop(esl);
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}
