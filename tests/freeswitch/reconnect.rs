//! When the server goes away: fallback servers at setup, and reconnecting
//! mid-call, in a real FreeSWITCH.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::audio::{loud_span, read_wav, tone};
use crate::media::bridged_call;
use crate::ws_server::{runtime, Connection};
use crate::{encode, esl, ok_uuid, recording_path, uri, wait_gone, world};

crate::tests! {
    reconnect::fallbacks_at_setup,
    reconnect::a_reset_mid_call_resumes_on_the_same_server,
    reconnect::a_reset_mid_call_resumes_on_the_fallback,
    reconnect::a_server_gone_for_good_hangs_up_after_the_budget,
    reconnect::a_close_frame_still_ends_the_call,
    reconnect::hundred_calls_each_dropped_once (runs 90 s, alone),
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server that accepts TCP and never answers the upgrade.
fn silent_server() -> u16 {
    let listener = runtime().block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime().spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    port
}

fn hangup_cause(events: &mut test_support::esl::Esl, uuid: &str, limit: Duration) -> (String, Instant) {
    let event = events
        .wait_event(limit, |e| e.get("Unique-ID").map(String::as_str) == Some(uuid))
        .unwrap_or_else(|| panic!("{uuid} did not hang up within {limit:?}"));
    (event["Hangup-Cause"].clone(), Instant::now())
}

/// Reads until a text message contains `needle`, with binary frames counted.
async fn text_with(connection: &mut Connection, needle: &str, limit: Duration) -> (String, usize) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut frames = 0;
    loop {
        match tokio::time::timeout_at(deadline, connection.ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.contains(needle) => return (text.to_string(), frames),
            Ok(Some(Ok(Message::Binary(_)))) => frames += 1,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no text with {needle:?}: {other:?}"),
        }
    }
}

/// Counts caller frames for `limit`.
async fn frames_for(connection: &mut Connection, limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let mut frames = 0;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, connection.ws.next()).await {
        if message.is_binary() {
            frames += 1;
        }
    }
    frames
}

/// A refused primary and a primary that never upgrades both give way to the
/// fallback, which gets the call's audio and is heard; a barred fallback
/// refuses the call before any connection.
pub fn fallbacks_at_setup() {
    let mut fallback = world().router.expect("/fallback");
    let mut esl = esl();
    let fallbacks = encode(&format!("ws://127.0.0.1:{}/nowhere {}", closed_port(), uri("/fallback")));
    let started = Instant::now();
    let uuid = ok_uuid(&esl.api(&format!(
        "originate {{wsbridge_fallback_uris={fallbacks}}}wsbridge/ws://127.0.0.1:{}/refused tone_3000ms XML wsbridge-test",
        closed_port()
    )));
    let mut connection = fallback.next(Duration::from_secs(5));
    let answered_in = started.elapsed();
    let frames = runtime().block_on(async {
        connection.first_text().await;
        frames_for(&mut connection, Duration::from_secs(1)).await
    });
    println!("fallback after a refusal: answered in {} ms, {frames} caller frames in 1 s", answered_in.as_millis());
    assert!(frames >= 40, "caller audio reaches the fallback: {frames}");
    assert!(esl.api(&format!("uuid_kill {uuid}")).starts_with("+OK"));

    // A primary that accepts TCP but never upgrades: the fallback after the connect timeout.
    let silent = silent_server();
    let started = Instant::now();
    let reply = esl.api(&format!(
        "originate {{wsbridge_connect_timeout_ms=1000,wsbridge_fallback_uris={}}}wsbridge/ws://127.0.0.1:{silent}/silent &park",
        encode(&uri("/fallback"))
    ));
    let uuid = ok_uuid(&reply);
    let mut connection = fallback.next(Duration::from_secs(5));
    let took = started.elapsed();
    runtime().block_on(connection.first_text());
    println!("fallback after a silent primary: answered in {} ms", took.as_millis());
    assert!(took >= Duration::from_millis(950) && took < Duration::from_millis(2500), "{took:?}");
    assert!(esl.api(&format!("uuid_kill {uuid}")).starts_with("+OK"));

    // Server audio from the fallback is heard.
    let recording = recording_path("fallback-heard");
    let a_leg = bridged_call(
        "/refused",
        &format!(
            "wsbridge_fallback_uris={},P-wsbridge-websocket-uri={}",
            encode(&uri("/fallback")),
            encode(&format!("ws://127.0.0.1:{}/refused", closed_port()))
        ),
        &recording,
    );
    let mut connection = fallback.next(Duration::from_secs(5));
    runtime().block_on(async {
        connection.first_text().await;
        connection.send_pcm(&tone(1000.0, 16000, 1.0, 8000.0), 640).await;
        connection.ws.send(Message::text(r#"{"action":"mark","name":"done"}"#)).await.unwrap();
        text_with(&mut connection, "done", Duration::from_secs(3)).await;
        connection.close().await;
    });
    wait_gone(&a_leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("the fallback's audio is heard");
    assert!((end - start - 1.0).abs() < 0.1, "heard {:.2} s of 1 s", end - start);
}

/// Drops the server side of `connection` without a close frame (a TCP reset or close).
fn drop_connection(connection: Connection) {
    let tcp = connection.ws.into_inner();
    let _ = tcp.set_zero_linger(); // a reset, not a FIN
    drop(tcp);
}

/// A reset mid-call with reconnect on: the same server takes the call back,
/// hears the first message and `resumed`, gets the caller's audio, and its
/// audio is heard; the gap is reported.
pub fn a_reset_mid_call_resumes_on_the_same_server() {
    let path = "/resume-same";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE CUSTOM wsbridge::reconnecting wsbridge::reconnected");
    let recording = recording_path("resume-same");
    let a_leg = bridged_call(path, "wsbridge_reconnect_ms=5000", &recording);
    let mut first = incoming.next(Duration::from_secs(5));
    let greeting = runtime().block_on(first.first_text());
    std::thread::sleep(Duration::from_millis(500));
    drop_connection(first);
    let mut second = incoming.next(Duration::from_secs(5));
    let (again, resumed, frames) = runtime().block_on(async {
        let again = second.first_text().await;
        let (resumed, _) = text_with(&mut second, "resumed", Duration::from_secs(2)).await;
        let frames = frames_for(&mut second, Duration::from_secs(1)).await;
        second.send_pcm(&tone(1000.0, 16000, 1.0, 8000.0), 640).await;
        second.ws.send(Message::text(r#"{"action":"mark","name":"after"}"#)).await.unwrap();
        text_with(&mut second, "after", Duration::from_secs(3)).await;
        second.close().await;
        (again, resumed, frames)
    });
    assert_eq!(again, greeting, "the first message again, exactly");
    let resumed: serde_json::Value = serde_json::from_str(&resumed).unwrap();
    println!("{path}: {resumed}; {frames} caller frames in the second after");
    assert_eq!(resumed["reconnects"], 1);
    assert!(resumed["gap_ms"].as_u64().unwrap() < 1000, "{resumed}");
    assert!(frames >= 45, "caller audio after the reset reaches the server: {frames}");
    let reconnected = events
        .wait_event(Duration::from_secs(5), |e| {
            e.get("Event-Subclass").map(String::as_str) == Some("wsbridge::reconnected")
        })
        .expect("wsbridge::reconnected");
    assert!(reconnected["WSBridge-Gap-MS"].parse::<u64>().is_ok());
    let hangup = events
        .wait_event(Duration::from_secs(10), |e| {
            e.get("Event-Name").map(String::as_str) == Some("CHANNEL_HANGUP_COMPLETE")
                && e.get("Channel-Name").is_some_and(|n| n.starts_with("wsbridge/") && n.ends_with(path))
        })
        .expect("the wsbridge leg's hangup");
    assert_eq!(hangup["variable_wsbridge_reconnects"], "1");
    assert!(hangup["variable_wsbridge_gap_ms"].parse::<u64>().unwrap() < 1000);
    wait_gone(&a_leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("audio after the reconnect is heard");
    assert!((end - start - 1.0).abs() < 0.1, "heard {:.2} s of 1 s", end - start);
}

/// A reset with a fallback configured: the call resumes on the fallback when the primary is gone.
pub fn a_reset_mid_call_resumes_on_the_fallback() {
    let listener = runtime().block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut fallback = world().router.expect("/resume-fallback");
    let mut esl = esl();
    let dial = format!(
        "originate {{wsbridge_reconnect_ms=5000,wsbridge_fallback_uris={}}}wsbridge/ws://127.0.0.1:{port}/primary tone_10000ms XML wsbridge-test",
        encode(&uri("/resume-fallback"))
    );
    let primary = runtime().spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        ws.next().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Gone: the primary's socket and its listener both close.
        drop(ws);
        drop(listener);
    });
    let uuid = ok_uuid(&esl.api(&dial));
    runtime().block_on(primary).unwrap();
    let mut connection = fallback.next(Duration::from_secs(5));
    let resumed = runtime().block_on(async {
        connection.first_text().await;
        let (resumed, _) = text_with(&mut connection, "resumed", Duration::from_secs(2)).await;
        resumed
    });
    println!("resumed on the fallback: {resumed}");
    assert!(resumed.contains(r#""reconnects":1"#), "{resumed}");
    assert!(esl.api(&format!("uuid_kill {uuid}")).starts_with("+OK"));
}

/// The server goes away for good: the call hangs up when the budget is
/// spent, within ±500 ms, with NETWORK_OUT_OF_ORDER.
pub fn a_server_gone_for_good_hangs_up_after_the_budget() {
    let listener = runtime().block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE");
    let gone = runtime().spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        ws.next().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(listener);
        drop(ws);
        Instant::now()
    });
    let uuid = ok_uuid(
        &esl().api(&format!("originate {{wsbridge_reconnect_ms=3000}}wsbridge/ws://127.0.0.1:{port}/gone &park")),
    );
    let gone_at = runtime().block_on(gone).unwrap();
    let (cause, at) = hangup_cause(&mut events, &uuid, Duration::from_secs(8));
    let after = at.duration_since(gone_at);
    println!("server gone: hung up {} ms after, {cause}", after.as_millis());
    assert_eq!(cause, "NETWORK_OUT_OF_ORDER");
    assert!(after >= Duration::from_millis(2500) && after <= Duration::from_millis(3500), "{after:?}");
}

/// A close frame is the server's choice: the call ends at once, reconnect or not.
pub fn a_close_frame_still_ends_the_call() {
    let path = "/close-with-reconnect";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE");
    let uuid = ok_uuid(&esl().api(&format!("originate {{wsbridge_reconnect_ms=5000}}wsbridge/{} &park", uri(path))));
    let mut connection = incoming.next(Duration::from_secs(5));
    let closed_at = runtime().block_on(async {
        connection.first_text().await;
        let at = Instant::now();
        connection.close().await;
        at
    });
    let (cause, at) = hangup_cause(&mut events, &uuid, Duration::from_secs(5));
    assert_eq!(cause, "NORMAL_CLEARING");
    assert!(at.duration_since(closed_at) < Duration::from_millis(500));
}

/// Places 100 calls whose server drops each connection once, a second in;
/// returns how many were dropped and how many resumed with caller audio.
fn hundred_dropped_once(freeswitch: &test_support::instance::FreeSwitch, path: &str) -> (usize, usize) {
    let mut incoming = world().router.expect(path);
    let mut esl = freeswitch.esl();
    for _ in 0..100 {
        let reply = esl.api(&format!(
            "bgapi originate {{wsbridge_reconnect_ms=5000}}wsbridge/{} tone_6000ms XML wsbridge-test",
            uri(path)
        ));
        assert!(reply.contains("+OK"), "{reply}");
    }
    let outcome = runtime().block_on(async {
        let mut dropping = Vec::new();
        while dropping.len() < 100 {
            let Ok(Some(mut first)) = tokio::time::timeout(Duration::from_secs(10), incoming.recv()).await else {
                break;
            };
            dropping.push(tokio::spawn(async move {
                first.first_text().await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
                drop_connection(first);
            }));
        }
        let dropped = dropping.len();
        let mut resuming = Vec::new();
        while resuming.len() < dropped {
            let Ok(Some(mut second)) = tokio::time::timeout(Duration::from_secs(10), incoming.recv()).await else {
                break;
            };
            resuming.push(tokio::spawn(async move {
                second.first_text().await;
                text_with(&mut second, "resumed", Duration::from_secs(3)).await;
                frames_for(&mut second, Duration::from_secs(8)).await
            }));
        }
        let mut with_audio = 0;
        for handle in resuming {
            if handle.await.unwrap_or(0) > 0 {
                with_audio += 1;
            }
        }
        (dropped, with_audio)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while esl.api("wsbridge list").contains(path) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!esl.api("wsbridge list").contains(path), "no call left over");
    outcome
}

/// 100 calls whose server drops every connection once mid-call: all resume,
/// and FreeSWITCH's memory and descriptors are back where they were once the
/// calls end. A FreeSWITCH of its own, warmed up by a first round, so other
/// tests and FreeSWITCH's own first-use growth do not blur the figures.
pub fn hundred_calls_each_dropped_once() {
    // As in the churn test: malloc keeps the free top of its heaps, so a reading is the most a round needed.
    let freeswitch = test_support::instance::FreeSwitch::start_with_env(
        &crate::BUILD,
        &world().router.base(),
        3,
        &[("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=4294967295")],
    );
    let pid = freeswitch.pid();
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    // FreeSWITCH itself grows over its first few hundred calls, null endpoint calls too.
    let warm_up: Vec<(usize, usize)> =
        (0..3).map(|round| hundred_dropped_once(&freeswitch, &format!("/drop-once-warm-up-{round}"))).collect();
    std::thread::sleep(Duration::from_secs(2));
    let (rss_before, fds_before) = (test_support::proc_stats::rss_kib(pid), fds());
    let measured = hundred_dropped_once(&freeswitch, "/drop-once");
    std::thread::sleep(Duration::from_secs(2));
    let (rss_after, fds_after) = (test_support::proc_stats::rss_kib(pid), fds());
    println!(
        "100 calls dropped once: warm-up {warm_up:?}, measured {measured:?} (dropped, resumed with audio); RSS {rss_before} -> {rss_after} KiB; fds {fds_before} -> {fds_after}"
    );
    assert!(warm_up.iter().all(|round| *round == (100, 100)), "{warm_up:?}");
    assert_eq!(measured, (100, 100));
    assert!(fds_after <= fds_before + 5, "file descriptors {fds_before} -> {fds_after}");
    // FreeSWITCH itself still grows about 40 KiB a call over its first thousand
    // calls (4 MiB for these 100); leaking each call's state (its playout
    // buffer alone is 64 KiB) would add 10 MiB or more.
    assert!(rss_after <= rss_before + 8 * 1024, "RSS {rss_before} -> {rss_after} KiB");
    assert!(freeswitch.stop(), "FreeSWITCH shuts down cleanly");
}
