//! Media that holds up: bursts, re-framing, barge-in, marks, comfort noise,
//! DTMF both ways, and a server that stops reading.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use test_support::proc_stats::rss_kib;
use tokio_tungstenite::tungstenite::Message;

use crate::audio::{self, assert_tone, loud_span, power_at, read_wav, rms, tone};
use crate::ws_server::{runtime, Connection};
use crate::{encode, esl, ok_uuid, recording_path, uri, wait_gone, world};

crate::tests! {
    media::ten_minute_burst_into_a_small_buffer (runs 600 s, beside load),
    media::burst_30s_in_one_message,
    media::burst_30s_in_1500_messages,
    media::odd_sized_messages_play_continuously,
    media::clear_stops_playback_within_40ms,
    media::mark_echo_matches_end_of_audio,
    media::comfort_noise_level_and_spectrum,
    media::dtmf_both_ways_over_sip,
    media::server_that_stops_reading_the_uplink,
}

/// The shared FreeSWITCH's resident memory, in KiB.
pub fn freeswitch_rss_kib() -> u64 {
    rss_kib(world().pid)
}

/// A null A-leg that bridges to wsbridge from the dialplan, recorded (read
/// and write mixed) from before the bridge. Returns the A-leg's UUID.
pub(crate) fn bridged_call(path: &str, variables: &str, recording: &std::path::Path) -> String {
    let vars = if variables.is_empty() { String::new() } else { format!(",{variables}") };
    let reply = esl().api(&format!(
        "originate {{P-wsbridge-websocket-uri={}{vars}}}null/{} record_and_bridge XML wsbridge-test",
        encode(&uri(path)),
        path.trim_start_matches('/')
    ));
    let a_leg = ok_uuid(&reply);
    let record = esl().api(&format!("uuid_record {a_leg} start {}", recording.display()));
    assert!(record.starts_with("+OK"), "uuid_record: {record}");
    a_leg
}

/// Reads the server's side until a text message contains `needle`; returns it and when it came.
pub(crate) async fn wait_text(connection: &mut Connection, needle: &str, limit: Duration) -> (String, Instant) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, connection.ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.contains(needle) => return (text.to_string(), Instant::now()),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no text with {needle:?}: {other:?}"),
        }
    }
}

fn seconds(samples: usize, rate: u32) -> f64 {
    samples as f64 / rate as f64
}

/// 30 s of tone sent at once, in one message or in 1,500, is all played at
/// real-time pace; FreeSWITCH's memory stays bounded meanwhile.
fn burst(path: &str, message_bytes: usize) {
    let mut incoming = world().router.expect(path);
    let recording = recording_path(path.trim_start_matches('/'));
    let rss_before = freeswitch_rss_kib();
    let a_leg = bridged_call(path, "", &recording);
    let mut connection = incoming.next(Duration::from_secs(5));
    let (sent_at, marked_at, rss_peak) = runtime().block_on(async {
        connection.first_text().await;
        let sent_at = Instant::now();
        connection.send_pcm(&tone(1000.0, 16000, 30.0, 8000.0), message_bytes).await;
        connection.ws.send(Message::text(r#"{"action":"mark","name":"end"}"#)).await.unwrap();
        let mut rss_peak = 0;
        let watch = async {
            loop {
                rss_peak = rss_peak.max(freeswitch_rss_kib());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let (_, marked_at) = tokio::select! {
            marked = wait_text(&mut connection, r#""name":"end""#, Duration::from_secs(40)) => marked,
            _ = watch => unreachable!(),
        };
        connection.close().await;
        (sent_at, marked_at, rss_peak)
    });
    wait_gone(&a_leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("tone heard");
    let heard = end - start;
    assert!((heard - 30.0).abs() <= 0.3, "heard {heard:.3} s of a 30 s burst");
    let middle = ((start + 14.5) * rate as f64) as usize;
    assert_tone(&samples[middle..middle + rate as usize], rate, 1000.0, path);
    let wall = marked_at.duration_since(sent_at).as_secs_f64();
    assert!((wall - 30.0).abs() <= 0.3, "the mark came {wall:.3} s after the burst: not real-time pace");
    let growth = rss_peak.saturating_sub(rss_before);
    println!("{path}: heard {heard:.3} s; FreeSWITCH RSS grew by at most {growth} KiB during the burst");
    assert!(growth < 64 * 1024, "FreeSWITCH grew by {growth} KiB for 30 s (938 KiB) of audio");
}

pub fn burst_30s_in_one_message() {
    burst("/burst-one", 30 * 32000);
}

pub fn burst_30s_in_1500_messages() {
    burst("/burst-many", 640);
}

/// 333-byte messages (odd, and not a frame's multiple): what the caller hears
/// is the sent samples, exactly and in order.
pub fn odd_sized_messages_play_continuously() {
    let path = "/odd-sizes";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("odd-sizes");
    let a_leg =
        bridged_call(path, &format!("P-wsbridge-websocket-content-type={}", encode("audio/l16;rate=8000")), &recording);
    let mut connection = incoming.next(Duration::from_secs(5));
    let sent = tone(1000.0, 8000, 3.0, 8000.0);
    runtime().block_on(async {
        connection.first_text().await;
        // An odd byte count splits samples across messages too.
        connection.send_pcm(&sent, 333).await;
        connection.ws.send(Message::text(r#"{"action":"mark","name":"done"}"#)).await.unwrap();
        wait_text(&mut connection, "done", Duration::from_secs(6)).await;
        connection.close().await;
    });
    wait_gone(&a_leg, Duration::from_secs(5));
    let (heard, rate) = read_wav(&recording);
    assert_eq!(rate, 8000);
    let (start, _) = loud_span(&heard, rate, 1000.0).expect("tone heard");
    // Skip the 5 ms fade-in, then line the rest up sample for sample.
    let skip = 80;
    let expected = &sent[skip..sent.len() - 8];
    let first = (start * rate as f64) as usize;
    let error_at = |offset: usize| -> i32 {
        expected.iter().zip(&heard[offset..]).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap_or(i32::MAX)
    };
    let best = (first.saturating_sub(80)..first + 160)
        .filter(|offset| offset + expected.len() <= heard.len())
        .min_by_key(|offset| error_at(*offset))
        .expect("recording long enough");
    let worst = error_at(best);
    assert!(worst <= 40, "3 s of 333-byte messages: a sample is off by {worst} (lost, repeated or stale bytes)");
}

/// Barge-in: after `clear`, the caller hears the tone stop within 40 ms of
/// the `cleared` reply.
pub fn clear_stops_playback_within_40ms() {
    let path = "/clear";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("clear");
    let a_leg = bridged_call(path, "", &recording);
    let mut connection = incoming.next(Duration::from_secs(5));
    let (played_for, replies) = runtime().block_on(async {
        connection.first_text().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent_at = Instant::now();
        connection.send_pcm(&tone(1000.0, 16000, 5.0, 8000.0), 32000).await;
        connection.ws.send(Message::text(r#"{"action":"mark","name":"never"}"#)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        connection.ws.send(Message::text(r#"{"action":"clear"}"#)).await.unwrap();
        let (mark, _) = wait_text(&mut connection, "never", Duration::from_secs(2)).await;
        let (cleared, cleared_at) = wait_text(&mut connection, "cleared", Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        connection.close().await;
        (cleared_at.duration_since(sent_at).as_secs_f64(), [mark, cleared])
    });
    assert_eq!(replies[0], r#"{"event":"mark","name":"never","cleared":true}"#);
    assert_eq!(replies[1], r#"{"event":"cleared"}"#);
    wait_gone(&a_leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("tone heard");
    let heard = end - start;
    assert!(heard < 2.0, "the tone went on for {heard:.3} s after the clear");
    let lag = played_for - heard;
    assert!(
        lag.abs() <= 0.040,
        "quiet {:.0} ms from the cleared reply (tone {heard:.3} s, reply at {played_for:.3} s)",
        lag * 1000.0
    );
    let after = &samples[((end + 0.05) * rate as f64) as usize..];
    assert!(rms(after) < 100.0, "after the clear the caller hears {:.0} RMS", rms(after));
}

/// A mark is echoed when the audio before it has been played, within 40 ms.
pub fn mark_echo_matches_end_of_audio() {
    let path = "/mark";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("mark");
    let a_leg = bridged_call(path, "", &recording);
    let mut connection = incoming.next(Duration::from_secs(5));
    let (mark_after, mark) = runtime().block_on(async {
        connection.first_text().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent_at = Instant::now();
        connection.send_pcm(&tone(1000.0, 16000, 2.0, 8000.0), 3200).await;
        connection.ws.send(Message::text(r#"{"action":"mark","name":"greeting-done"}"#)).await.unwrap();
        let (mark, marked_at) = wait_text(&mut connection, "greeting-done", Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        connection.close().await;
        (marked_at.duration_since(sent_at).as_secs_f64(), mark)
    });
    assert_eq!(mark, r#"{"event":"mark","name":"greeting-done"}"#);
    wait_gone(&a_leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("tone heard");
    let heard = end - start;
    assert!((heard - 2.0).abs() <= 0.06, "heard {heard:.3} s of 2 s");
    let lag = mark_after - heard;
    assert!(lag.abs() <= 0.040, "mark echoed {:.0} ms from the end of its audio", lag * 1000.0);
}

/// What the wsbridge leg plays while the server is silent: its own read
/// stream, recorded (a write-only recording of the A-leg loses its start).
fn silence_heard(path: &str, level: Option<&str>) -> Vec<i16> {
    let mut incoming = world().router.expect(path);
    let recording = recording_path(path.trim_start_matches('/'));
    let mut variables =
        format!("P-wsbridge-websocket-content-type={},RECORD_READ_ONLY=true", encode("audio/l16;rate=8000"));
    if let Some(level) = level {
        variables.push_str(&format!(",wsbridge_comfort_noise_dbov={level}"));
    }
    let leg = ok_uuid(&esl().api(&format!("originate {{{variables}}}wsbridge/{} &park", uri(path))));
    let record = esl().api(&format!("uuid_record {leg} start {}", recording.display()));
    assert!(record.starts_with("+OK"), "uuid_record: {record}");
    let mut connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(async {
        connection.first_text().await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        connection.close().await;
    });
    wait_gone(&leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    assert_eq!(rate, 8000);
    assert!(samples.len() > 12000, "only {:.2} s recorded", seconds(samples.len(), rate));
    samples[2000..samples.len() - 2000].to_vec()
}

fn dbov(samples: &[i16]) -> f64 {
    20.0 * (rms(samples) / 32767.0).log10()
}

pub fn comfort_noise_level_and_spectrum() {
    for (path, setting, expected) in [("/noise-default", None, -65.0), ("/noise-50", Some("-50"), -50.0)] {
        let heard = silence_heard(path, setting);
        let level = dbov(&heard);
        assert!((level - expected).abs() <= 2.0, "{path}: comfort noise at {level:.2} dBov, expected {expected}");
        // Broadband: no band holds much more power than another, and no tone.
        let bands: Vec<f64> =
            [300.0, 1000.0, 2000.0, 3000.0, 3600.0].iter().map(|f| power_at(&heard, 8000, *f)).collect();
        let mean = bands.iter().sum::<f64>() / bands.len() as f64;
        let chunked: Vec<f64> = heard
            .chunks(800)
            .map(|chunk| [300.0, 1000.0, 2000.0, 3000.0, 3600.0].iter().map(|f| power_at(chunk, 8000, *f)).sum::<f64>())
            .collect();
        assert!(chunked.iter().all(|p| *p > 0.0), "{path}: silent stretches in the noise");
        for (band, power) in [300, 1000, 2000, 3000, 3600].iter().zip(&bands) {
            assert!(
                *power < mean * 8.0,
                "{path}: {band} Hz holds {:.1}x the mean power: a tone, not noise",
                power / mean
            );
        }
        let crossings = audio::zero_crossing_frequency(&heard, 8000);
        assert!(crossings > 1000.0, "{path}: {crossings:.0} upward zero crossings/s is not broadband noise");
        let distinct: std::collections::HashSet<_> = heard.iter().collect();
        assert!(distinct.len() > 20, "{path}: noise must not be a constant value");
    }
    let silent = silence_heard("/noise-off", Some("0"));
    assert!(silent.iter().all(|&s| s == 0), "wsbridge_comfort_noise_dbov=0 must give digital silence");
}

fn digits_from(texts: &[String]) -> String {
    texts
        .iter()
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(text.trim()).ok())
        .filter_map(|value| value["digit"].as_str().map(str::to_string))
        .collect()
}

/// DTMF from a SIP caller (RFC 2833, then SIP INFO) reaches the server, every
/// digit in order; DTMF the server sends reaches the SIP caller.
pub fn dtmf_both_ways_over_sip() {
    let path = "/dtmf";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe("DTMF");
    let reply = esl().api(&format!(
        "originate {{sip_h_P-wsbridge-websocket-uri={},sip_h_P-wsbridge-websocket-content-type={}}}sofia/test/sip_to_wsbridge@127.0.0.1:{} tone_60000ms XML wsbridge-test",
        encode(&uri(path)),
        encode("audio/l16;rate=8000"),
        world().sip_port,
    ));
    let caller = ok_uuid(&reply);
    let mut connection = incoming.next(Duration::from_secs(5));
    let burst = "0123456789*#ABCD0123";
    let info_digits = "9876";
    let texts = runtime().block_on(async {
        connection.first_text().await;
        // Digits queued before the caller's RTP is flowing are lost by FreeSWITCH itself.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let sent = esl().api(&format!("uuid_send_dtmf {caller} {burst}@100"));
        assert!(sent.starts_with("+OK"), "uuid_send_dtmf: {sent}");
        let mut texts = Vec::new();
        while digits_from(&texts).len() < burst.len() {
            let (text, _) = wait_text(&mut connection, "digit", Duration::from_secs(15)).await;
            texts.push(text);
        }
        assert_eq!(digits_from(&texts), burst, "RFC 2833 digits");
        let set = esl().api(&format!("uuid_setvar {caller} dtmf_type info"));
        assert!(set.starts_with("+OK"), "uuid_setvar: {set}");
        let sent = esl().api(&format!("uuid_send_dtmf {caller} {info_digits}@100"));
        assert!(sent.starts_with("+OK"), "uuid_send_dtmf: {sent}");
        texts.clear();
        while digits_from(&texts).len() < info_digits.len() {
            let (text, _) = wait_text(&mut connection, "digit", Duration::from_secs(10)).await;
            texts.push(text);
        }
        connection.ws.send(Message::text(r#"{"action":"dtmf","digits":"12#","duration":100}"#)).await.unwrap();
        texts
    });
    assert_eq!(digits_from(&texts), info_digits, "SIP INFO digits");
    for text in &texts {
        let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert!(text.starts_with(" {\"digit\":"), "original format: {text}");
        assert!(value["duration"].as_u64().is_some_and(|ms| ms > 0), "duration in ms: {text}");
    }
    let mut heard = String::new();
    while heard.len() < 3 {
        let event = events
            .wait_event(Duration::from_secs(10), |e| e.get("Unique-ID") == Some(&caller))
            .unwrap_or_else(|| panic!("the SIP caller got only {heard:?} of the server's DTMF"));
        heard.push_str(&event["DTMF-Digit"]);
    }
    assert_eq!(heard, "12#");
    assert!(esl().api(&format!("uuid_kill {caller}")).starts_with("+OK"));
    runtime().block_on(connection.close());
    wait_gone(&caller, Duration::from_secs(5));
}

/// A server that stops reading: the call stays up, FreeSWITCH does not
/// grow, and the caller audio dropped is counted.
pub fn server_that_stops_reading_the_uplink() {
    let path = "/deaf";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE");
    let reply = esl().api(&format!(
        "originate {{P-wsbridge-websocket-content-type={}}}wsbridge/{} tone_60000ms XML wsbridge-test",
        encode("audio/l16;rate=48000"),
        uri(path)
    ));
    let leg = ok_uuid(&reply);
    let started = Instant::now();
    let mut connection = incoming.next(Duration::from_secs(5));
    let (received, call_seconds, rss_before) = runtime().block_on(async {
        connection.first_text().await;
        // Memory from when the 1 s backlog and the socket buffers are full:
        // the call's own setup, and other tests' calls on this shared
        // FreeSWITCH, are not its growth.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_before = freeswitch_rss_kib();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(esl().api(&format!("uuid_exists {leg}")).trim(), "true", "the call must stay up");
        let received = connection.receive_all(Duration::from_millis(1500)).await;
        let killed = esl().api(&format!("uuid_kill {leg}"));
        assert!(killed.starts_with("+OK"), "uuid_kill: {killed}");
        (received, started.elapsed().as_secs_f64(), rss_before)
    });
    let rss_growth = freeswitch_rss_kib().saturating_sub(rss_before);
    let hangup = events
        .wait_event(Duration::from_secs(5), |e| e.get("Unique-ID") == Some(&leg))
        .expect("hangup event with the call's figures");
    let dropped: u64 = hangup["variable_wsbridge_dropped_frames"].parse().unwrap();
    let sent: u64 = hangup["variable_wsbridge_frames_sent"].parse().unwrap();
    let expected = call_seconds * 50.0;
    println!(
        "{path}: {} frames reached the server, {sent} sent, {dropped} dropped in {call_seconds:.1} s; RSS grew {rss_growth} KiB from 3 s in",
        received.frames.len()
    );
    assert!(dropped >= 100, "8 s of a deaf server at 48 kHz must drop caller audio: {dropped} dropped");
    assert!(
        ((sent + dropped) as f64 - expected).abs() <= 0.05 * expected,
        "sent {sent} + dropped {dropped} must account for the {expected:.0} frames of the call"
    );
    assert!(rss_growth < 16 * 1024, "FreeSWITCH grew {rss_growth} KiB from 3 s into the deaf call to its end");
    let count =
        |log: &str| log.lines().filter(|l| l.contains(&leg) && l.contains("dropping the oldest caller audio")).count();
    let log = crate::log_when(&world().dir.join("log/freeswitch.log"), "a drop warning", |log| count(log) > 0);
    let warnings = count(&log);
    assert!((1..=10).contains(&warnings), "one warning per episode of drops, not per frame: {warnings}");
    runtime().block_on(connection.close());
}

/// Ten minutes of audio sent as fast as TCP takes it, into a 2 s playout
/// buffer: every frame is played, at real-time pace, while FreeSWITCH's
/// memory stays flat because the module stops reading and TCP pushes back.
pub fn ten_minute_burst_into_a_small_buffer() {
    let path = "/ten-minutes";
    let minutes = 10.0;
    let mut incoming = world().router.expect(path);
    // A FreeSWITCH of its own: the calls of the tests running beside this one
    // would make the shared one grow (FreeSWITCH keeps memory from its first
    // thousand calls or so for reuse), and that is not this call's doing.
    let freeswitch = test_support::instance::FreeSwitch::start(&crate::BUILD, &world().router.base(), 4);
    let freeswitch_rss_kib = || test_support::proc_stats::rss_kib(freeswitch.pid());
    let mut events = freeswitch.esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE");
    let rss_before = freeswitch_rss_kib();
    let reply = freeswitch.esl().api(&format!(
        "originate {{wsbridge_playout_max_ms=2000,P-wsbridge-websocket-uri={}}}null/ten-minutes record_and_bridge XML wsbridge-test",
        encode(&uri(path))
    ));
    let a_leg = ok_uuid(&reply);
    let mut connection = incoming.next(Duration::from_secs(5));
    let total_frames = (minutes * 60.0 * 50.0) as u64;
    let (rss_peak, second_half, elapsed) = runtime().block_on(async {
        connection.first_text().await;
        let started = Instant::now();
        let one_second = tone(1000.0, 16000, 1.0, 8000.0);
        let sender = async {
            for _ in 0..(minutes * 60.0) as usize {
                connection.send_pcm(&one_second, 640).await;
            }
            connection.ws.send(Message::text(r#"{"action":"mark","name":"all"}"#)).await.unwrap();
            wait_text(&mut connection, r#""name":"all""#, Duration::from_secs_f64(minutes * 60.0 + 30.0)).await;
        };
        let mut rss_peak = 0;
        // RSS at half time, and the most it reached after: start-up is over by then.
        let mut second_half: Option<(u64, u64)> = None;
        let watch = async {
            loop {
                let rss = freeswitch_rss_kib();
                rss_peak = rss_peak.max(rss);
                if started.elapsed() >= Duration::from_secs_f64(minutes * 30.0) {
                    let (_, peak) = second_half.get_or_insert((rss, rss));
                    *peak = (*peak).max(rss);
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        };
        tokio::select! {
            _ = sender => {},
            _ = watch => unreachable!(),
        }
        let elapsed = started.elapsed().as_secs_f64();
        connection.close().await;
        (rss_peak, second_half, elapsed)
    });
    let hangup = events
        .wait_event(Duration::from_secs(5), |e| {
            e.get("Channel-Name").is_some_and(|n| n.starts_with("wsbridge/") && n.ends_with("/ten-minutes"))
        })
        .expect("the wsbridge leg's hangup");
    crate::wait_gone_on(&mut freeswitch.esl(), &a_leg, Duration::from_secs(5));
    let played: u64 = hangup["variable_wsbridge_frames_played"].parse().unwrap();
    let growth = rss_peak.saturating_sub(rss_before);
    let (at_half, peak_after) = second_half.expect("sampled after half time");
    let second_half_growth = peak_after.saturating_sub(at_half);
    println!(
        "{path}: {played} of {total_frames} frames played in {elapsed:.1} s; FreeSWITCH RSS peak {} KiB over the start",
        growth
    );
    assert_eq!(played, total_frames, "frames lost or duplicated");
    let expected = minutes * 60.0;
    assert!((elapsed - expected).abs() <= 0.005 * expected, "{elapsed:.1} s to play {expected} s: not real-time");
    println!("{path}: FreeSWITCH RSS grew {second_half_growth} KiB over the second five minutes");
    assert!(
        second_half_growth < 4 * 1024,
        "FreeSWITCH grew {second_half_growth} KiB in the second half while 9.6 MB more audio went through a 2 s buffer"
    );
    assert!(growth < 64 * 1024, "FreeSWITCH grew {growth} KiB");
    assert!(freeswitch.stop(), "FreeSWITCH shuts down cleanly");
}
