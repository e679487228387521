//! Fork mode: a bridged call (the caller's loopback leg plays one tone, the
//! agent's another) streamed by `uuid_wsbridge_fork` and `wsbridge_fork`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::audio::{assert_tone, power_at, read_wav, rms, tone};
use crate::ws_server::{runtime, Connection, Received};
use crate::{esl, ok_uuid, recording_path, uri, wait_gone, world};

crate::tests! {
    fork::stereo_mixed_and_mono,
    fork::controls,
    fork::playback_and_clear,
    fork::a_fork_listens_unless_told_otherwise,
    fork::server_close_leaves_the_call_up,
    fork::two_named_forks,
    fork::twilio_tracks_match_the_mode,
    fork::dialplan_application,
    fork::load_100_calls (runs 60 s, alone),
}

/// A call whose caller plays `caller_hz` and whose agent plays `agent_hz`,
/// bridged. Returns (the caller's leg, the leg that is forked: the bridge's
/// A-leg, whose read is the caller and whose write is the agent).
fn bridged_tones(caller_hz: u32, agent_hz: u32, variables: &str, record: bool) -> (String, String) {
    let mut esl = esl();
    let caller = if record { format!("fork_tone_rec_{caller_hz}") } else { format!("fork_tone_{caller_hz}") };
    let reply = esl.api(&format!(
        "originate {{loopback_bowout=false{variables}}}loopback/fork_bridge_{agent_hz}/wsbridge-test {caller} XML wsbridge-test"
    ));
    let a = ok_uuid(&reply);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let other = esl.api(&format!("uuid_getvar {a} other_loopback_leg_uuid")).trim().to_string();
        if !other.is_empty() && !other.starts_with("_undef_") && !other.starts_with("-ERR") {
            // Wait for the bridge, so both tones flow.
            if esl.api(&format!("uuid_getvar {other} bridge_uuid")).trim().len() >= 36 {
                return (a, other);
            }
        }
        assert!(Instant::now() < deadline, "no bridged loopback leg for {a}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn api(command: &str) -> String {
    esl().api(command)
}

fn start(leg: &str, arguments: &str) {
    let reply = api(&format!("uuid_wsbridge_fork {leg} start {arguments}"));
    assert!(reply.starts_with("+OK"), "start {arguments}: {reply}");
}

fn channel(samples: &[i16], channels: usize, index: usize) -> Vec<i16> {
    samples.iter().skip(index).step_by(channels).copied().collect()
}

/// Frames that arrived between `from` and `to` seconds.
fn frames_between(received: &Received, from: f64, to: f64) -> Vec<&Vec<u8>> {
    received.frames.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, frame)| frame).collect()
}

fn samples_of(frames: &[&Vec<u8>]) -> Vec<i16> {
    frames.iter().flat_map(|bytes| bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]))).collect()
}

async fn receive_for(connection: &mut Connection, seconds: f64) -> Received {
    connection.receive_all(Duration::from_secs_f64(seconds)).await
}

pub fn stereo_mixed_and_mono() {
    let router = &world().router;
    let mut stereo = router.expect("/fork-stereo");
    let mut mixed = router.expect("/fork-mixed");
    let mut mono = router.expect("/fork-mono");
    let (caller, leg) = bridged_tones(1000, 2000, "", false);
    start(&leg, &format!("name=s {} stereo 16000 {{\"call\":\"42\"}}", uri("/fork-stereo")));
    start(&leg, &format!("name=m {} mixed 8000", uri("/fork-mixed")));
    start(&leg, &format!("name=o {} mono 16000", uri("/fork-mono")));
    let (mut s, mut m, mut o) =
        (stereo.next(Duration::from_secs(5)), mixed.next(Duration::from_secs(5)), mono.next(Duration::from_secs(5)));
    let (first, received_s, received_m, received_o) = runtime().block_on(async {
        let first = s.first_text().await;
        let (a, b, c) = tokio::join!(receive_for(&mut s, 3.0), receive_for(&mut m, 3.0), receive_for(&mut o, 3.0));
        (first, a, b, c)
    });
    let listed = api("wsbridge list");
    api(&format!("uuid_kill {caller}"));
    let closing = runtime().block_on(receive_for(&mut o, 3.0));
    wait_gone(&caller, Duration::from_secs(5));

    assert_eq!(first, r#" {"call":"42","content-type":"audio/l16;rate=16000;channels=2"}"#);
    assert!(listed.contains(",s\n") && listed.contains(",m\n") && listed.contains(",o\n"), "{listed}");
    // 50 frames a second of 20 ms, two channels of 320 samples.
    let window = frames_between(&received_s, 0.5, 2.5);
    println!("stereo: {} frames in 2 s; sizes {:?}", window.len(), window.first().map(|f| f.len()));
    assert!((95..=105).contains(&window.len()), "{} stereo frames in 2 s", window.len());
    assert!(window.iter().all(|frame| frame.len() == 1280), "stereo frames are 1280 bytes");
    let samples = samples_of(&window);
    let (left, right) = (channel(&samples, 2, 0), channel(&samples, 2, 1));
    assert_tone(&left, 16000, 1000.0, "stereo left (the caller)");
    assert_tone(&right, 16000, 2000.0, "stereo right (the agent)");

    let mixed = samples_of(&frames_between(&received_m, 0.5, 2.5));
    assert!(received_m.frames.iter().all(|(_, frame)| frame.len() == 320), "mixed 8 kHz frames are 320 bytes");
    let total = rms(&mixed).powi(2);
    let (at_1k, at_2k) = (power_at(&mixed, 8000, 1000.0) / total, power_at(&mixed, 8000, 2000.0) / total);
    println!("mixed: {:.0}% of the power at 1 kHz, {:.0}% at 2 kHz", at_1k * 100.0, at_2k * 100.0);
    assert!(at_1k > 0.3 && at_2k > 0.3, "mixed holds both tones");

    let mono = samples_of(&frames_between(&received_o, 0.5, 2.5));
    assert_tone(&mono, 16000, 1000.0, "mono (the caller only)");
    assert!(closing.closed && closing.close_code == Some(1000), "hangup closes the fork with 1000");
}

pub fn controls() {
    let router = &world().router;
    let mut incoming = router.expect("/fork-controls");
    let (caller, leg) = bridged_tones(1000, 2000, "", false);
    start(&leg, &format!("{} mono 8000", uri("/fork-controls")));
    let mut connection = incoming.next(Duration::from_secs(5));
    let received = runtime().block_on(async {
        connection.first_text().await;
        let mut received = Received::default();
        let start = tokio::time::Instant::now();
        let mut paused_at = None;
        let mut resumed_at = None;
        let mut stopped = false;
        while start.elapsed() < Duration::from_secs(10) {
            let next = tokio::time::timeout(Duration::from_millis(10), connection.ws.next()).await;
            let at = start.elapsed().as_secs_f64();
            match next {
                Ok(Some(Ok(Message::Binary(data)))) => received.frames.push((at, data.to_vec())),
                Ok(Some(Ok(Message::Text(text)))) => received.texts.push(format!("{at:.3} {text}")),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    received.closed = true;
                    received.close_reason = frame.as_ref().map(|f| f.reason.to_string());
                    received.close_code = frame.map(|f| u16::from(f.code));
                    break;
                }
                Ok(None) | Ok(Some(Err(_))) => break,
                _ => {}
            }
            if paused_at.is_none() && at > 1.0 {
                tokio::task::block_in_place(|| api(&format!("uuid_wsbridge_fork {leg} pause")));
                paused_at = Some(start.elapsed().as_secs_f64());
            }
            if let (Some(paused), None) = (paused_at, resumed_at) {
                if at > paused + 1.0 {
                    tokio::task::block_in_place(|| {
                        api(&format!("uuid_wsbridge_fork {leg} resume"));
                        api(&format!("uuid_wsbridge_fork {leg} send_text hello fork"));
                    });
                    resumed_at = Some(start.elapsed().as_secs_f64());
                }
            }
            if let (Some(resumed), false) = (resumed_at, stopped) {
                if at > resumed + 1.0 {
                    tokio::task::block_in_place(|| {
                        api(&format!("uuid_wsbridge_fork {leg} stop {{\"reason\":\"done\"}}"))
                    });
                    stopped = true;
                }
            }
        }
        (received, paused_at.unwrap_or(0.0), resumed_at.unwrap_or(0.0))
    });
    let up = api(&format!("uuid_exists {caller}"));
    api(&format!("uuid_kill {caller}"));
    let (received, paused, resumed) = received;
    println!("paused at {paused:.3}, resumed at {resumed:.3}; texts {:?}", received.texts);
    let during_pause = frames_between(&received, paused + 0.04, resumed).len();
    assert_eq!(during_pause, 0, "no frames from 40 ms after pause until resume");
    let after = frames_between(&received, resumed, resumed + 1.0).len();
    assert!(after >= 45, "frames come back after resume: {after} in 1 s");
    assert!(received.texts.iter().any(|t| t.ends_with(" hello fork")), "send_text arrives: {:?}", received.texts);
    let last_text = received.texts.last().expect("texts");
    assert!(last_text.ends_with(r#" {"reason":"done"}"#), "stop's metadata comes last: {:?}", received.texts);
    assert!(received.closed && received.close_code == Some(1000), "stop closes with 1000");
    assert_eq!(received.close_reason.as_deref(), Some("fork stopped"), "stop's close reason");
    assert_eq!(up.trim(), "true", "the call is still up after stop");
}

pub fn playback_and_clear() {
    let router = &world().router;
    let mut incoming = router.expect("/fork-playback");
    let recording = recording_path("fork-playback");
    let variables = format!(",fork_record={}", recording.display());
    let (caller, leg) = bridged_tones(1000, 2000, &variables, true);
    api(&format!("uuid_setvar {leg} wsbridge_fork_playback true"));
    start(&leg, &format!("{} mono 16000", uri("/fork-playback")));
    let mut connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(async {
        connection.first_text().await;
        // 2 s of 500 Hz; then clear after 1 s.
        connection.send_pcm(&tone(500.0, 16000, 2.0, 8000.0), 640).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        connection.ws.send(Message::text(r#"{"action":"clear"}"#)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    });
    api(&format!("uuid_kill {caller}"));
    wait_gone(&caller, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    // In 20 ms windows: where 500 Hz is heard (beside the agent's 2 kHz).
    let window = (rate / 50) as usize;
    let heard: Vec<bool> = samples.chunks(window).map(|w| power_at(w, rate, 500.0) > 1_000_000.0).collect();
    let first = heard.iter().position(|h| *h).expect("the server's tone is heard on the caller's side");
    let last = heard.iter().rposition(|h| *h).unwrap();
    let heard_ms = (last - first + 1) * 20;
    println!("server tone heard for {heard_ms} ms (sent 2000 ms, cleared after 1000 ms)");
    assert!((900..=1200).contains(&heard_ms), "clear silences the server's tone within a frame: heard {heard_ms} ms");
    let agent = &samples[..samples.len().min(rate as usize)];
    assert!(power_at(agent, rate, 2000.0) > 1_000_000.0, "the caller still hears the agent");
}

/// By default a fork's server can neither speak into the call nor end it.
pub fn a_fork_listens_unless_told_otherwise() {
    let router = &world().router;
    let mut incoming = router.expect("/fork-listens");
    let recording = recording_path("fork-listens");
    let variables = format!(",fork_record={}", recording.display());
    let (caller, leg) = bridged_tones(1000, 2000, &variables, true);
    start(&leg, &format!("name=vendor {} mono 16000", uri("/fork-listens")));
    let mut connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(async {
        connection.first_text().await;
        connection.send_pcm(&tone(500.0, 16000, 1.0, 8000.0), 640).await;
        connection.ws.send(Message::text(r#"{"action":"hangup"}"#)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    });
    let up = api(&format!("uuid_exists {caller}"));
    crate::log_showing(
        &world().dir.join("log").join("freeswitch.log"),
        &["fork vendor: the server asked to hang up the call; ignored (fork-allow-hangup is false)"],
    );

    // Told otherwise: the next fork's hangup ends the call.
    let mut incoming = router.expect("/fork-may-hang-up");
    api(&format!("uuid_setvar {leg} wsbridge_fork_allow_hangup true"));
    start(&leg, &format!("name=agent {} mono 16000", uri("/fork-may-hang-up")));
    let mut allowed = incoming.next(Duration::from_secs(5));
    runtime().block_on(async {
        allowed.first_text().await;
        allowed.ws.send(Message::text(r#"{"action":"hangup","cause":"normal_clearing"}"#)).await.unwrap();
    });
    wait_gone(&caller, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let window = (rate / 50) as usize;
    let heard = samples.chunks(window).filter(|w| power_at(w, rate, 500.0) > 1_000_000.0).count();
    println!(
        "a listen-only fork: {heard} of {} windows with the server's tone; the call stayed up: {}",
        samples.len() / window,
        up.trim()
    );
    assert_eq!(up.trim(), "true", "a fork's hangup is ignored by default");
    assert_eq!(heard, 0, "a fork's audio is not played by default");
    assert!(
        power_at(&samples[..samples.len().min(rate as usize)], rate, 2000.0) > 1_000_000.0,
        "the caller hears the agent"
    );
}

pub fn server_close_leaves_the_call_up() {
    let router = &world().router;
    let mut incoming = router.expect("/fork-server-close");
    let mut events = esl();
    events.subscribe("CUSTOM wsbridge::fork_start wsbridge::fork_stop wsbridge::connect wsbridge::disconnect");
    let (caller, leg) = bridged_tones(1000, 2000, "", false);
    start(&leg, &format!("name=srv {} mono 8000", uri("/fork-server-close")));
    let mut connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(async {
        connection.first_text().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        connection.close().await;
    });
    let stop = events
        .wait_event(Duration::from_secs(5), |e| {
            e.get("Event-Subclass").map(String::as_str) == Some("wsbridge::fork_stop")
                && e.get("Unique-ID") == Some(&leg)
        })
        .expect("wsbridge::fork_stop");
    std::thread::sleep(Duration::from_millis(500));
    let up = api(&format!("uuid_exists {caller}"));
    let listed = api("wsbridge list");
    api(&format!("uuid_kill {caller}"));
    assert_eq!(stop.get("WSBridge-Fork-Name").map(String::as_str), Some("srv"));
    assert_eq!(stop.get("Unique-ID").map(String::as_str), Some(leg.as_str()));
    println!("fork_stop: {:?}", stop.get("WSBridge-Fork-Reason"));
    assert_eq!(up.trim(), "true", "the server's close does not hang the call up");
    assert!(!listed.contains(",srv\n"), "the fork is gone from the list");
}

pub fn two_named_forks() {
    let router = &world().router;
    let (mut first, mut second) = (router.expect("/fork-two-a"), router.expect("/fork-two-b"));
    let (caller, leg) = bridged_tones(1000, 2000, "", false);
    start(&leg, &format!("name=a {} mono 8000", uri("/fork-two-a")));
    start(&leg, &format!("name=b {} mono 8000", uri("/fork-two-b")));
    let duplicate = api(&format!("uuid_wsbridge_fork {leg} start name=a {} mono 8000", uri("/fork-two-a")));
    let (mut a, mut b) = (first.next(Duration::from_secs(5)), second.next(Duration::from_secs(5)));
    let status: Value = serde_json::from_str(&api("wsbridge status json")).unwrap();
    // Other tests' forks may run beside these two.
    assert!(status["active_forks"].as_u64() >= Some(2), "wsbridge status counts both forks: {status}");
    let (received_a, received_b) = runtime().block_on(async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        tokio::task::block_in_place(|| api(&format!("uuid_wsbridge_fork {leg} stop name=a")));
        tokio::join!(receive_for(&mut a, 2.0), receive_for(&mut b, 2.0))
    });
    let after_b = received_b.frames.len();
    api(&format!("uuid_kill {caller}"));
    assert!(duplicate.starts_with("-ERR"), "a second fork named a is refused: {duplicate}");
    assert!(received_a.closed && received_a.close_code == Some(1000), "a is closed with 1000");
    assert!(after_b >= 90, "b goes on after a stops: {after_b} frames in 2 s");
}

pub fn twilio_tracks_match_the_mode() {
    let router = &world().router;
    let mut incoming = router.expect("/fork-twilio");
    let (caller, leg) = bridged_tones(1000, 2000, ",wsbridge_protocol=twilio", false);
    start(&leg, &format!("{} stereo 16000 {{\"agent\":\"7\"}}", uri("/fork-twilio")));
    let mut connection = incoming.next(Duration::from_secs(5));
    let received = runtime().block_on(receive_for(&mut connection, 2.0));
    api(&format!("uuid_kill {caller}"));
    let messages: Vec<Value> = received.texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect();
    let start = messages.iter().find(|m| m["event"] == "start").expect("a start message");
    assert_eq!(start["start"]["tracks"], serde_json::json!(["inbound", "outbound"]), "{start}");
    assert_eq!(start["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
    assert_eq!(start["start"]["mediaFormat"]["sampleRate"], 8000);
    assert_eq!(start["start"]["customParameters"]["agent"], "7");
    let tracks: Vec<&str> =
        messages.iter().filter(|m| m["event"] == "media").map(|m| m["media"]["track"].as_str().unwrap()).collect();
    let inbound = tracks.iter().filter(|t| **t == "inbound").count();
    let outbound = tracks.iter().filter(|t| **t == "outbound").count();
    println!("twilio: {inbound} inbound and {outbound} outbound media messages in 2 s");
    assert!(inbound >= 80 && inbound.abs_diff(outbound) <= 1, "{inbound} inbound, {outbound} outbound");
}

pub fn dialplan_application() {
    let router = &world().router;
    let mut incoming = router.expect("/fork-app");
    let mut esl = esl();
    let args = format!("{} stereo 16000", uri("/fork-app"));
    let reply = esl.api(&format!(
        "originate {{loopback_bowout=false,fork_args='{args}'}}loopback/fork_bridge_app_2000/wsbridge-test fork_tone_1000 XML wsbridge-test"
    ));
    let caller = ok_uuid(&reply);
    let mut connection = incoming.next(Duration::from_secs(5));
    let (first, received) = runtime().block_on(async {
        let first = connection.first_text().await;
        (first, receive_for(&mut connection, 2.0).await)
    });
    esl.api(&format!("uuid_kill {caller}"));
    assert_eq!(first, r#" {"content-type":"audio/l16;rate=16000;channels=2"}"#);
    let samples = samples_of(&frames_between(&received, 1.0, 2.0));
    assert_tone(&channel(&samples, 2, 0), 16000, 1000.0, "the application's fork, left");
    assert_tone(&channel(&samples, 2, 1), 16000, 2000.0, "the application's fork, right");
}

/// 100 bridged calls with a stereo fork each, for 30 s: no frame lost. Loss
/// is counted, not timed: every frame the module says it sent (its
/// `fork_stop` event) must have reached the fork's server, and each fork must
/// have sent its 50 frames a second.
pub fn load_100_calls() {
    const CALLS: usize = 100;
    const SECONDS: f64 = 30.0;
    let router = &world().router;
    let mut incoming = router.expect("/fork-load");
    let mut events = esl();
    events.subscribe("CUSTOM wsbridge::fork_stop");
    let mut legs = Vec::new();
    for _ in 0..CALLS {
        legs.push(bridged_tones(1000, 2000, "", false));
    }
    for (_, leg) in &legs {
        start(leg, &format!("{} stereo 16000 {{\"leg\":\"{leg}\"}}", uri("/fork-load")));
    }
    let mut connections: Vec<Connection> = (0..CALLS).map(|_| incoming.next(Duration::from_secs(10))).collect();
    let cpu_before = test_support::proc_stats::cpu_us(world().pid) as f64 / 1e6;
    let in_window: Vec<Received> = runtime().block_on(async {
        let tasks = connections.iter_mut().map(|connection| receive_for(connection, SECONDS));
        futures_util::future::join_all(tasks).await
    });
    let cpu = (test_support::proc_stats::cpu_us(world().pid) as f64 / 1e6) - cpu_before;
    let listed: Value = serde_json::from_str(&api("wsbridge list json")).unwrap();
    let dropped: u64 = listed.as_array().unwrap().iter().filter_map(|row| row["dropped_frames"].as_u64()).sum();
    for (_, leg) in &legs {
        api(&format!("uuid_wsbridge_fork {leg} stop"));
    }
    // What was still on its way when the window closed, up to each close 1000.
    let rest: Vec<Received> = runtime().block_on(async {
        let tasks = connections.iter_mut().map(|connection| receive_for(connection, 10.0));
        futures_util::future::join_all(tasks).await
    });
    let mut sent_by_leg = std::collections::HashMap::new();
    while sent_by_leg.len() < CALLS {
        let Some(event) = events.wait_event(Duration::from_secs(10), |event| {
            event.get("WSBridge-URI").is_some_and(|uri| uri.ends_with("/fork-load"))
        }) else {
            break;
        };
        let sent: usize = event.get("WSBridge-Frames-Sent").and_then(|n| n.parse().ok()).unwrap_or(0);
        sent_by_leg.insert(event.get("Unique-ID").cloned().unwrap_or_default(), sent);
    }
    for (caller, _) in &legs {
        api(&format!("uuid_kill {caller}"));
    }
    assert_eq!(sent_by_leg.len(), CALLS, "a fork_stop event for every fork");
    let mut shortfalls = Vec::new();
    let (mut least_sent, mut spread) = (usize::MAX, (usize::MAX, 0));
    for (window, rest) in in_window.iter().zip(&rest) {
        let first: Value = serde_json::from_str(window.texts[0].trim_start()).expect("the first message is JSON");
        let leg = first["leg"].as_str().expect("the fork's metadata names its leg");
        let sent = sent_by_leg[leg];
        let received = window.frames.len() + rest.frames.len();
        assert!(rest.closed && rest.close_code == Some(1000), "the fork of {leg} closed with 1000 after stop");
        if received != sent {
            shortfalls.push(format!("{leg}: {received} of {sent}"));
        }
        least_sent = least_sent.min(sent);
        let timely = frames_between(window, 1.0, SECONDS - 1.0).len();
        spread = (spread.0.min(timely), spread.1.max(timely));
    }
    println!(
        "fork load: {CALLS} stereo forks for {SECONDS} s: each sent at least {least_sent} frames, {} received fewer than sent, {dropped} dropped; {}..{} frames arrived per fork in the middle {:.0} s (not judged: arrival times); FreeSWITCH CPU {:.1}% of a core, {:.2}% per fork",
        shortfalls.len(),
        spread.0,
        spread.1,
        SECONDS - 2.0,
        cpu / SECONDS * 100.0,
        cpu / SECONDS * 100.0 / CALLS as f64
    );
    assert_eq!(dropped, 0, "no frame dropped");
    assert!(shortfalls.is_empty(), "frames lost between the module and the server: {shortfalls:?}");
    // Each fork lived longer than the window, at 50 frames a second.
    assert!(least_sent as f64 >= SECONDS * 50.0, "a fork sent only {least_sent} frames in over {SECONDS} s");
}
