//! The wire protocols bots already speak (issue 14): Twilio Media Streams,
//! Vonage's WebSocket protocol and Asterisk's AudioSocket, plus larger
//! uplink frames and G.711 on the native wire.
//!
//! The test servers here are written from the published documentation, field
//! by field: Twilio's "Media Streams - WebSocket Messages", Vonage's Voice
//! API WebSockets guide and Asterisk's AudioSocket protocol page. Each
//! message the module sends is checked whole: every key, every value, and no
//! key that the documentation does not have.

use std::collections::BTreeSet;
use std::f64::consts::PI;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::audio::{assert_tone, loud_span, read_wav, rms, tone};
use crate::g711::{alaw_decode, alaw_encode, base64_decode, base64_encode, ulaw_decode, ulaw_encode};
use crate::ws_server::{runtime, Connection};
use crate::{encode, esl, ok_uuid, recording_path, uri, wait_gone, world};

crate::tests! {
    protocols::codecs_known_values,
    protocols::twilio_test_server_accepts_the_documented_messages,
    protocols::twilio_connected_start_media_stop,
    protocols::twilio_downlink_odd_sizes_and_mark,
    protocols::twilio_clear_silences_within_a_frame,
    protocols::twilio_dtmf_over_sip_and_native_actions,
    protocols::twilio_wrong_stream_sid_and_bad_input_ignored,
    protocols::vonage_first_message_audio_both_ways_and_notify,
    protocols::vonage_dtmf_and_clear,
    protocols::audiosocket_uuid_uplink_dtmf_and_caller_hangup,
    protocols::audiosocket_server_tone_and_hangup_causes,
    protocols::uplink_frames_of_100ms,
    protocols::g711_pcmu_and_pcma_tone_both_ways,
    protocols::g711_sip_caller_on_pcmu,
    protocols::protocol_setting_sources_and_refusal,
}

/// The uplink tone (FreeSWITCH's tone_stream in the test dialplan).
const UPLINK_HZ: f64 = 1000.0;
/// The server's tone: another frequency, so an echo cannot pass for it.
const DOWNLINK_HZ: f64 = 700.0;

pub fn codecs_known_values() {
    crate::g711::known_values();
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().map(|object| object.keys().cloned().collect()).unwrap_or_default()
}

/// Asserts that `value` is an object with exactly these keys.
fn assert_keys(value: &Value, expected: &[&str], what: &str) {
    let expected: BTreeSet<String> = expected.iter().map(|key| key.to_string()).collect();
    assert_eq!(keys(value), expected, "{what}: the keys of {value}");
}

fn parse(text: &str, what: &str) -> Value {
    assert_eq!(text.trim_start(), text, "{what}: no white space before the JSON: {text:?}");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// A FreeSWITCH UUID as the 16 bytes AudioSocket carries.
fn uuid_bytes(uuid: &str) -> Vec<u8> {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    assert_eq!(hex.len(), 32, "a UUID: {uuid}");
    (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect()
}

fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.len() == 34
        && sid.starts_with(prefix)
        && sid[2..].chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn seconds_between(later: Instant, earlier: Instant) -> f64 {
    later.saturating_duration_since(earlier).as_secs_f64()
}

/// A null A-leg that bridges to wsbridge from the dialplan with `uri` as its
/// server, recorded (read and write mixed) from before the bridge.
fn bridged(uri: &str, name: &str, variables: &str, recording: &Path) -> String {
    let vars = if variables.is_empty() { String::new() } else { format!(",{variables}") };
    let reply = esl().api(&format!(
        "originate {{P-wsbridge-websocket-uri={}{vars}}}null/{name} record_and_bridge XML wsbridge-test",
        encode(uri)
    ));
    let a_leg = ok_uuid(&reply);
    let record = esl().api(&format!("uuid_record {a_leg} start {}", recording.display()));
    assert!(record.starts_with("+OK"), "uuid_record: {record}");
    a_leg
}

/// Starts a read-only recording of `leg`: what the server sent it.
fn record_leg(leg: &str, recording: &Path) {
    let record = esl().api(&format!("uuid_record {leg} start {}", recording.display()));
    assert!(record.starts_with("+OK"), "uuid_record: {record}");
}

/// The UUID of the wsbridge leg whose server URI ends with `suffix`.
fn wsbridge_leg(suffix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed: Value = serde_json::from_str(&esl().api("wsbridge list json")).unwrap_or(Value::Null);
        let found = listed.as_array().and_then(|calls| {
            calls.iter().find(|call| call["uri"].as_str().is_some_and(|uri| uri.ends_with(suffix))).cloned()
        });
        if let Some(uuid) = found.as_ref().and_then(|call| call["uuid"].as_str()) {
            return uuid.to_string();
        }
        assert!(Instant::now() < deadline, "no wsbridge call to {suffix} in `wsbridge list json`");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn channel_variable(uuid: &str, name: &str) -> String {
    esl().api(&format!("uuid_getvar {uuid} {name}")).trim().to_string()
}

/// What the caller heard: the tone's span, its length and frequency.
fn heard_tone(recording: &Path, frequency: f64, what: &str) -> (f64, f64, Vec<i16>, u32) {
    let (samples, rate) = read_wav(recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).unwrap_or_else(|| panic!("{what}: the tone was not heard"));
    let from = ((start + 0.05) * rate as f64) as usize;
    let to = ((end - 0.05) * rate as f64) as usize;
    assert!(to > from, "{what}: only {:.3} s of tone heard", end - start);
    assert_tone(&samples[from..to], rate, frequency, what);
    (start, end, samples, rate)
}

/// 5 ms blocks quieter than half the tone's level between `from` and `to` seconds.
fn quiet_blocks(samples: &[i16], rate: u32, amplitude: f64, from: f64, to: f64) -> usize {
    let block = (rate / 200) as usize;
    samples
        .chunks_exact(block)
        .enumerate()
        .filter(|(index, chunk)| {
            let at = *index as f64 / 200.0;
            at >= from && at + 0.005 <= to && rms(chunk) < amplitude / 2.0 / 2f64.sqrt()
        })
        .count()
}

/// The largest phase step of a continuous tone between consecutive 5 ms
/// blocks (a whole number of its periods each), in radians.
fn largest_phase_step(samples: &[i16], rate: u32, frequency: f64) -> f64 {
    let block = (rate / 200) as usize;
    let phases: Vec<f64> = samples
        .chunks_exact(block)
        .map(|chunk| {
            let (mut i, mut q) = (0.0, 0.0);
            for (n, sample) in chunk.iter().enumerate() {
                let angle = 2.0 * PI * frequency * n as f64 / rate as f64;
                i += *sample as f64 * angle.cos();
                q += *sample as f64 * angle.sin();
            }
            q.atan2(i)
        })
        .collect();
    phases.windows(2).map(|pair| ((pair[1] - pair[0] + 3.0 * PI).rem_euclid(2.0 * PI) - PI).abs()).fold(0.0, f64::max)
}

/// How fast frames arrived in the steady middle of a call, per second.
fn steady_rate(arrivals: &[f64], seconds: f64) -> f64 {
    let steady = arrivals.iter().filter(|t| (0.5..=seconds - 0.5).contains(*t)).count();
    steady as f64 / (seconds - 1.0)
}

/// What a native or Vonage server saw: text and binary messages, with arrival times.
#[derive(Default)]
struct Wire {
    texts: Vec<(String, Instant)>,
    frames: Vec<(Instant, Vec<u8>)>,
    /// Some(close code) once the module closed.
    closed: Option<Option<u16>>,
}

impl Wire {
    /// Reads until a text containing `needle` (returned), the close, or `limit`.
    async fn read(&mut self, connection: &mut Connection, limit: Duration, needle: Option<&str>) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.closed.is_none() {
            match tokio::time::timeout_at(deadline, connection.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let text = text.to_string();
                    self.texts.push((text.clone(), Instant::now()));
                    if needle.is_some_and(|needle| text.contains(needle)) {
                        return Some(text);
                    }
                }
                Ok(Some(Ok(Message::Binary(data)))) => self.frames.push((Instant::now(), data.to_vec())),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    let _ = connection.ws.flush().await;
                    self.closed = Some(frame.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => self.closed = Some(None),
            }
        }
        None
    }

    fn arrivals(&self, start: Instant) -> Vec<f64> {
        self.frames.iter().map(|(at, _)| seconds_between(*at, start)).collect()
    }

    fn l16(&self) -> Vec<i16> {
        self.frames
            .iter()
            .flat_map(|(_, bytes)| bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Twilio Media Streams
// ---------------------------------------------------------------------------

/// What a `start` message must carry.
struct TwilioExpected {
    account_sid: String,
    /// `CA` + the wsbridge leg's UUID without dashes, where the test knows the leg.
    call_sid: Option<String>,
    custom_parameters: Value,
}

impl TwilioExpected {
    fn defaults(call_sid: Option<String>) -> TwilioExpected {
        TwilioExpected { account_sid: format!("AC{}", "0".repeat(32)), call_sid, custom_parameters: json!({}) }
    }
}

fn call_sid(uuid: &str) -> String {
    format!("CA{}", uuid.replace('-', ""))
}

/// One 20 ms `media` message from the module.
struct TwilioMedia {
    timestamp_ms: u64,
    mulaw: Vec<u8>,
    arrival: Instant,
}

/// A Twilio Media Streams server: it checks every message the module sends
/// against Twilio's published formats as it reads them.
struct TwilioServer {
    connection: Connection,
    stream_sid: String,
    account_sid: String,
    call_sid: String,
    next_sequence: u64,
    started_at: Instant,
    media: Vec<TwilioMedia>,
    /// Every message other than `media` after `start`, in order, with its arrival.
    events: Vec<(Value, Instant)>,
    closed: Option<Option<u16>>,
}

enum Received {
    Text(String, Instant),
    Closed(Option<u16>),
    TimedOut,
}

async fn read_text(connection: &mut Connection, deadline: tokio::time::Instant, what: &str) -> Received {
    loop {
        match tokio::time::timeout_at(deadline, connection.ws.next()).await {
            Err(_) => return Received::TimedOut,
            Ok(Some(Ok(Message::Text(text)))) => return Received::Text(text.to_string(), Instant::now()),
            Ok(Some(Ok(Message::Binary(data)))) => {
                panic!("{what}: a binary message of {} bytes; this protocol has none", data.len())
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                // Sends tungstenite's queued reply: the close handshake completes.
                let _ = connection.ws.flush().await;
                return Received::Closed(frame.map(|f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return Received::Closed(None),
        }
    }
}

impl TwilioServer {
    /// Reads `connected` and `start`, checking every field of both.
    async fn accept(mut connection: Connection, expected: TwilioExpected) -> TwilioServer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let Received::Text(connected, _) = read_text(&mut connection, deadline, "twilio").await else {
            panic!("twilio: no `connected` message")
        };
        let value = parse(&connected, "twilio connected");
        assert_eq!(value, json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}), "twilio connected");
        assert_keys(&value, &["event", "protocol", "version"], "twilio connected");

        let Received::Text(start, started_at) = read_text(&mut connection, deadline, "twilio").await else {
            panic!("twilio: no `start` message after `connected`")
        };
        let value = parse(&start, "twilio start");
        assert_keys(&value, &["event", "sequenceNumber", "start", "streamSid"], "twilio start");
        assert_eq!(value["event"], "start", "{start}");
        assert_eq!(value["sequenceNumber"], "1", "start is sequence number \"1\", a string: {start}");
        let body = &value["start"];
        assert_keys(
            body,
            &["accountSid", "streamSid", "callSid", "tracks", "customParameters", "mediaFormat"],
            "twilio start.start",
        );
        let stream_sid = body["streamSid"].as_str().unwrap_or_default().to_string();
        assert!(is_sid(&stream_sid, "MZ"), "start.streamSid must be MZ + 32 lower-case hex digits: {start}");
        assert_eq!(value["streamSid"], stream_sid.as_str(), "the top-level streamSid is start.streamSid: {start}");
        assert_eq!(body["accountSid"], expected.account_sid.as_str(), "start.accountSid: {start}");
        let call_sid = body["callSid"].as_str().unwrap_or_default().to_string();
        assert!(is_sid(&call_sid, "CA"), "start.callSid must be CA + 32 lower-case hex digits: {start}");
        if let Some(expected_call) = &expected.call_sid {
            assert_eq!(&call_sid, expected_call, "start.callSid is CA + the wsbridge leg's UUID: {start}");
        }
        assert_eq!(body["tracks"], json!(["inbound"]), "start.tracks: {start}");
        assert_eq!(body["customParameters"], expected.custom_parameters, "start.customParameters: {start}");
        assert_eq!(
            body["mediaFormat"],
            json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}),
            "start.mediaFormat, numbers as numbers: {start}"
        );
        TwilioServer {
            connection,
            stream_sid,
            account_sid: expected.account_sid,
            call_sid,
            next_sequence: 2,
            started_at,
            media: Vec::new(),
            events: Vec::new(),
            closed: None,
        }
    }

    /// Checks one message after `start`; keeps media, returns any other.
    fn check(&mut self, text: &str, arrival: Instant) -> Option<Value> {
        let value = parse(text, "twilio");
        let stopped = self.events.iter().any(|(event, _)| event["event"] == "stop");
        assert!(!stopped, "twilio: a message after `stop`: {text}");
        assert_eq!(
            value["sequenceNumber"],
            self.next_sequence.to_string().as_str(),
            "sequenceNumber counts every message after `connected`, as a string: {text}"
        );
        self.next_sequence += 1;
        assert_eq!(value["streamSid"], self.stream_sid.as_str(), "streamSid: {text}");
        match value["event"].as_str().unwrap_or_default() {
            "media" => {
                assert_keys(&value, &["event", "sequenceNumber", "media", "streamSid"], "twilio media");
                let media = &value["media"];
                assert_keys(media, &["track", "chunk", "timestamp", "payload"], "twilio media.media");
                assert_eq!(media["track"], "inbound", "media.track: {text}");
                let chunk = (self.media.len() + 1).to_string();
                assert_eq!(media["chunk"], chunk.as_str(), "media.chunk counts from \"1\", a string: {text}");
                let timestamp_ms = media["timestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("media.timestamp must be a string of ms: {text}"));
                let mulaw = media["payload"]
                    .as_str()
                    .and_then(base64_decode)
                    .unwrap_or_else(|| panic!("media.payload must be base64: {text}"));
                assert_eq!(mulaw.len(), 160, "media.payload: 160 bytes of μ-law per 20 ms: {text}");
                self.media.push(TwilioMedia { timestamp_ms, mulaw, arrival });
                None
            }
            "dtmf" => {
                assert_keys(&value, &["event", "streamSid", "sequenceNumber", "dtmf"], "twilio dtmf");
                assert_keys(&value["dtmf"], &["track", "digit"], "twilio dtmf.dtmf");
                assert_eq!(value["dtmf"]["track"], "inbound_track", "dtmf.track: {text}");
                let digit = value["dtmf"]["digit"].as_str().unwrap_or_default();
                assert!(digit.len() == 1 && "0123456789*#ABCD".contains(digit), "dtmf.digit is one key: {text}");
                self.events.push((value.clone(), arrival));
                Some(value)
            }
            "mark" => {
                assert_keys(&value, &["event", "sequenceNumber", "streamSid", "mark"], "twilio mark");
                assert_keys(&value["mark"], &["name"], "twilio mark.mark");
                assert!(value["mark"]["name"].is_string(), "mark.name: {text}");
                self.events.push((value.clone(), arrival));
                Some(value)
            }
            "stop" => {
                assert_keys(&value, &["event", "sequenceNumber", "streamSid", "stop"], "twilio stop");
                assert_eq!(
                    value["stop"],
                    json!({"accountSid": self.account_sid, "callSid": self.call_sid}),
                    "stop.stop carries the start's accountSid and callSid: {text}"
                );
                self.events.push((value.clone(), arrival));
                Some(value)
            }
            _ => panic!("twilio: a message Twilio never sends: {text}"),
        }
    }

    /// The next message `event` (not media), within `limit`.
    async fn wait_event(&mut self, event: &str, limit: Duration) -> (Value, Instant) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match read_text(&mut self.connection, deadline, "twilio").await {
                Received::Text(text, arrival) => {
                    if let Some(value) = self.check(&text, arrival) {
                        if value["event"] == event {
                            return (value, arrival);
                        }
                    }
                }
                Received::Closed(code) => {
                    self.closed = Some(code);
                    panic!("twilio: closed ({code:?}) before a `{event}` message; events: {:?}", self.events)
                }
                Received::TimedOut => {
                    panic!("twilio: no `{event}` message within {limit:?}; events: {:?}", self.events)
                }
            }
        }
    }

    /// Reads and checks everything for `duration`, or until the close.
    async fn read_for(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while self.closed.is_none() {
            match read_text(&mut self.connection, deadline, "twilio").await {
                Received::Text(text, arrival) => {
                    self.check(&text, arrival);
                }
                Received::Closed(code) => self.closed = Some(code),
                Received::TimedOut => return,
            }
        }
    }

    /// Reads to the module's close: `stop` must be the last message. Returns the close code.
    async fn read_to_close(&mut self, limit: Duration) -> Option<u16> {
        self.read_for(limit).await;
        let code = self.closed.unwrap_or_else(|| panic!("twilio: no close within {limit:?}"));
        let stops = self.events.iter().filter(|(event, _)| event["event"] == "stop").count();
        assert_eq!(stops, 1, "one `stop` before the close; events: {:?}", self.events);
        assert_eq!(self.events.last().map(|(event, _)| event["event"].clone()), Some(json!("stop")));
        code
    }

    async fn send(&mut self, value: Value) {
        self.connection.ws.send(Message::text(value.to_string())).await.unwrap();
    }

    async fn send_raw(&mut self, text: &str) {
        self.connection.ws.send(Message::text(text.to_string())).await.unwrap();
    }

    /// Server audio: `media` messages of the given sizes in turn, in one burst.
    async fn send_media(&mut self, mulaw: &[u8], sizes: &[usize]) {
        let mut offset = 0;
        for size in sizes.iter().cycle() {
            if offset >= mulaw.len() {
                break;
            }
            let end = (offset + size).min(mulaw.len());
            let message = json!({"event": "media", "streamSid": self.stream_sid, "media": {"payload": base64_encode(&mulaw[offset..end])}});
            self.connection.ws.feed(Message::text(message.to_string())).await.unwrap();
            offset = end;
        }
        self.connection.ws.flush().await.unwrap();
    }

    async fn send_mark(&mut self, name: &str) {
        let sid = self.stream_sid.clone();
        self.send(json!({"event": "mark", "streamSid": sid, "mark": {"name": name}})).await;
    }

    fn marks(&self) -> Vec<(String, Instant)> {
        self.events
            .iter()
            .filter(|(event, _)| event["event"] == "mark")
            .map(|(event, at)| (event["mark"]["name"].as_str().unwrap_or_default().to_string(), *at))
            .collect()
    }

    /// The caller's audio, μ-law decoded.
    fn uplink(&self) -> Vec<i16> {
        self.media.iter().flat_map(|media| media.mulaw.iter().map(|code| ulaw_decode(*code))).collect()
    }

    /// media.timestamp is the ms since the stream started: it never goes
    /// back and, where the caller's audio flowed from the start (`steady`),
    /// it moves 20 ms a chunk.
    fn check_timestamps(&self, steady: bool) {
        let stamps: Vec<u64> = self.media.iter().map(|media| media.timestamp_ms).collect();
        assert!(stamps.windows(2).all(|pair| pair[0] <= pair[1]), "media.timestamp went backwards: {stamps:?}");
        if !steady {
            return;
        }
        if let (Some(first), Some(last)) = (stamps.first(), stamps.last()) {
            assert!(*first < 1000, "the first media.timestamp is {first} ms after the start");
            let span = (last - first) as f64;
            let expected = 20.0 * (stamps.len() - 1) as f64;
            assert!(
                (span - expected).abs() <= 0.05 * expected + 40.0,
                "media.timestamp spans {span} ms over {} chunks of 20 ms",
                stamps.len()
            );
        }
    }
}

/// The Twilio test server itself, fed the messages of Twilio's documentation
/// by a client here: what it accepts, so that its failures are the module's.
pub fn twilio_test_server_accepts_the_documented_messages() {
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
            let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{address}/"), tcp).await.unwrap();
            let sid = format!("MZ{}", "a".repeat(32));
            let account = format!("AC{}", "0".repeat(32));
            let call = format!("CA{}", "b".repeat(32));
            let media = |n: u64| {
                json!({"event": "media", "sequenceNumber": (n + 1).to_string(), "media": {"track": "inbound", "chunk": n.to_string(), "timestamp": (20 * n).to_string(), "payload": base64_encode(&[0xFF; 160])}, "streamSid": sid})
            };
            let messages = [
                json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
                json!({"event": "start", "sequenceNumber": "1", "start": {"accountSid": account, "streamSid": sid, "callSid": call, "tracks": ["inbound"], "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}, "streamSid": sid}),
                media(1),
                media(2),
                json!({"event": "dtmf", "streamSid": sid, "sequenceNumber": "4", "dtmf": {"track": "inbound_track", "digit": "5"}}),
                json!({"event": "mark", "sequenceNumber": "5", "streamSid": sid, "mark": {"name": "x"}}),
                json!({"event": "stop", "sequenceNumber": "6", "streamSid": sid, "stop": {"accountSid": account, "callSid": call}}),
            ];
            for message in messages {
                ws.send(Message::text(message.to_string())).await.unwrap();
            }
            let _ = ws.close(None).await;
            while let Some(Ok(_)) = ws.next().await {}
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let connection = Connection { subprotocol: None, headers: Vec::new(), ws };
        let mut twilio = TwilioServer::accept(connection, TwilioExpected::defaults(Some(format!("CA{}", "b".repeat(32))))).await;
        let (dtmf, _) = twilio.wait_event("dtmf", Duration::from_secs(5)).await;
        assert_eq!(dtmf["dtmf"]["digit"], "5");
        let (mark, _) = twilio.wait_event("mark", Duration::from_secs(5)).await;
        assert_eq!(mark["mark"]["name"], "x");
        twilio.read_to_close(Duration::from_secs(5)).await;
        assert_eq!(twilio.media.len(), 2);
        twilio.check_timestamps(true);
        drop(twilio);
        tokio::time::timeout(Duration::from_secs(5), client).await.expect("the client's close completes").unwrap();
    });
}

/// The uplink of a Twilio stream: 50 frames a second of the caller's tone.
fn check_twilio_uplink(twilio: &TwilioServer, seconds: f64) {
    let count = twilio.media.len() as f64;
    let expected = seconds * 50.0;
    assert!((count - expected).abs() <= 0.05 * expected, "{count} media messages for {seconds} s, expected {expected}");
    let arrivals: Vec<f64> =
        twilio.media.iter().map(|media| seconds_between(media.arrival, twilio.started_at)).collect();
    let per_second = steady_rate(&arrivals, seconds);
    assert!((per_second - 50.0).abs() <= 2.5, "{per_second:.1} media messages a second, expected 50");
    let samples = twilio.uplink();
    assert_tone(
        &samples[samples.len() / 4..samples.len() * 3 / 4],
        8000,
        UPLINK_HZ,
        "twilio uplink after μ-law decoding",
    );
    twilio.check_timestamps(true);
}

/// connected, start (every field), media (every field, the caller's tone
/// after μ-law decoding), then stop and a close with 1000 when the call
/// ends; a second call shows the defaults and a new streamSid.
pub fn twilio_connected_start_media_stop() {
    let path = "/twilio-start";
    let mut incoming = world().router.expect(path);
    // Twilio's customParameters are strings: the number goes as its text.
    let headers = r#"{"from":"+447700900123","lang":"en-GB","attempt":2}"#;
    let account = "AC0123456789abcdef0123456789abcdef";
    let uuid = ok_uuid(&esl().api(&format!(
        "originate {{wsbridge_protocol=twilio,wsbridge_twilio_account_sid={account},P-wsbridge-websocket-headers={}}}wsbridge/{} tone_2000ms XML wsbridge-test",
        encode(headers),
        uri(path)
    )));
    let connection = incoming.next(Duration::from_secs(5));
    let expected = TwilioExpected {
        account_sid: account.to_string(),
        call_sid: Some(call_sid(&uuid)),
        custom_parameters: json!({"from":"+447700900123","lang":"en-GB","attempt":"2"}),
    };
    let first_stream = runtime().block_on(async {
        let mut twilio = TwilioServer::accept(connection, expected).await;
        let code = twilio.read_to_close(Duration::from_secs(8)).await;
        assert_eq!(code, Some(1000), "the close after `stop`");
        check_twilio_uplink(&twilio, 2.0);
        twilio.stream_sid.clone()
    });

    // No account setting and no headers: the placeholder account and an empty object.
    let uuid = ok_uuid(&esl().api(&format!("originate {{wsbridge_protocol=twilio}}wsbridge/{} &park", uri(path))));
    let connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(async {
        let mut twilio = TwilioServer::accept(connection, TwilioExpected::defaults(Some(call_sid(&uuid)))).await;
        assert_ne!(twilio.stream_sid, first_stream, "streamSid is new for each connection");
        twilio.read_for(Duration::from_millis(500)).await;
        let killed = esl().api(&format!("uuid_kill {uuid}"));
        assert!(killed.starts_with("+OK"), "uuid_kill: {killed}");
        let code = twilio.read_to_close(Duration::from_secs(5)).await;
        assert_eq!(code, Some(1000), "the close after `stop`");
    });
    wait_gone(&uuid, Duration::from_secs(5));
}

/// The server's base64 μ-law tone, in messages of odd sizes, is played to the
/// A-leg whole and in order; the mark after it comes back when it has played;
/// the server's close hangs up.
pub fn twilio_downlink_odd_sizes_and_mark() {
    let path = "/twilio-downlink";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("twilio-downlink");
    let a_leg = bridged(&uri(path), "twilio-downlink", "wsbridge_protocol=twilio", &recording);
    let connection = incoming.next(Duration::from_secs(5));
    let sent: Vec<u8> = tone(DOWNLINK_HZ, 8000, 2.0, 8000.0).iter().map(|s| ulaw_encode(*s)).collect();
    let (mark_after, mark) = runtime().block_on(async {
        let mut twilio = TwilioServer::accept(connection, TwilioExpected::defaults(None)).await;
        twilio.read_for(Duration::from_millis(500)).await;
        let sent_at = Instant::now();
        // Odd sizes, one byte among them, none a frame's multiple.
        twilio.send_media(&sent, &[157, 1, 333, 80, 1121, 479]).await;
        twilio.send_mark("tone-done").await;
        let (mark, marked_at) = twilio.wait_event("mark", Duration::from_secs(5)).await;
        twilio.read_for(Duration::from_millis(500)).await;
        twilio.connection.close().await;
        (seconds_between(marked_at, sent_at), mark)
    });
    assert_eq!(mark["mark"], json!({"name": "tone-done"}), "the echoed mark: {mark}");
    wait_gone(&a_leg, Duration::from_secs(5));
    let (start, end, samples, rate) = heard_tone(&recording, DOWNLINK_HZ, "twilio downlink");
    let heard = end - start;
    assert!((heard - 2.0).abs() <= 0.06, "heard {heard:.3} s of a 2 s tone");
    assert_eq!(quiet_blocks(&samples, rate, 8000.0, start + 0.01, end - 0.01), 0, "gaps in the tone");
    let lag = mark_after - heard;
    assert!(lag.abs() <= 0.040, "the mark came {:.0} ms from the end of its audio", lag * 1000.0);
    if rate == 8000 {
        // Sample for sample: what the caller heard is the μ-law sent, decoded.
        let expected: Vec<i16> = sent[80..sent.len() - 8].iter().map(|code| ulaw_decode(*code)).collect();
        let first = (start * rate as f64) as usize;
        let error_at = |offset: usize| -> i32 {
            expected
                .iter()
                .zip(&samples[offset..])
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .max()
                .unwrap_or(i32::MAX)
        };
        let best = (first.saturating_sub(80)..first + 160)
            .filter(|offset| offset + expected.len() <= samples.len())
            .min_by_key(|offset| error_at(*offset))
            .expect("recording long enough");
        let worst = error_at(best);
        assert!(worst <= 40, "odd-sized μ-law messages: a sample is off by {worst} (lost, repeated or stale bytes)");
    } else {
        println!("twilio downlink: the A-leg records at {rate} Hz, so the samples are not compared one by one");
    }
}

/// `clear` drops the queued audio: the tone stops from full level within a
/// frame, and the mark still pending is sent back at once.
pub fn twilio_clear_silences_within_a_frame() {
    let path = "/twilio-clear";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("twilio-clear");
    let a_leg = bridged(&uri(path), "twilio-clear", "wsbridge_protocol=twilio", &recording);
    let connection = incoming.next(Duration::from_secs(5));
    let sent: Vec<u8> = tone(DOWNLINK_HZ, 8000, 5.0, 8000.0).iter().map(|s| ulaw_encode(*s)).collect();
    let (played_for, cleared_mark) = runtime().block_on(async {
        let mut twilio = TwilioServer::accept(connection, TwilioExpected::defaults(None)).await;
        twilio.read_for(Duration::from_millis(500)).await;
        let sent_at = Instant::now();
        twilio.send_media(&sent, &[8000]).await;
        twilio.send_mark("pending").await;
        twilio.read_for(Duration::from_millis(1200)).await;
        assert!(twilio.marks().is_empty(), "a mark came back before its audio played: {:?}", twilio.marks());
        let sid = twilio.stream_sid.clone();
        twilio.send(json!({"event": "clear", "streamSid": sid})).await;
        let (mark, marked_at) = twilio.wait_event("mark", Duration::from_secs(2)).await;
        twilio.read_for(Duration::from_millis(800)).await;
        twilio.connection.close().await;
        (seconds_between(marked_at, sent_at), mark)
    });
    assert_eq!(cleared_mark["mark"], json!({"name": "pending"}), "the pending mark, sent back at the clear");
    wait_gone(&a_leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("tone heard");
    let heard = end - start;
    assert!(heard < 2.0, "the tone went on for {heard:.3} s after the clear");
    let lag = played_for - heard;
    assert!(
        lag.abs() <= 0.040,
        "quiet {:.0} ms from the mark sent back at the clear (tone {heard:.3} s, mark at {played_for:.3} s)",
        lag * 1000.0
    );
    let block = (rate / 200) as usize;
    let levels: Vec<f64> = samples.chunks_exact(block).map(rms).collect();
    let last_full = levels.iter().rposition(|level| *level > 8000.0 / 2.0 / 2f64.sqrt()).expect("tone heard");
    let quiet_from =
        last_full + levels[last_full..].iter().position(|level| *level < 100.0).expect("quiet after the clear");
    let fade_ms = (quiet_from - last_full) * 5;
    assert!(fade_ms <= 25, "the tone took {fade_ms} ms to stop after the clear");
    let after = &samples[((end + 0.05) * rate as f64) as usize..];
    assert!(rms(after) < 100.0, "after the clear the caller hears {:.0} RMS", rms(after));
}

/// A SIP caller whose INVITE carries P-wsbridge-websocket-protocol: twilio.
/// Its keys reach the server as `dtmf` messages; the caller's tone arrives as
/// μ-law; the module's own `dtmf` and `hangup` actions still work.
pub fn twilio_dtmf_over_sip_and_native_actions() {
    let path = "/twilio-dtmf";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe("DTMF");
    let caller = ok_uuid(&esl().api(&format!(
        "originate {{sip_h_P-wsbridge-websocket-uri={},sip_h_P-wsbridge-websocket-protocol=twilio}}sofia/test/sip_to_wsbridge@127.0.0.1:{} tone_60000ms XML wsbridge-test",
        encode(&uri(path)),
        world().sip_port,
    )));
    let connection = incoming.next(Duration::from_secs(5));
    let keys = "5#09*";
    runtime().block_on(async {
        let mut twilio = TwilioServer::accept(connection, TwilioExpected::defaults(None)).await;
        // Digits queued before the caller's RTP is flowing are lost by FreeSWITCH itself.
        twilio.read_for(Duration::from_millis(1000)).await;
        let sent = esl().api(&format!("uuid_send_dtmf {caller} {keys}@100"));
        assert!(sent.starts_with("+OK"), "uuid_send_dtmf: {sent}");
        let mut digits = String::new();
        while digits.len() < keys.len() {
            let (dtmf, _) = twilio.wait_event("dtmf", Duration::from_secs(10)).await;
            digits.push_str(dtmf["dtmf"]["digit"].as_str().unwrap());
        }
        assert_eq!(digits, keys, "the caller's keys, in order");
        twilio.read_for(Duration::from_millis(500)).await;
        let samples = twilio.uplink();
        assert!(samples.len() >= 8000, "only {} samples of caller audio", samples.len());
        let tail = &samples[samples.len() - 8000..];
        assert_tone(tail, 8000, UPLINK_HZ, "the SIP caller's tone after μ-law decoding");
        twilio.check_timestamps(false);
        twilio.send(json!({"action": "dtmf", "digits": "12", "duration": 100})).await;
        twilio.read_for(Duration::from_millis(200)).await;
        let mut heard = String::new();
        while heard.len() < 2 {
            let event = events
                .wait_event(Duration::from_secs(10), |e| e.get("Unique-ID") == Some(&caller))
                .unwrap_or_else(|| panic!("the SIP caller got only {heard:?} of the server's DTMF"));
            heard.push_str(&event["DTMF-Digit"]);
        }
        assert_eq!(heard, "12", "the server's `dtmf` action");
        twilio.send(json!({"action": "hangup"})).await;
        twilio.read_for(Duration::from_secs(5)).await;
        assert!(twilio.closed.is_some(), "the `hangup` action ends the call and closes the socket");
    });
    wait_gone(&caller, Duration::from_secs(5));
}

/// Media and marks with another streamSid, invalid JSON, invalid base64 and
/// a media message without media are ignored: the call goes on, and only the
/// right audio and mark come through. The caller's hangup then reaches the
/// server as `stop` and a close with 1000.
pub fn twilio_wrong_stream_sid_and_bad_input_ignored() {
    let path = "/twilio-wrong-sid";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("twilio-wrong-sid");
    let a_leg = bridged(&uri(path), "twilio-wrong-sid", "wsbridge_protocol=twilio", &recording);
    let connection = incoming.next(Duration::from_secs(5));
    let one_second: Vec<u8> = tone(DOWNLINK_HZ, 8000, 1.0, 8000.0).iter().map(|s| ulaw_encode(*s)).collect();
    runtime().block_on(async {
        let mut twilio = TwilioServer::accept(connection, TwilioExpected::defaults(None)).await;
        twilio.read_for(Duration::from_millis(300)).await;
        let sid = twilio.stream_sid.clone();
        let wrong = if sid.ends_with('f') { format!("MZ{}", "e".repeat(32)) } else { format!("MZ{}", "f".repeat(32)) };
        twilio
            .send(json!({"event": "media", "streamSid": wrong, "media": {"payload": base64_encode(&one_second)}}))
            .await;
        twilio.send(json!({"event": "mark", "streamSid": wrong, "mark": {"name": "wrong-sid"}})).await;
        twilio.send_raw(r#"{"event":"media","streamSid":"#).await;
        twilio.send_raw("not json at all").await;
        twilio.send(json!({"event": "media", "streamSid": sid, "media": {"payload": "@@not base64!"}})).await;
        twilio.send(json!({"event": "media", "streamSid": sid})).await;
        twilio.send(json!({"event": "clear", "streamSid": wrong})).await;
        twilio.read_for(Duration::from_millis(300)).await;
        assert_eq!(esl().api(&format!("uuid_exists {a_leg}")).trim(), "true", "bad input must not end the call");
        twilio.send_media(&one_second, &[160]).await;
        twilio.send_mark("right").await;
        let (mark, _) = twilio.wait_event("mark", Duration::from_secs(5)).await;
        assert_eq!(mark["mark"]["name"], "right", "the first mark back must be the right one: {mark}");
        twilio.read_for(Duration::from_millis(300)).await;
        let killed = esl().api(&format!("uuid_kill {a_leg}"));
        assert!(killed.starts_with("+OK"), "uuid_kill: {killed}");
        let code = twilio.read_to_close(Duration::from_secs(5)).await;
        assert_eq!(code, Some(1000), "the close after `stop` at the caller's hangup");
        let names: Vec<String> = twilio.marks().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["right"], "a mark with another streamSid is not echoed");
    });
    wait_gone(&a_leg, Duration::from_secs(5));
    let (start, end, _, _) = heard_tone(&recording, DOWNLINK_HZ, "twilio, right streamSid");
    assert!(
        (end - start - 1.0).abs() <= 0.06,
        "heard {:.3} s: only the 1 s with the right streamSid may play",
        end - start
    );
}

// ---------------------------------------------------------------------------
// Vonage
// ---------------------------------------------------------------------------

fn assert_vonage_connected(text: &str, expected: Value) {
    let value = parse(text, "vonage websocket:connected");
    assert_eq!(value, expected, "vonage first message: {text}");
    assert_eq!(keys(&value), keys(&expected), "vonage first message keys: {text}");
    let first_key = value.as_object().and_then(|object| object.keys().next().cloned());
    assert_eq!(first_key.as_deref(), Some("event"), "\"event\" comes first: {text}");
}

/// The first message with the headers at its top level, L16 both ways at
/// 16 kHz, and `notify` answered once the audio before it has played.
pub fn vonage_first_message_audio_both_ways_and_notify() {
    let path = "/vonage";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("vonage");
    let headers = r#"{"from":"447700900123","lang":"en-GB","n":1}"#;
    let leg = ok_uuid(&esl().api(&format!(
        "originate {{wsbridge_protocol=vonage,RECORD_READ_ONLY=true,P-wsbridge-websocket-headers={}}}wsbridge/{} tone_3000ms XML wsbridge-test",
        encode(headers),
        uri(path)
    )));
    record_leg(&leg, &recording);
    let mut connection = incoming.next(Duration::from_secs(5));
    let payload = json!({"reply": "greeting", "n": [1, 2, 3], "nested": {"ok": true}});
    let (wire, connected_at, notify, notify_after) = runtime().block_on(async {
        let first = connection.first_text().await;
        let connected_at = Instant::now();
        assert_vonage_connected(
            &first,
            json!({"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "from": "447700900123", "lang": "en-GB", "n": 1}),
        );
        let mut wire = Wire::default();
        wire.read(&mut connection, Duration::from_millis(500), None).await;
        let sent_at = Instant::now();
        connection.send_pcm(&tone(DOWNLINK_HZ, 16000, 1.0, 8000.0), 640).await;
        connection.ws.send(Message::text(json!({"action": "notify", "payload": payload}).to_string())).await.unwrap();
        let notify = wire.read(&mut connection, Duration::from_secs(5), Some("notify")).await.expect("websocket:notify");
        let notify_after = seconds_between(wire.texts.last().unwrap().1, sent_at);
        wire.read(&mut connection, Duration::from_secs(6), None).await;
        (wire, connected_at, notify, notify_after)
    });
    let value = parse(&notify, "vonage notify");
    assert_eq!(value, json!({"event": "websocket:notify", "payload": payload}), "the notify event: {notify}");
    assert_keys(&value, &["event", "payload"], "vonage notify");
    let others: Vec<&String> = wire.texts.iter().map(|(text, _)| text).filter(|text| **text != notify).collect();
    assert!(others.is_empty(), "texts Vonage does not send: {others:?}");
    assert_eq!(wire.closed, Some(Some(1000)), "the call's end closes with 1000");
    check_l16_uplink(&wire, connected_at, 16000, 20, 3.0, "vonage uplink");
    wait_gone(&leg, Duration::from_secs(5));
    let (start, end, _, _) = heard_tone(&recording, DOWNLINK_HZ, "vonage downlink");
    let heard = end - start;
    assert!((heard - 1.0).abs() <= 0.06, "heard {heard:.3} s of a 1 s tone");
    let lag = notify_after - heard;
    assert!(lag.abs() <= 0.040, "websocket:notify came {:.0} ms from the end of its audio", lag * 1000.0);
}

/// L16 uplink: frame size, rate of messages, the tone, and continuity.
fn check_l16_uplink(wire: &Wire, start: Instant, rate: u32, frame_ms: u32, seconds: f64, what: &str) {
    let frame_bytes = (rate * frame_ms / 1000 * 2) as usize;
    let twenty_ms = (rate / 50 * 2) as usize;
    let (last, rest) = wire.frames.split_last().expect("uplink frames");
    let sizes: BTreeSet<usize> = rest.iter().map(|(_, frame)| frame.len()).collect();
    assert_eq!(sizes, BTreeSet::from([frame_bytes]), "{what}: every frame {frame_bytes} bytes");
    // The call's last frame may be cut short at the hangup, to a whole number of 20 ms.
    let last = last.1.len();
    assert!(last <= frame_bytes && last % twenty_ms == 0, "{what}: a last frame of {last} bytes");
    if last != frame_bytes {
        println!("{what}: the last frame, at the hangup, is {last} bytes");
    }
    let per_second_expected = 1000.0 / frame_ms as f64;
    let count = wire.frames.len() as f64;
    let expected = seconds * per_second_expected;
    assert!(
        (count - expected).abs() <= (0.05 * expected).max(1.0),
        "{what}: {count} frames for {seconds} s, expected {expected}"
    );
    let per_second = steady_rate(&wire.arrivals(start), seconds);
    assert!(
        (per_second - per_second_expected).abs() <= (0.05 * per_second_expected).max(1.0),
        "{what}: {per_second:.1} messages a second, expected {per_second_expected}"
    );
    let samples = wire.l16();
    let middle = &samples[samples.len() / 4..samples.len() * 3 / 4];
    assert_tone(middle, rate, UPLINK_HZ, what);
    let step = largest_phase_step(middle, rate, UPLINK_HZ);
    assert!(step <= 0.2, "{what}: the tone jumps by {step:.3} rad between 5 ms blocks: not continuous");
}

/// At 8 kHz: the first message, the caller's keys as `websocket:dtmf`, and
/// `clear` answered with `websocket:cleared`, the tone stopping with it.
pub fn vonage_dtmf_and_clear() {
    let path = "/vonage-clear";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("vonage-clear");
    let a_leg = bridged(
        &uri(path),
        "vonage-clear",
        &format!("wsbridge_protocol=vonage,P-wsbridge-websocket-content-type={}", encode("audio/l16;rate=8000")),
        &recording,
    );
    let mut connection = incoming.next(Duration::from_secs(5));
    let leg = wsbridge_leg(path);
    let (wire, played_for, cleared) = runtime().block_on(async {
        let first = connection.first_text().await;
        assert_vonage_connected(&first, json!({"event": "websocket:connected", "content-type": "audio/l16;rate=8000"}));
        let mut wire = Wire::default();
        wire.read(&mut connection, Duration::from_millis(300), None).await;
        let sent = esl().api(&format!("uuid_send_dtmf {leg} 5#@200"));
        assert!(sent.starts_with("+OK"), "uuid_send_dtmf: {sent}");
        wire.read(&mut connection, Duration::from_secs(5), Some("\"#\"")).await.expect("the second digit");
        let sent_at = Instant::now();
        connection.send_pcm(&tone(DOWNLINK_HZ, 8000, 5.0, 8000.0), 80000).await;
        connection.ws.send(Message::text(r#"{"action":"notify","payload":{"name":"never"}}"#)).await.unwrap();
        wire.read(&mut connection, Duration::from_millis(1200), None).await;
        connection.ws.send(Message::text(r#"{"action":"clear"}"#)).await.unwrap();
        let cleared =
            wire.read(&mut connection, Duration::from_secs(2), Some("cleared")).await.expect("websocket:cleared");
        let played_for = seconds_between(wire.texts.last().unwrap().1, sent_at);
        wire.read(&mut connection, Duration::from_millis(800), None).await;
        connection.close().await;
        (wire, played_for, cleared)
    });
    let dtmf: Vec<Value> = wire
        .texts
        .iter()
        .map(|(text, _)| parse(text, "vonage"))
        .filter(|value| value["event"] == "websocket:dtmf")
        .collect();
    assert_eq!(dtmf.len(), 2, "one websocket:dtmf per key: {:?}", wire.texts);
    for (value, digit) in dtmf.iter().zip(["5", "#"]) {
        assert_keys(value, &["event", "digit", "duration"], "vonage dtmf");
        assert_eq!(value["digit"], digit, "{value}");
        let duration = value["duration"].as_u64().unwrap_or_else(|| panic!("duration in ms, a number: {value}"));
        assert!((150..=250).contains(&duration), "a 200 ms key reported as {duration} ms: {value}");
    }
    assert_eq!(parse(&cleared, "vonage cleared"), json!({"event": "websocket:cleared"}), "{cleared}");
    let notified_never = wire.texts.iter().any(|(text, _)| text.contains("never"));
    println!(
        "vonage clear: the notify queued behind the cleared audio was {}answered",
        if notified_never { "" } else { "not " }
    );
    let sizes: BTreeSet<usize> = wire.frames.iter().map(|(_, frame)| frame.len()).collect();
    assert_eq!(sizes, BTreeSet::from([320]), "8 kHz L16 frames of 20 ms");
    wait_gone(&a_leg, Duration::from_secs(5));
    let (samples, rate) = read_wav(&recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("tone heard");
    let heard = end - start;
    assert!(heard < 2.0, "the tone went on for {heard:.3} s after the clear");
    let lag = played_for - heard;
    assert!(lag.abs() <= 0.040, "quiet {:.0} ms from websocket:cleared", lag * 1000.0);
    let after = &samples[((end + 0.05) * rate as f64) as usize..];
    assert!(rms(after) < 100.0, "after the clear the caller hears {:.0} RMS", rms(after));
}

// ---------------------------------------------------------------------------
// AudioSocket
// ---------------------------------------------------------------------------

const AS_HANGUP: u8 = 0x00;
const AS_UUID: u8 = 0x01;
const AS_DTMF: u8 = 0x03;
const AS_SLIN8: u8 = 0x10;
const AS_ERROR: u8 = 0xff;

/// One message: type, 16-bit big-endian payload length, payload.
fn audiosocket_message(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut message = vec![kind];
    message.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    message.extend_from_slice(payload);
    message
}

/// The next message, or None at EOF.
fn read_audiosocket(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 3];
    match tcp.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("audiosocket read: {e}"),
    }
    let mut payload = vec![0u8; u16::from_be_bytes([header[1], header[2]]) as usize];
    tcp.read_exact(&mut payload).unwrap_or_else(|e| panic!("audiosocket payload of type {:#04x}: {e}", header[0]));
    Some((header[0], payload))
}

fn audiosocket_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    (listener, uri)
}

fn accept_audiosocket(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok((tcp, _)) => {
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = tcp.set_nodelay(true);
                return tcp;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("no AudioSocket connection: {e}"),
        }
    }
}

/// Reads the first message: the UUID, which must be a 16-byte 0x01.
fn audiosocket_uuid(tcp: &mut TcpStream) -> Vec<u8> {
    let (kind, payload) = read_audiosocket(tcp).expect("the UUID message before EOF");
    assert_eq!(kind, AS_UUID, "the first message is the UUID (0x01), not {kind:#04x}");
    assert_eq!(payload.len(), 16, "the UUID is 16 binary bytes");
    payload
}

fn uuid_text(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The UUID message names the leg; the caller's tone arrives as 0x10
/// messages of 320 bytes, 50 a second; a key as 0x03; the call's end as
/// 0x00 with no payload, then EOF.
pub fn audiosocket_uuid_uplink_dtmf_and_caller_hangup() {
    let (listener, as_uri) = audiosocket_listener();
    let uuid =
        ok_uuid(&esl().api(&format!(
            "originate {{wsbridge_protocol=audiosocket}}wsbridge/{as_uri} tone_3000ms XML wsbridge-test"
        )));
    let mut tcp = accept_audiosocket(&listener);
    let started = Instant::now();
    assert_eq!(audiosocket_uuid(&mut tcp), uuid_bytes(&uuid), "the UUID message carries the wsbridge leg's UUID");
    let mut messages: Vec<(f64, u8, Vec<u8>)> = Vec::new();
    let mut dtmf_sent = false;
    while let Some((kind, payload)) = read_audiosocket(&mut tcp) {
        let at = seconds_between(Instant::now(), started);
        messages.push((at, kind, payload));
        if !dtmf_sent && at > 1.0 {
            let sent = esl().api(&format!("uuid_send_dtmf {uuid} 7@100"));
            assert!(sent.starts_with("+OK"), "uuid_send_dtmf: {sent}");
            dtmf_sent = true;
        }
        assert!(at < 10.0, "no EOF 10 s into a 3 s call");
    }
    let kinds: BTreeSet<u8> = messages.iter().map(|(_, kind, _)| *kind).collect();
    assert!(
        kinds.is_subset(&BTreeSet::from([AS_SLIN8, AS_DTMF, AS_HANGUP])),
        "types other than 0x10, 0x03 and 0x00: {kinds:?}"
    );
    let last = messages.last().expect("messages");
    assert_eq!((last.1, last.2.len()), (AS_HANGUP, 0), "the call's end is 0x00 with no payload, then EOF");
    let digits: Vec<&Vec<u8>> = messages.iter().filter(|(_, kind, _)| *kind == AS_DTMF).map(|(_, _, p)| p).collect();
    assert_eq!(digits, [&b"7".to_vec()], "one 0x03 message with the ASCII digit");
    let audio: Vec<&(f64, u8, Vec<u8>)> = messages.iter().filter(|(_, kind, _)| *kind == AS_SLIN8).collect();
    assert!(audio.iter().all(|(_, _, p)| p.len() == 320), "0x10 messages of 320 bytes: 20 ms at 8 kHz");
    let count = audio.len() as f64;
    assert!((count - 150.0).abs() <= 7.5, "{count} audio messages for 3 s, expected 150");
    let arrivals: Vec<f64> = audio.iter().map(|(at, _, _)| *at).collect();
    let per_second = steady_rate(&arrivals, 3.0);
    assert!((per_second - 50.0).abs() <= 2.5, "{per_second:.1} audio messages a second, expected 50");
    let samples: Vec<i16> = audio
        .iter()
        .flat_map(|(_, _, p)| p.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect::<Vec<_>>())
        .collect();
    let middle = &samples[samples.len() / 4..samples.len() * 3 / 4];
    assert_tone(middle, 8000, UPLINK_HZ, "audiosocket uplink at 8 kHz");
    wait_gone(&uuid, Duration::from_secs(5));
}

/// The server's 0x10 audio, in messages that are not a frame's size, is
/// played to the A-leg; its 0x00 ends the call with NORMAL_CLEARING, as EOF
/// does; its 0xff with NETWORK_OUT_OF_ORDER.
pub fn audiosocket_server_tone_and_hangup_causes() {
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE");
    let hangup_cause = |events: &mut test_support::esl::Esl, uuid: &str| -> String {
        let event = events
            .wait_event(Duration::from_secs(5), |e| e.get("Unique-ID").map(String::as_str) == Some(uuid))
            .unwrap_or_else(|| panic!("no CHANNEL_HANGUP_COMPLETE for {uuid}"));
        event["Hangup-Cause"].clone()
    };

    let (listener, as_uri) = audiosocket_listener();
    let recording = recording_path("audiosocket-downlink");
    let a_leg = bridged(&as_uri, "audiosocket-downlink", "wsbridge_protocol=audiosocket", &recording);
    let mut tcp = accept_audiosocket(&listener);
    let leg = uuid_text(&audiosocket_uuid(&mut tcp));
    // Keep reading the uplink, so that the module never waits on this server.
    let mut reader = tcp.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut count = 0;
        while read_audiosocket(&mut reader).is_some() {
            count += 1;
        }
        count
    });
    std::thread::sleep(Duration::from_millis(300));
    let samples = tone(DOWNLINK_HZ, 8000, 1.0, 8000.0);
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    for chunk in bytes.chunks(1000) {
        tcp.write_all(&audiosocket_message(AS_SLIN8, chunk)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(esl().api(&format!("uuid_exists {leg}")).trim(), "true", "the call is up until the server's 0x00");
    tcp.write_all(&audiosocket_message(AS_HANGUP, &[])).unwrap();
    assert_eq!(hangup_cause(&mut events, &leg), "NORMAL_CLEARING", "the server's 0x00");
    let uplink_messages = drain.join().unwrap();
    assert!(uplink_messages >= 50, "the uplink flowed meanwhile: {uplink_messages} messages");
    wait_gone(&a_leg, Duration::from_secs(5));
    let (start, end, _, _) = heard_tone(&recording, DOWNLINK_HZ, "audiosocket downlink");
    assert!((end - start - 1.0).abs() <= 0.06, "heard {:.3} s of a 1 s tone", end - start);

    // EOF from the server, then 0xff with an error code.
    for (reply, cause) in
        [(None, "NORMAL_CLEARING"), (Some(audiosocket_message(AS_ERROR, &[0x02])), "NETWORK_OUT_OF_ORDER")]
    {
        let uuid = ok_uuid(&esl().api(&format!("originate {{wsbridge_protocol=audiosocket}}wsbridge/{as_uri} &park")));
        let mut tcp = accept_audiosocket(&listener);
        assert_eq!(audiosocket_uuid(&mut tcp), uuid_bytes(&uuid));
        std::thread::sleep(Duration::from_millis(300));
        match &reply {
            Some(message) => tcp.write_all(message).unwrap(),
            None => tcp.shutdown(std::net::Shutdown::Both).unwrap(),
        }
        let what = if reply.is_some() { "the server's 0xff" } else { "the server's EOF" };
        assert_eq!(hangup_cause(&mut events, &uuid), cause, "{what}");
        drop(tcp);
        wait_gone(&uuid, Duration::from_secs(5));
    }
}

// ---------------------------------------------------------------------------
// Uplink frame size
// ---------------------------------------------------------------------------

/// `wsbridge_uplink_frame_ms=100`: 3200-byte frames at 16 kHz, 10 a second,
/// the tone continuous across them.
pub fn uplink_frames_of_100ms() {
    let path = "/uplink-100ms";
    let mut incoming = world().router.expect(path);
    let uuid = ok_uuid(&esl().api(&format!(
        "originate {{wsbridge_uplink_frame_ms=100}}wsbridge/{} tone_3000ms XML wsbridge-test",
        uri(path)
    )));
    let mut connection = incoming.next(Duration::from_secs(5));
    let (wire, start) = runtime().block_on(async {
        let first = connection.first_text().await;
        assert_eq!(first, r#" {"content-type":"audio/l16;rate=16000"}"#);
        let start = Instant::now();
        let mut wire = Wire::default();
        wire.read(&mut connection, Duration::from_secs(8), None).await;
        (wire, start)
    });
    assert_eq!(wire.closed, Some(Some(1000)));
    check_l16_uplink(&wire, start, 16000, 100, 3.0, "100 ms uplink frames");
    let samples = wire.l16();
    let (from, to) = (16000 / 2, samples.len() - 16000 / 2);
    assert_eq!(quiet_blocks(&samples[from..to], 16000, 8000.0, 0.0, 1e9), 0, "gaps in the uplink tone");
    wait_gone(&uuid, Duration::from_secs(5));
}

// ---------------------------------------------------------------------------
// G.711 on the native wire
// ---------------------------------------------------------------------------

type Codec = fn(u8) -> i16;
type Encoder = fn(i16) -> u8;

/// One G.711 call: the first message's canonical content type, 160-byte
/// frames each way, the tone up (decoded here) and down (recorded).
/// Returns the leg's write_codec, to be judged once both calls are done.
fn g711_call(path: &str, content_type: &str, canonical: &str, decode: Codec, encode_sample: Encoder) -> String {
    let mut incoming = world().router.expect(path);
    let recording = recording_path(path.trim_start_matches('/'));
    let leg = ok_uuid(&esl().api(&format!(
        "originate {{P-wsbridge-websocket-content-type={},RECORD_READ_ONLY=true}}wsbridge/{} tone_3000ms XML wsbridge-test",
        encode(content_type),
        uri(path)
    )));
    record_leg(&leg, &recording);
    let leg_codec = channel_variable(&leg, "write_codec");
    println!("{path}: the wsbridge leg reads {} and writes {leg_codec}", channel_variable(&leg, "read_codec"));
    let mut connection = incoming.next(Duration::from_secs(5));
    let downlink: Vec<u8> = tone(DOWNLINK_HZ, 8000, 1.0, 8000.0).iter().map(|s| encode_sample(*s)).collect();
    let (wire, start) = runtime().block_on(async {
        let first = connection.first_text().await;
        assert_eq!(first, format!(r#" {{"content-type":"{canonical}"}}"#), "{path}: the canonical content type");
        let start = Instant::now();
        let mut wire = Wire::default();
        wire.read(&mut connection, Duration::from_millis(500), None).await;
        for frame in downlink.chunks(160) {
            connection.ws.feed(Message::Binary(frame.to_vec().into())).await.unwrap();
        }
        connection.ws.flush().await.unwrap();
        wire.read(&mut connection, Duration::from_secs(8), None).await;
        (wire, start)
    });
    assert_eq!(wire.closed, Some(Some(1000)), "{path}");
    let sizes: BTreeSet<usize> = wire.frames.iter().map(|(_, frame)| frame.len()).collect();
    assert_eq!(sizes, BTreeSet::from([160]), "{path}: 160 bytes per 20 ms");
    let count = wire.frames.len() as f64;
    assert!((count - 150.0).abs() <= 7.5, "{path}: {count} frames for 3 s");
    let per_second = steady_rate(&wire.arrivals(start), 3.0);
    assert!((per_second - 50.0).abs() <= 2.5, "{path}: {per_second:.1} frames a second");
    let samples: Vec<i16> = wire.frames.iter().flat_map(|(_, frame)| frame.iter().map(|code| decode(*code))).collect();
    assert_tone(&samples[samples.len() / 4..samples.len() * 3 / 4], 8000, UPLINK_HZ, &format!("{path} uplink"));
    wait_gone(&leg, Duration::from_secs(5));
    let (start, end, _, _) = heard_tone(&recording, DOWNLINK_HZ, &format!("{path} downlink"));
    assert!((end - start - 1.0).abs() <= 0.06, "{path}: heard {:.3} s of a 1 s tone", end - start);
    leg_codec
}

/// A PCMU call (spelled `audio/x-mulaw`) and a PCMA call, a tone each way.
pub fn g711_pcmu_and_pcma_tone_both_ways() {
    let pcmu = g711_call("/g711-pcmu", "audio/x-mulaw", "audio/pcmu;rate=8000", ulaw_decode, ulaw_encode);
    let pcma = g711_call("/g711-pcma", "audio/pcma;rate=8000", "audio/pcma;rate=8000", alaw_decode, alaw_encode);
    // Last, so that the audio is judged either way: the caller's audio
    // reaches the leg in FreeSWITCH's own G.711 codec, so that the core
    // transcodes or passes it through (issue 14). The read side may be L16:
    // the playout decodes the server's G.711 with FreeSWITCH's codec.
    assert_eq!((pcmu.as_str(), pcma.as_str()), ("PCMU", "PCMA"), "the wsbridge legs' write_codec");
}

/// A SIP caller on PCMU bridged to a PCMU wsbridge leg: the tone both ways.
pub fn g711_sip_caller_on_pcmu() {
    let path = "/g711-sip";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("g711-sip");
    let caller = ok_uuid(&esl().api(&format!(
        "originate {{sip_h_P-wsbridge-websocket-uri={},sip_h_P-wsbridge-websocket-content-type={},RECORD_READ_ONLY=true}}sofia/test/sip_to_wsbridge@127.0.0.1:{} tone_3000ms XML wsbridge-test",
        encode(&uri(path)),
        encode("audio/pcmu;rate=8000"),
        world().sip_port,
    )));
    record_leg(&caller, &recording);
    let mut connection = incoming.next(Duration::from_secs(5));
    let leg = wsbridge_leg(path);
    let codecs = (channel_variable(&caller, "read_codec"), channel_variable(&leg, "write_codec"));
    let downlink: Vec<u8> = tone(DOWNLINK_HZ, 8000, 1.0, 8000.0).iter().map(|s| ulaw_encode(*s)).collect();
    let wire = runtime().block_on(async {
        let first = connection.first_text().await;
        assert_eq!(first, r#" {"content-type":"audio/pcmu;rate=8000"}"#);
        let mut wire = Wire::default();
        wire.read(&mut connection, Duration::from_millis(300), None).await;
        for frame in downlink.chunks(160) {
            connection.ws.feed(Message::Binary(frame.to_vec().into())).await.unwrap();
        }
        connection.ws.flush().await.unwrap();
        wire.read(&mut connection, Duration::from_secs(8), None).await;
        wire
    });
    assert!(wire.closed.is_some(), "the SIP caller's hangup closes the socket");
    let sizes: BTreeSet<usize> = wire.frames.iter().map(|(_, frame)| frame.len()).collect();
    assert_eq!(sizes, BTreeSet::from([160]), "160 bytes per 20 ms");
    let samples: Vec<i16> =
        wire.frames.iter().flat_map(|(_, frame)| frame.iter().map(|code| ulaw_decode(*code))).collect();
    assert!(samples.len() >= 8000, "uplink: {} samples", samples.len());
    assert_tone(&samples[samples.len() / 4..samples.len() * 3 / 4], 8000, UPLINK_HZ, "PCMU uplink over SIP");
    wait_gone(&caller, Duration::from_secs(5));
    let (start, end, _, _) = heard_tone(&recording, DOWNLINK_HZ, "PCMU downlink over SIP");
    assert!((end - start - 1.0).abs() <= 0.06, "the SIP caller heard {:.3} s of a 1 s tone", end - start);
    // PCMU end to end: no transcoding between the trunk and the bot (issue 14).
    assert_eq!(codecs.0, "PCMU", "the SIP caller's leg is PCMU");
    assert_eq!(codecs.1, "PCMU", "the wsbridge leg's write_codec is PCMU, so the caller's PCMU passes through");
}

// ---------------------------------------------------------------------------
// The setting
// ---------------------------------------------------------------------------

/// The first text message of a call that originates with `variables`, then hangs up.
fn first_message_with(path: &str, variables: &str) -> String {
    let mut incoming = world().router.expect(path);
    let uuid = ok_uuid(&esl().api(&format!("originate {{{variables}}}wsbridge/{} &park", uri(path))));
    let mut connection = incoming.next(Duration::from_secs(5));
    let first = runtime().block_on(connection.first_text());
    assert!(esl().api(&format!("uuid_kill {uuid}")).starts_with("+OK"));
    runtime().block_on(connection.close());
    wait_gone(&uuid, Duration::from_secs(5));
    first
}

/// `wsbridge_protocol` and the P-wsbridge-websocket-protocol SIP header
/// choose the protocol; an unknown value is refused; the content type's
/// aliases are sent canonical; wsbridge.conf's `protocol`,
/// `twilio-account-sid` and `uplink-frame-ms` are the defaults.
pub fn protocol_setting_sources_and_refusal() {
    let ws = encode(&uri("/never"));
    for variables in [
        format!("wsbridge_protocol=bogus,P-wsbridge-websocket-uri={ws}"),
        format!("sip_h_P-wsbridge-websocket-protocol=bogus,P-wsbridge-websocket-uri={ws}"),
    ] {
        let reply = esl().api(&format!("originate {{{variables}}}wsbridge &park"));
        assert_eq!(reply.trim(), "-ERR SERVICE_NOT_IMPLEMENTED", "{variables}");
    }
    assert_eq!(
        first_message_with("/protocol-wsbridge", "wsbridge_protocol=wsbridge"),
        r#" {"content-type":"audio/l16;rate=16000"}"#
    );
    let vonage = first_message_with("/protocol-sip-header", "sip_h_P-wsbridge-websocket-protocol=vonage");
    assert_vonage_connected(&vonage, json!({"event": "websocket:connected", "content-type": "audio/l16;rate=16000"}));
    let alaw = first_message_with(
        "/protocol-x-alaw",
        &format!("P-wsbridge-websocket-content-type={}", encode("audio/x-alaw")),
    );
    assert_eq!(alaw, r#" {"content-type":"audio/pcma;rate=8000"}"#, "audio/x-alaw is sent as its canonical name");

    // wsbridge.conf, in a FreeSWITCH of its own: a reload of the module reads it.
    let router = &world().router;
    let freeswitch = test_support::instance::FreeSwitch::start(&crate::BUILD, &router.base(), 7);
    let mut esl = freeswitch.esl();
    let reload = |esl: &mut test_support::esl::Esl| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let reply = esl.api("reload mod_wsbridge");
            if !reply.contains("in use") {
                assert!(!reply.contains("-ERR"), "reload mod_wsbridge: {reply}");
                return;
            }
            assert!(Instant::now() < deadline, "mod_wsbridge still in use: {reply}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let account = "ACfedcba9876543210fedcba9876543210";
    freeswitch.set_wsbridge_conf(&format!(
        r#"<param name="protocol" value="twilio"/><param name="twilio-account-sid" value="{account}"/>"#
    ));
    reload(&mut esl);
    let mut incoming = router.expect("/conf-twilio");
    let uuid = ok_uuid(&esl.api(&format!("originate wsbridge/{}/conf-twilio &park", router.base())));
    let connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(async {
        let expected = TwilioExpected {
            account_sid: account.to_string(),
            call_sid: Some(call_sid(&uuid)),
            custom_parameters: json!({}),
        };
        let mut twilio = TwilioServer::accept(connection, expected).await;
        assert!(esl.api(&format!("uuid_kill {uuid}")).starts_with("+OK"));
        assert_eq!(twilio.read_to_close(Duration::from_secs(5)).await, Some(1000));
    });
    crate::wait_gone_on(&mut esl, &uuid, Duration::from_secs(5));

    freeswitch.set_wsbridge_conf(r#"<param name="uplink-frame-ms" value="100"/>"#);
    reload(&mut esl);
    let mut incoming = router.expect("/conf-100ms");
    let uuid =
        ok_uuid(&esl.api(&format!("originate wsbridge/{}/conf-100ms tone_2000ms XML wsbridge-test", router.base())));
    let mut connection = incoming.next(Duration::from_secs(5));
    let wire = runtime().block_on(async {
        assert_eq!(
            connection.first_text().await,
            r#" {"content-type":"audio/l16;rate=16000"}"#,
            "protocol is back to its default"
        );
        let mut wire = Wire::default();
        wire.read(&mut connection, Duration::from_secs(6), None).await;
        wire
    });
    let (_, rest) = wire.frames.split_last().expect("uplink frames");
    let sizes: BTreeSet<usize> = rest.iter().map(|(_, frame)| frame.len()).collect();
    assert_eq!(sizes, BTreeSet::from([3200]), "uplink-frame-ms=100 from wsbridge.conf");
    crate::wait_gone_on(&mut esl, &uuid, Duration::from_secs(5));
    assert!(freeswitch.stop(), "FreeSWITCH shuts down cleanly");
}
