//! Basic calls: caller audio up and server audio down, from originate, the
//! dialplan and SIP; hangups from either side; the wideband rates; reload
//! and unload; refused calls and their hangup causes; the sample dialplan.

use std::time::{Duration, Instant};

use test_support::esl::Esl;
use test_support::instance::FreeSwitch;

use crate::audio::{self, assert_tone, loud_span, read_wav, tone};
use crate::ws_server::{self, runtime};
use crate::{encode, esl, ok_uuid, operating, recording_path, uri, wait_gone, wait_gone_on, world, BUILD};

crate::tests! {
    uplink_16k_originate_destination,
    uplink_8k_dial_string_variables,
    downlink_burst_bridge_from_dialplan,
    sip_call_with_p_wsbridge_headers,
    caller_hangup_closes_with_1000,
    uplink_wideband_rates,
    reload_and_unload_and_config_file,
    connect_refused_is_destination_out_of_order,
    bad_input_gets_its_hangup_cause,
    dialplan_samples_reach_their_servers,
}

/// Frames and level per half second, for failure messages.
fn timeline(received: &ws_server::Received) -> String {
    let mut buckets: std::collections::BTreeMap<u64, (usize, Vec<i16>)> = Default::default();
    for (time, frame) in &received.frames {
        let bucket = buckets.entry((time * 2.0) as u64).or_default();
        bucket.0 += 1;
        bucket.1.extend(frame.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
    }
    buckets
        .iter()
        .map(|(half, (count, samples))| format!("{:.1}s:{count}f/rms{:.0}", *half as f64 / 2.0, audio::rms(samples)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Caller audio reaches the server: frame size, 50 frames/s, a 1 kHz tone,
/// and the close code when the call ends.
fn check_uplink(received: &ws_server::Received, rate: u32, seconds: f64) {
    let timeline = timeline(received);
    let frame_bytes = rate as usize / 50 * 2;
    assert!(received.frames.iter().all(|(_, f)| f.len() == frame_bytes), "every frame must be {frame_bytes} bytes");
    let expected = seconds * 50.0;
    let count = received.frames.len() as f64;
    assert!(
        (count - expected).abs() <= 0.05 * expected,
        "{count} frames for {seconds} s of audio, expected about {expected}: {timeline}"
    );
    let steady: Vec<f64> =
        received.frames.iter().map(|(t, _)| *t).filter(|t| (0.5..=seconds - 0.5).contains(t)).collect();
    let per_second = steady.len() as f64 / (seconds - 1.0);
    assert!((per_second - 50.0).abs() <= 2.5, "{per_second:.1} frames per second, expected 50: {timeline}");
    let samples = received.samples();
    let middle = &samples[samples.len() / 4..samples.len() * 3 / 4];
    assert_tone(middle, rate, 1000.0, "uplink");
    assert_eq!(received.close_code, Some(1000), "the caller's hangup must close with 1000");
}

pub fn uplink_16k_originate_destination() {
    let mut incoming = world().router.expect("/uplink16");
    let reply = esl().api(&format!("originate wsbridge/{} tone_3000ms XML wsbridge-test", uri("/uplink16")));
    ok_uuid(&reply);
    let mut connection = incoming.next(Duration::from_secs(5));
    assert_eq!(connection.subprotocol.as_deref(), Some("WSBRIDGE"));
    let received = runtime().block_on(async {
        let first = connection.first_text().await;
        assert_eq!(first, r#" {"content-type":"audio/l16;rate=16000"}"#);
        connection.receive_all(Duration::from_secs(8)).await
    });
    check_uplink(&received, 16000, 3.0);
}

pub fn uplink_8k_dial_string_variables() {
    let mut incoming = world().router.expect("/uplink8");
    let headers = encode(r#"{"from":"447700900123","to":"+441234","n":1}"#);
    let reply = esl().api(&format!(
        "originate {{P-wsbridge-websocket-uri={},P-wsbridge-websocket-content-type={},P-wsbridge-websocket-headers={headers}}}wsbridge tone_2000ms XML wsbridge-test",
        encode(&uri("/uplink8")),
        encode("audio/L16;rate=8000"),
    ));
    ok_uuid(&reply);
    let mut connection = incoming.next(Duration::from_secs(5));
    let received = runtime().block_on(async {
        let first = connection.first_text().await;
        assert_eq!(first, r#" {"from":"447700900123","to":"+441234","n":1,"content-type":"audio/l16;rate=8000"}"#);
        connection.receive_all(Duration::from_secs(6)).await
    });
    check_uplink(&received, 8000, 2.0);
}

/// The server's audio, sent in one burst, is played to the A-leg of a
/// dialplan `bridge wsbridge` in real time; the server's close hangs up
/// with NORMAL_CLEARING.
pub fn downlink_burst_bridge_from_dialplan() {
    let mut incoming = world().router.expect("/downlink");
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE");
    let recording = recording_path("downlink");
    // A mixed recording: FreeSWITCH's write-only recording drops its first
    // ~250 ms on a freshly bridged null channel (seen here, not our loss).
    let reply = esl().api(&format!(
        "originate {{P-wsbridge-websocket-uri={}}}null/downlink record_and_bridge XML wsbridge-test",
        encode(&uri("/downlink"))
    ));
    let a_leg = ok_uuid(&reply);
    let record = esl().api(&format!("uuid_record {a_leg} start {}", recording.display()));
    assert!(record.starts_with("+OK"), "uuid_record: {record}");
    let mut connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(async {
        connection.first_text().await;
        connection.send_pcm(&tone(1000.0, 16000, 1.0, 8000.0), 32000).await;
        tokio::time::sleep(Duration::from_millis(1600)).await;
        connection.close().await;
    });
    let hangup = events
        .wait_event(Duration::from_secs(5), |e| {
            e.get("Channel-Name").is_some_and(|n| n.starts_with("wsbridge/") && n.ends_with("/downlink"))
        })
        .expect("the wsbridge leg hung up");
    assert_eq!(hangup["Hangup-Cause"], "NORMAL_CLEARING");
    wait_gone(&a_leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("the tone was not heard");
    let heard = end - start;
    assert!((heard - 1.0).abs() <= 0.06, "heard {heard:.3} s of a 1 s tone");
    let tone_part = &samples[((start + 0.05) * rate as f64) as usize..((end - 0.05) * rate as f64) as usize];
    assert_tone(tone_part, rate, 1000.0, "downlink");
}

/// A real SIP call to FreeSWITCH's own profile, carrying URL-encoded
/// P-wsbridge-* headers, lands on an extension that only does `bridge wsbridge`.
pub fn sip_call_with_p_wsbridge_headers() {
    let mut incoming = world().router.expect("/sip");
    let recording = recording_path("sip");
    let reply = esl().api(&format!(
        "originate {{sip_h_P-wsbridge-websocket-uri={},sip_h_P-wsbridge-websocket-content-type={},sip_h_P-wsbridge-websocket-headers={},RECORD_READ_ONLY=true}}sofia/test/sip_to_wsbridge@127.0.0.1:{} tone_3000ms XML wsbridge-test",
        encode(&uri("/sip")),
        encode("audio/l16;rate=8000"),
        encode(r#"{"source":"sip","caller":"+447700900123"}"#),
        world().sip_port,
    ));
    let caller = ok_uuid(&reply);
    let record = esl().api(&format!("uuid_record {caller} start {}", recording.display()));
    assert!(record.starts_with("+OK"), "uuid_record: {record}");
    let mut connection = incoming.next(Duration::from_secs(5));
    let received = runtime().block_on(async {
        let first = connection.first_text().await;
        assert_eq!(first, r#" {"source":"sip","caller":"+447700900123","content-type":"audio/l16;rate=8000"}"#);
        connection.send_pcm(&tone(1000.0, 8000, 1.0, 8000.0), 640).await;
        connection.receive_all(Duration::from_secs(8)).await
    });
    assert!(received.closed, "the SIP caller's hangup must close the socket");
    assert_eq!(received.close_code, Some(1000));
    let samples = received.samples();
    assert!(samples.len() > 8000, "uplink: {} samples", samples.len());
    assert_tone(&samples[samples.len() / 4..samples.len() * 3 / 4], 8000, 1000.0, "uplink over SIP");
    wait_gone(&caller, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("the SIP caller did not hear the tone");
    assert!((end - start - 1.0).abs() <= 0.06, "SIP caller heard {:.3} s of a 1 s tone", end - start);
    let tone_part = &samples[((start + 0.05) * rate as f64) as usize..((end - 0.05) * rate as f64) as usize];
    assert_tone(tone_part, rate, 1000.0, "downlink over SIP");
}

pub fn caller_hangup_closes_with_1000() {
    let mut incoming = world().router.expect("/hangup");
    let reply = esl().api(&format!(
        "originate {{P-wsbridge-websocket-uri={}}}null/hangup record_and_bridge XML wsbridge-test",
        encode(&uri("/hangup"))
    ));
    let a_leg = ok_uuid(&reply);
    let mut connection = incoming.next(Duration::from_secs(5));
    let received = runtime().block_on(async {
        connection.first_text().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed = esl().api(&format!("uuid_kill {a_leg}"));
        assert!(killed.starts_with("+OK"), "uuid_kill: {killed}");
        connection.receive_all(Duration::from_secs(3)).await
    });
    assert!(received.closed, "no close frame after the caller hung up");
    assert_eq!(received.close_code, Some(1000));
}

/// The higher L16 rates FreeSWITCH supports: frame sizes and the tone.
pub fn uplink_wideband_rates() {
    for rate in [24000, 32000, 48000] {
        let path = format!("/uplink{rate}");
        let mut incoming = world().router.expect(&path);
        let reply = esl().api(&format!(
            "originate {{P-wsbridge-websocket-content-type={}}}wsbridge/{} tone_2000ms XML wsbridge-test",
            encode(&format!("audio/l16;rate={rate}")),
            uri(&path)
        ));
        ok_uuid(&reply);
        let mut connection = incoming.next(Duration::from_secs(5));
        let received = runtime().block_on(async {
            let first = connection.first_text().await;
            assert_eq!(first, format!(r#" {{"content-type":"audio/l16;rate={rate}"}}"#));
            connection.receive_all(Duration::from_secs(6)).await
        });
        check_uplink(&received, rate, 2.0);
    }
}

/// `reload` and `unload`/`load` of the module, idle and with a call up, in
/// a FreeSWITCH of its own so that no other test's calls are cut.
pub fn reload_and_unload_and_config_file() {
    let router = &world().router;
    let freeswitch = FreeSwitch::start(&BUILD, &router.base(), 1);
    let mut esl = freeswitch.esl();
    let call_works = |esl: &mut Esl, path: &str| {
        let mut incoming = router.expect(path);
        let uuid =
            ok_uuid(&esl.api(&format!("originate wsbridge/{}{path} tone_60000ms XML wsbridge-test", router.base())));
        let mut connection = incoming.next(Duration::from_secs(5));
        assert_eq!(runtime().block_on(connection.first_text()), r#" {"content-type":"audio/l16;rate=16000"}"#);
        (uuid, connection)
    };

    let reply = esl.api("reload mod_wsbridge");
    assert!(reply.contains("+OK"), "idle reload: {reply}");
    let (uuid, mut connection) = call_works(&mut esl, "/reload-1");

    // With that call up, FreeSWITCH refuses to unload a module in use; the call goes on.
    for command in ["reload mod_wsbridge", "unload mod_wsbridge"] {
        let reply = esl.api(command);
        assert!(reply.contains("in use"), "{command} with a call up: {reply}");
        assert_eq!(esl.api(&format!("uuid_exists {uuid}")).trim(), "true", "{command} must not cut the call");
    }
    std::thread::sleep(Duration::from_millis(1000));
    let killed = esl.api(&format!("uuid_kill {uuid}"));
    assert!(killed.starts_with("+OK"), "uuid_kill: {killed}");
    let received = runtime().block_on(connection.receive_all(Duration::from_secs(5)));
    assert!(
        received.frames.len() >= 45,
        "audio must keep flowing after a refused reload: {} frames",
        received.frames.len()
    );
    assert_eq!(received.close_code, Some(1000));
    wait_gone_on(&mut esl, &uuid, Duration::from_secs(5));

    // The session lets go of the endpoint a moment after it leaves the channel list.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = esl.api("reload mod_wsbridge");
        if !reply.contains("in use") {
            assert!(
                reply.contains("+OK module loaded") || !reply.contains("-ERR"),
                "reload after the call ended: {reply}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still in use 5 s after the last call ended: {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let reply = esl.api("unload mod_wsbridge");
    assert!(reply.contains("+OK"), "unload: {reply}");
    assert_eq!(esl.api("module_exists mod_wsbridge").trim(), "false");
    let reply = esl.api("originate wsbridge/ws://127.0.0.1:9/x &park");
    assert!(reply.contains("-ERR"), "no endpoint after unload: {reply}");
    let reply = esl.api("load mod_wsbridge");
    assert!(reply.contains("+OK"), "load: {reply}");
    let (uuid, _connection) = call_works(&mut esl, "/reload-2");
    assert!(esl.api(&format!("uuid_kill {uuid}")).starts_with("+OK"));
    wait_gone_on(&mut esl, &uuid, Duration::from_secs(5));
    operating::config_file_and_reloadxml(&freeswitch);
    assert!(freeswitch.stop(), "FreeSWITCH must shut down cleanly after reloads");
}

pub fn connect_refused_is_destination_out_of_order() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let reply = esl().api(&format!("originate wsbridge/ws://127.0.0.1:{port}/nobody &park"));
    assert_eq!(reply.trim(), "-ERR DESTINATION_OUT_OF_ORDER");
    assert!(started.elapsed() < Duration::from_secs(5));
}

pub fn bad_input_gets_its_hangup_cause() {
    let long_headers = encode(&format!(r#"{{"a":"{}"}}"#, "x".repeat(1100)));
    let ws = encode(&uri("/never"));
    let cases: Vec<(String, &str)> = vec![
        ("wsbridge".into(), "DESTINATION_OUT_OF_ORDER"),
        (format!("{{P-wsbridge-websocket-uri={}}}wsbridge", encode("gopher://127.0.0.1/x")), "INVALID_URL"),
        ("{P-wsbridge-websocket-uri=ws%3A%2F%2F127.0.0.1%2}wsbridge".into(), "INVALID_URL"),
        (
            format!("{{P-wsbridge-websocket-uri={ws},P-wsbridge-websocket-content-type=audio%2}}wsbridge"),
            "SERVICE_NOT_IMPLEMENTED",
        ),
        (format!("{{P-wsbridge-websocket-uri={ws},P-wsbridge-websocket-headers=%7B%}}wsbridge"), "INVALID_IE_CONTENTS"),
        (
            format!("{{P-wsbridge-websocket-uri={ws},P-wsbridge-websocket-headers={}}}wsbridge", encode("[1,2]")),
            "INVALID_IE_CONTENTS",
        ),
        (
            format!("{{P-wsbridge-websocket-uri={ws},P-wsbridge-websocket-headers={}}}wsbridge", encode("{\"a\":")),
            "INVALID_IE_CONTENTS",
        ),
        (
            format!("{{P-wsbridge-websocket-uri={ws},P-wsbridge-websocket-headers={long_headers}}}wsbridge"),
            "MANDATORY_IE_LENGTH_ERROR",
        ),
        (
            format!(
                "{{P-wsbridge-websocket-uri={ws},P-wsbridge-websocket-content-type={}}}wsbridge",
                encode("audio/opus")
            ),
            "SERVICE_NOT_IMPLEMENTED",
        ),
        (format!("{{P-wsbridge-websocket-uri={ws},wsbridge_protocol=sip}}wsbridge"), "SERVICE_NOT_IMPLEMENTED"),
        (
            format!("{{P-wsbridge-websocket-uri={ws},sip_h_P-wsbridge-websocket-protocol=x}}wsbridge"),
            "SERVICE_NOT_IMPLEMENTED",
        ),
        (
            format!(
                "{{P-wsbridge-websocket-uri={ws},P-wsbridge-websocket-content-type={}}}wsbridge",
                encode("audio/l16;rate=11025")
            ),
            "SERVICE_NOT_IMPLEMENTED",
        ),
    ];
    let mut esl = esl();
    for (dial, cause) in &cases {
        let reply = esl.api(&format!("originate {dial} &park"));
        assert_eq!(reply.trim(), format!("-ERR {cause}"), "originate {dial}");
    }
    assert!(esl.api("status").contains("is ready"), "FreeSWITCH must survive bad input");
    let refusals = |log: &str| log.lines().filter(|line| line.contains("refusing the call:")).count();
    crate::log_when(&world().dir.join("log/freeswitch.log"), "each refusal logged", |log| refusals(log) >= cases.len());
}

/// The shipped dialplan examples, loaded as they are.
pub fn dialplan_samples_reach_their_servers() {
    let mut bot = world().router.expect("/bot");
    let reply = esl().api("originate null/sample wsbridge XML wsbridge-examples");
    let a_leg = ok_uuid(&reply);
    let mut connection = bot.next(Duration::from_secs(5));
    let first = runtime().block_on(connection.first_text());
    // The sample checks the caller's number at routing time, when originate's default
    // 0000000000 is still in place (it flips the caller ID to the dialled "sample" later).
    assert_eq!(first, r#" {"caller":"0000000000","called":"wsbridge","content-type":"audio/l16;rate=16000"}"#);
    runtime().block_on(connection.close());
    wait_gone(&a_leg, Duration::from_secs(5));

    let mut dial = world().router.expect("/dial");
    let a_leg = ok_uuid(&esl().api("originate null/sample wsbridge-dial XML wsbridge-examples"));
    let mut connection = dial.next(Duration::from_secs(5));
    assert_eq!(runtime().block_on(connection.first_text()), r#" {"content-type":"audio/l16;rate=8000"}"#);
    runtime().block_on(connection.close());
    wait_gone(&a_leg, Duration::from_secs(5));
}
