//! Secrets planted in wsbridge.conf never come out of the status, the call
//! list or the log, while the call that uses them is up.

use std::time::Duration;

use test_support::instance::FreeSwitch;

use crate::ws_server::runtime;
use crate::{ok_uuid, wait_gone_on, world, BUILD};

crate::tests! {
    secrets::never_shown_in_status_list_or_log,
}

const PLANTED: [&str; 4] =
    ["PLANTED-HEADER-SECRET", "PLANTED-QUERY-SECRET", "PLANTED-PATH-SECRET", "PLANTED-FALLBACK-SECRET"];

pub fn never_shown_in_status_list_or_log() {
    let router = &world().router;
    let freeswitch = FreeSwitch::start(&BUILD, &router.base(), 41);
    let mut esl = freeswitch.esl();
    freeswitch.set_wsbridge_conf(&format!(
        r#"<param name="default-uri" value="{base}/PLANTED-PATH-SECRET?call=1&amp;token=PLANTED-QUERY-SECRET"/><param name="http-headers" value="{{&quot;Authorization&quot;:&quot;Bearer PLANTED-HEADER-SECRET&quot;}}"/><param name="fallback-uris" value="ws://127.0.0.1:9/PLANTED-FALLBACK-SECRET"/>"#,
        base = router.base()
    ));
    assert!(esl.api("reloadxml").contains("+OK"));
    let shown_default = format!("default-uri = {}/***", router.base());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !esl.api("wsbridge status").lines().any(|line| line == shown_default) {
        assert!(std::time::Instant::now() < deadline, "wsbridge.conf not re-read: {}", esl.api("wsbridge status"));
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut incoming = router.expect("/PLANTED-PATH-SECRET");
    let uuid = ok_uuid(&esl.api("originate wsbridge tone_5000ms XML wsbridge-test"));
    let mut connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(connection.first_text());
    let authorization = connection.headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("authorization"));
    assert_eq!(
        authorization.map(|(_, value)| value.as_str()),
        Some("Bearer PLANTED-HEADER-SECRET"),
        "the secret is in use"
    );
    let shown = [
        ("status", esl.api("wsbridge status")),
        ("status json", esl.api("wsbridge status json")),
        ("list", esl.api("wsbridge list")),
        ("list json", esl.api("wsbridge list json")),
    ];
    assert!(esl.api(&format!("uuid_kill {uuid}")).starts_with("+OK"));
    wait_gone_on(&mut esl, &uuid, Duration::from_secs(5));
    let log = std::fs::read_to_string(freeswitch.log_path()).unwrap();
    let mut found = Vec::new();
    for (place, text) in shown.iter().map(|(place, text)| (*place, text.as_str())).chain([("log", log.as_str())]) {
        for secret in PLANTED {
            if text.contains(secret) {
                found.push(format!("{secret} in the {place}"));
            }
        }
    }
    let status = &shown[0].1;
    println!(
        "secrets: {} planted, none in status ({} lines), status json, list, list json or the log ({} lines); status shows: {}",
        PLANTED.len(),
        status.lines().count(),
        log.lines().count(),
        status.lines().filter(|l| l.starts_with("http-headers") || l.starts_with("default-uri") || l.starts_with("fallback-uris")).collect::<Vec<_>>().join(" | ")
    );
    assert!(found.is_empty(), "secrets shown: {found:?}");
    assert!(status.contains(r#"http-headers = {"Authorization":"***"}"#), "{status}");
    assert!(freeswitch.stop(), "FreeSWITCH stopped cleanly");
}
