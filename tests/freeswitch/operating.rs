//! Operating it: the `wsbridge` API, CUSTOM events, CDR variables, config reload.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use test_support::esl::{Esl, Headers};
use test_support::instance::FreeSwitch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::audio::tone;
use crate::ws_server::runtime;
use crate::{esl, ok_uuid, uri, wait_gone_on, world, BUILD};

crate::tests! {
    api_status_list_kill_and_debug,
    events_and_cdr_variables,
    demo_server_echoes_and_records,
    upgrade_headers_plain_or_url_encoded,
    make_demo_runs_end_to_end,
    frames_sent_at_hangup_match_what_the_server_received,
}

pub fn api_status_list_kill_and_debug() {
    let path = "/api";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE");
    let mut esl = esl();
    let uuid = ok_uuid(&esl.api(&format!("originate wsbridge/{} tone_60000ms XML wsbridge-test", uri(path))));
    let mut connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(connection.first_text());
    std::thread::sleep(Duration::from_millis(1000));

    let status = esl.api("wsbridge status");
    assert!(status.starts_with(&format!("mod_wsbridge {}", env!("CARGO_PKG_VERSION"))), "{status}");
    assert!(status.contains("active calls: ") && status.contains("calls since load: "), "{status}");

    let list = esl.api("wsbridge list");
    let row = list.lines().find(|line| line.starts_with(&uuid)).unwrap_or_else(|| panic!("{uuid} not listed: {list}"));
    assert!(row.contains(&format!(",{},open,", uri(path))), "{row}");
    let json: serde_json::Value = serde_json::from_str(&esl.api("wsbridge list json")).expect("list json is JSON");
    let call = json.as_array().unwrap().iter().find(|c| c["uuid"] == uuid.as_str()).expect("listed in JSON");
    let sent = call["frames_sent"].as_u64().unwrap();
    assert!((40..=70).contains(&sent), "about 50 frames a second: {sent} after 1 s");
    assert!(call["age_s"].as_f64().unwrap() >= 1.0);

    for junk in ["wsbridge dance", "wsbridge kill", "wsbridge list xml"] {
        assert!(esl.api(junk).starts_with("-ERR usage: wsbridge"), "{junk}");
    }
    assert!(esl.api("wsbridge kill no-such-call").starts_with("-ERR no wsbridge call"));
    assert!(esl.api(&format!("wsbridge kill {uuid} NO_SUCH_CAUSE")).starts_with("-ERR unknown hangup cause"));

    assert_eq!(esl.api("wsbridge_debug on").trim(), "+OK debug on");
    assert!(esl.api("wsbridge status").contains("debug: on"));
    assert_eq!(esl.api("wsbridge debug off").trim(), "+OK debug off");
    assert!(esl.api("wsbridge_debug maybe").starts_with("-ERR usage: wsbridge_debug on|off"));

    assert!(esl.api(&format!("wsbridge kill {uuid} user_busy")).starts_with("+OK"));
    let hangup = events.wait_event(Duration::from_secs(5), |e| e.get("Unique-ID") == Some(&uuid)).expect("hangup");
    assert_eq!(hangup["Hangup-Cause"], "USER_BUSY");
    let received = runtime().block_on(connection.receive_all(Duration::from_secs(3)));
    assert_eq!(received.close_code, Some(1000));
    assert!(!esl.api("wsbridge list").contains(&uuid), "a call leaves the list when it ends");
}

fn wait_custom(events: &mut test_support::esl::Esl, uuid: &str, subclass: &str) -> Headers {
    events
        .wait_event(Duration::from_secs(5), |e| {
            e.get("Event-Subclass").map(String::as_str) == Some(subclass)
                && e.get("Unique-ID").map(String::as_str) == Some(uuid)
        })
        .unwrap_or_else(|| panic!("no {subclass} event for {uuid}"))
}

/// CUSTOM events carry the channel's headers; CDR variables reach CHANNEL_HANGUP_COMPLETE.
pub fn events_and_cdr_variables() {
    let path = "/events";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe(
        "CHANNEL_HANGUP_COMPLETE CUSTOM wsbridge::connect wsbridge::disconnect wsbridge::error wsbridge::message wsbridge::mark",
    );
    let mut esl = esl();
    let uuid = ok_uuid(&esl.api(&format!("originate wsbridge/{} tone_60000ms XML wsbridge-test", uri(path))));
    let mut connection = incoming.next(Duration::from_secs(5));
    let started = Instant::now();
    runtime().block_on(async {
        connection.first_text().await;
        connection.send_pcm(&tone(1000.0, 16000, 0.2, 8000.0), 6400).await;
        connection.ws.send(Message::text(r#"{"action":"mark","name":"m1"}"#)).await.unwrap();
    });
    let connect = wait_custom(&mut events, &uuid, "wsbridge::connect");
    assert_eq!(connect["WSBridge-URI"], uri(path));
    assert!(connect["Channel-Name"].starts_with("wsbridge/"), "the channel's own headers come along");
    let message = wait_custom(&mut events, &uuid, "wsbridge::message");
    assert_eq!(
        message.get("_body").map(String::as_str),
        Some(r#"{"action":"mark","name":"m1"}"#),
        "the text as received"
    );
    let mark = wait_custom(&mut events, &uuid, "wsbridge::mark");
    assert_eq!(mark["WSBridge-Mark-Name"], "m1");
    assert_eq!(mark["WSBridge-Mark-Cleared"], "false");
    std::thread::sleep(Duration::from_millis(500).saturating_sub(started.elapsed()));
    runtime().block_on(async {
        let close = CloseFrame { code: CloseCode::Normal, reason: "bye now".into() };
        let _ = connection.ws.close(Some(close)).await;
    });
    let disconnect = wait_custom(&mut events, &uuid, "wsbridge::disconnect");
    assert_eq!(disconnect["WSBridge-Close-Code"], "1000");
    assert_eq!(disconnect["WSBridge-Close-Reason"], "bye now");
    let hangup = events
        .wait_event(Duration::from_secs(5), |e| {
            e.get("Event-Name").map(String::as_str) == Some("CHANNEL_HANGUP_COMPLETE")
                && e.get("Unique-ID") == Some(&uuid)
        })
        .expect("hangup complete");
    assert_eq!(hangup["Hangup-Cause"], "NORMAL_CLEARING");
    assert_eq!(hangup["variable_wsbridge_close_code"], "1000");
    assert_eq!(hangup["variable_wsbridge_close_reason"], "bye now");
    assert_eq!(hangup["variable_wsbridge_frames_received"], "10");
    assert_eq!(hangup["variable_wsbridge_frames_played"], "10");
    let sent: u64 = hangup["variable_wsbridge_frames_sent"].parse().unwrap();
    assert!(sent >= 20, "caller frames sent: {sent}");
    for name in ["variable_wsbridge_underruns", "variable_wsbridge_dropped_frames", "variable_wsbridge_connect_ms"] {
        assert!(hangup[name].parse::<u64>().is_ok(), "{name} = {:?}", hangup.get(name));
    }

    // A failed connection fires wsbridge::error.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let reply = esl.api(&format!(
        "originate {{origination_uuid=wsbridge-error-test-{port}}}wsbridge/ws://127.0.0.1:{port}/x &park"
    ));
    assert_eq!(reply.trim(), "-ERR DESTINATION_OUT_OF_ORDER");
    let error = wait_custom(&mut events, &format!("wsbridge-error-test-{port}"), "wsbridge::error");
    assert!(error["WSBridge-Error"].contains("Connection refused"), "{:?}", error.get("WSBridge-Error"));
}

/// `reloadxml`, then waits for the module to have re-read its file: FreeSWITCH hands
/// the RELOADXML event to listeners on its event thread, after the command's +OK.
pub(crate) fn reloadxml_until(esl: &mut Esl, status_line: &str) {
    assert!(esl.api("reloadxml").contains("+OK"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = esl.api("wsbridge status");
        if status.lines().any(|line| line == status_line) {
            return;
        }
        assert!(Instant::now() < deadline, "wsbridge.conf not re-read 5 s after reloadxml: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// wsbridge.conf: defaults for new calls, re-read by reloadxml; bad params named in the log.
pub fn config_file_and_reloadxml(freeswitch: &FreeSwitch) {
    let router = &world().router;
    let mut esl = freeswitch.esl();
    freeswitch.set_wsbridge_conf(&format!(
        r#"<param name="default-uri" value="{}/configured"/><param name="first-message" value="vonage"/><param name="default-content-type" value="audio/l16;rate=8000"/><param name="playout-max-ms" value="soon"/><param name="no-such-param" value="1"/><param name="runtime-threads" value="3"/>"#,
        router.base()
    ));
    reloadxml_until(&mut esl, &format!("default-uri = {}/***", router.base()));
    let mut incoming = router.expect("/configured");
    let uuid = ok_uuid(&esl.api("originate wsbridge tone_2000ms XML wsbridge-test"));
    let mut connection = incoming.next(Duration::from_secs(5));
    let first = runtime().block_on(connection.first_text());
    assert_eq!(first, r#"{"event":"websocket:connected","content-type":"audio/l16;rate=8000"}"#);
    let received = runtime().block_on(connection.receive_all(Duration::from_secs(5)));
    assert!(received.frames.iter().all(|(_, f)| f.len() == 320), "8 kHz frames from the configured default");
    wait_gone_on(&mut esl, &uuid, Duration::from_secs(5));
    crate::log_showing(
        &freeswitch.log_path(),
        &["wsbridge.conf: param playout-max-ms='soon'", "wsbridge.conf: unknown param 'no-such-param' ignored"],
    );
    let status = esl.api("wsbridge status");
    assert!(status.contains(&format!("default-uri = {}/***", router.base())), "{status}");
    // reloadxml does not restart the runtime: status says both numbers until a module reload.
    assert!(
        status.contains("runtime-threads = 3 (configured; ") && status.contains(" running until reload mod_wsbridge)"),
        "{status}"
    );
    assert!(!status.contains("runtime threads running: 3"), "{status}");

    // The allowlist and the SIP-header policy bar calls whoever sets the URI.
    freeswitch.set_wsbridge_conf(&format!(
        r#"<param name="allowed-hosts" value="127.0.0.1:{}"/><param name="allow-sip-header-uri" value="false"/>"#,
        router.port
    ));
    reloadxml_until(&mut esl, "allow-sip-header-uri = false");
    let barred = esl.api("originate wsbridge/ws://127.0.0.1:9/elsewhere &park");
    assert_eq!(barred.trim(), "-ERR OUTGOING_CALL_BARRED", "a host outside allowed-hosts");
    // An address, so that it is refused before any connection: with an address on the list, a host
    // name is checked by the addresses it resolves to, at connect.
    let barred = esl.api("originate {P-wsbridge-websocket-uri=ws%3A%2F%2F192.0.2.1%2F}wsbridge &park");
    assert_eq!(barred.trim(), "-ERR OUTGOING_CALL_BARRED", "a dial-string variable is barred too");
    let from_sip =
        format!("sip_h_P-wsbridge-websocket-uri={}", crate::encode(&format!("{}/configured", router.base())));
    let barred = esl.api(&format!("originate {{{from_sip}}}wsbridge &park"));
    assert_eq!(barred.trim(), "-ERR OUTGOING_CALL_BARRED", "a URI from a SIP header, with allow-sip-header-uri=false");
    let barred_fallback = format!(
        "originate {{wsbridge_fallback_uris={}}}wsbridge/{}/allowed &park",
        crate::encode("ws://192.0.2.1/"),
        router.base()
    );
    assert_eq!(
        esl.api(&barred_fallback).trim(),
        "-ERR OUTGOING_CALL_BARRED",
        "a barred fallback, before any connection"
    );
    crate::log_showing(
        &freeswitch.log_path(),
        &[
            "127.0.0.1:9 is not in allowed-hosts",
            "192.0.2.1:80 is not in allowed-hosts",
            "came from a SIP header, and allow-sip-header-uri is false",
        ],
    );
    let mut incoming = router.expect("/allowed");
    let uuid = ok_uuid(&esl.api(&format!("originate wsbridge/{}/allowed &park", router.base())));
    let mut connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(connection.first_text());
    assert!(esl.api(&format!("uuid_kill {uuid}")).starts_with("+OK"));
    wait_gone_on(&mut esl, &uuid, Duration::from_secs(5));
}

/// The demo server from the quick start: echoes the caller and records the call.
pub fn demo_server_echoes_and_records() {
    let dir = world().dir.join("demo");
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut demo = std::process::Command::new(BUILD.built_demo())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--mode", "echo", "--record-dir"])
        .arg(&dir)
        .stdout(std::fs::File::create(dir.join("stdout.txt")).unwrap())
        .spawn()
        .expect("starting wsbridge-demo");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "wsbridge-demo did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut esl = esl();
    let uuid = ok_uuid(&esl.api(&format!(
        "originate {{RECORD_READ_ONLY=true}}wsbridge/ws://127.0.0.1:{port}/quick-start tone_2000ms XML wsbridge-test"
    )));
    let heard = dir.join("heard.wav");
    assert!(esl.api(&format!("uuid_record {uuid} start {}", heard.display())).starts_with("+OK"));
    wait_gone_on(&mut esl, &uuid, Duration::from_secs(8));
    std::thread::sleep(Duration::from_millis(500));
    let _ = demo.kill();
    let _ = demo.wait();

    let (samples, rate) = crate::audio::read_wav(&heard);
    let (start, end) = crate::audio::loud_span(&samples, rate, 1000.0).expect("the caller hears its own echo");
    assert!(end - start > 1.7, "echo heard for {:.2} s of 2 s", end - start);
    let middle = ((start + end) / 2.0 * rate as f64) as usize;
    crate::audio::assert_tone(&samples[middle - rate as usize / 4..middle + rate as usize / 4], rate, 1000.0, "echo");

    let recorded = dir.join("call-1-quick-start.wav");
    let (samples, rate) = crate::audio::read_wav(&recorded);
    assert_eq!(rate, 16000);
    let (start, end) = crate::audio::loud_span(&samples, rate, 1000.0).expect("the demo recorded the caller");
    assert!((end - start - 2.0).abs() <= 0.06, "recorded {:.3} s of a 2 s tone", end - start);
    let printed = std::fs::read_to_string(dir.join("stdout.txt")).unwrap();
    assert!(printed.contains(r#"first message  {"content-type":"audio/l16;rate=16000"}"#), "{printed}");
}

/// `wsbridge_http_headers` given as plain JSON or URL-encoded reaches the
/// server's upgrade request; the token never reaches the log.
pub fn upgrade_headers_plain_or_url_encoded() {
    let path = "/upgrade-headers";
    let mut incoming = world().router.expect(path);
    let mut esl = esl();
    // Plain JSON needs quotes in a dial string, whose {...} it would otherwise end.
    let plain = r#"'{"Authorization":"Bearer t0k3n-plain"}'"#;
    let encoded = crate::encode(r#"{"Authorization":"Bearer t0k3n-encoded","X-Call":"42"}"#);
    for (variables, expected) in [
        (format!("wsbridge_http_headers={plain}"), vec![("authorization", "Bearer t0k3n-plain")]),
        (format!("wsbridge_http_headers={encoded}"), vec![("authorization", "Bearer t0k3n-encoded"), ("x-call", "42")]),
    ] {
        let uuid = ok_uuid(&esl.api(&format!("originate {{{variables}}}wsbridge/{} &park", uri(path))));
        let mut connection = incoming.next(Duration::from_secs(5));
        for (name, value) in expected {
            let seen = connection.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            assert_eq!(seen, Some(value), "{variables}: {:?}", connection.headers);
        }
        runtime().block_on(connection.first_text());
        assert!(esl.api(&format!("uuid_kill {uuid}")).starts_with("+OK"));
        wait_gone_on(&mut esl, &uuid, Duration::from_secs(5));
    }
    let log = std::fs::read_to_string(world().dir.join("log/freeswitch.log")).unwrap();
    assert!(!log.contains("t0k3n"), "the token reached the log");
}

/// When the caller hangs up, the frames still queued go out before the close,
/// and `wsbridge_frames_sent` at CHANNEL_HANGUP_COMPLETE counts exactly what
/// the server got. The server reads nothing until just after the hangup, on a
/// socket with a small receive buffer, so frames are still queued at hangup.
pub fn frames_sent_at_hangup_match_what_the_server_received() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let listener = std::sync::Arc::new(runtime().block_on(async { socket.listen(8) }).unwrap());
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE");
    let mut esl = esl();
    for call in 0..2 {
        let listener = listener.clone();
        let server = runtime().spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut frames = 0usize;
            let mut first_seen = false;
            while let Some(Ok(message)) = ws.next().await {
                match message {
                    Message::Text(_) if !first_seen => {
                        first_seen = true;
                        // Deaf through the whole call and a little past its hangup.
                        tokio::time::sleep(Duration::from_millis(6300)).await;
                    }
                    Message::Binary(_) => frames += 1,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            frames
        });
        let uuid = ok_uuid(
            &esl.api(&format!("originate wsbridge/ws://127.0.0.1:{port}/frames-sent tone_6000ms XML wsbridge-test")),
        );
        let frames = runtime().block_on(server).unwrap();
        let hangup = events
            .wait_event(Duration::from_secs(5), |e| e.get("Unique-ID") == Some(&uuid))
            .expect("CHANNEL_HANGUP_COMPLETE");
        let reported: usize = hangup["variable_wsbridge_frames_sent"].parse().unwrap();
        let dropped: usize = hangup["variable_wsbridge_dropped_frames"].parse().unwrap();
        println!("call {call}: the server got {frames} frames; wsbridge_frames_sent={reported}, {dropped} dropped");
        assert_eq!(reported, frames, "call {call}");
        assert!(reported >= 150, "6 s of caller audio, less what was dropped: {reported} frames");
    }
}

/// What `make demo` runs: its own FreeSWITCH, wsbridge-demo echoing, one call.
pub fn make_demo_runs_end_to_end() {
    let out_dir = world().dir.join("demo-run");
    let mut printed = Vec::new();
    let report =
        test_support::demo::run(&crate::BUILD, &BUILD.built_demo(), &out_dir, &mut printed).expect("the demo runs");
    let printed = String::from_utf8(printed).unwrap();
    println!("{printed}");
    assert_eq!(report.first_message, r#" {"content-type":"audio/l16;rate=16000"}"#);
    // The demo's readiness probe is not a failed client.
    assert!(report.demo_errors.trim().is_empty(), "wsbridge-demo reported errors: {}", report.demo_errors);
    assert!(report.frames_to_server >= 95, "{report:?}");
    assert!(report.frames_from_server >= 90, "the echo came back: {report:?}");
    assert!((report.heard_hz - test_support::demo::TONE_HZ).abs() < 20.0, "{report:?}");
    assert!(report.heard_wav.exists() && report.recorded_wav.exists(), "{report:?}");
    assert!(report.clean_shutdown);
    for line in ["first message the server got:", "frames:", "tone heard back:", "what the caller heard:"] {
        assert!(printed.contains(line), "the demo prints {line:?}: {printed}");
    }
}
