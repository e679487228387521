//! Twilio Media Streams, bidirectional, as Twilio publishes it: every
//! message JSON text, audio as base64 μ-law at 8 kHz, numbers such as
//! `sequenceNumber`, `chunk` and `timestamp` carried as strings.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use tokio_tungstenite::tungstenite::Message;

use super::{parse_control, unused_kind, Control, Decoder, Encoder, FromServer, Opening, Row};
use crate::audio::uplink::ToServer;
use crate::settings::options::Tracks;
use crate::settings::{ContentType, ProtocolRules};

/// μ-law at 8 kHz: one byte a sample, eight a millisecond.
const BYTES_PER_MS: u64 = 8;

/// What stays the same for every stream of one call.
#[derive(Debug, Clone)]
pub struct CallIdentity {
    pub account_sid: String,
    /// `CA` and the leg's UUID without dashes.
    pub call_sid: String,
    /// The `P-wsbridge-websocket-headers` object.
    pub custom_parameters: Map<String, Value>,
}

impl CallIdentity {
    /// Twilio's `customParameters` are strings: other JSON values of the
    /// headers object are sent as their JSON text (`1` as `"1"`).
    pub fn new(account_sid: &str, call_id: &str, headers: Map<String, Value>) -> Self {
        let custom_parameters = headers
            .into_iter()
            .map(|(key, value)| match value {
                Value::String(text) => (key, Value::String(text)),
                other => (key, Value::String(other.to_string())),
            })
            .collect();
        let hex: String = call_id.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_ascii_lowercase();
        // A UUID gives exactly 32 digits; anything else (a custom origination_uuid) is padded or cut to that.
        let call_sid = format!("CA{:0<32.32}", hex);
        CallIdentity { account_sid: account_sid.to_string(), call_sid, custom_parameters }
    }
}

impl Tracks {
    fn names(self) -> &'static [&'static str] {
        match self {
            Tracks::Inbound => &["inbound"],
            Tracks::Mixed => &["mixed"],
            Tracks::Both => &["inbound", "outbound"],
        }
    }
}

/// One stream: what the module sends on one connection.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    identity: CallIdentity,
    stream_sid: String,
    /// The last `sequenceNumber` given; `start` is 1.
    sequence: u64,
    /// The last media `chunk` given.
    chunk: u64,
    /// Caller audio sent on this stream, in ms: the next chunk's `timestamp`.
    audio_ms: u64,
    tracks: Tracks,
    /// The outbound track's message of the last frame, sent after the inbound one.
    pending: Option<String>,
}

/// `MZ` and 32 hex digits, new for every connection.
pub fn new_stream_sid() -> String {
    format!("MZ{:032x}", rand::random::<u128>())
}

impl StreamWriter {
    pub fn new(identity: CallIdentity) -> Self {
        StreamWriter {
            identity,
            stream_sid: new_stream_sid(),
            sequence: 0,
            chunk: 0,
            audio_ms: 0,
            tracks: Tracks::Inbound,
            pending: None,
        }
    }

    pub fn set_tracks(&mut self, tracks: Tracks) {
        self.tracks = tracks;
    }

    pub fn take_pending(&mut self) -> Option<String> {
        self.pending.take()
    }

    pub fn stream_sid(&self) -> &str {
        &self.stream_sid
    }

    /// A new stream (a new connection): a new `streamSid`, counters from the start.
    /// Returns `connected` and `start`.
    pub fn open(&mut self) -> [String; 2] {
        self.stream_sid = new_stream_sid();
        self.sequence = 0;
        self.chunk = 0;
        self.audio_ms = 0;
        self.pending = None;
        let connected = json!({ "event": "connected", "protocol": "Call", "version": "1.0.0" }).to_string();
        let start = json!({
            "event": "start",
            "sequenceNumber": self.next_sequence(),
            "start": {
                "accountSid": self.identity.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.identity.call_sid,
                "tracks": self.tracks.names(),
                "customParameters": self.identity.custom_parameters,
                "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 },
            },
            "streamSid": self.stream_sid,
        })
        .to_string();
        [connected, start]
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    /// One message of caller audio (μ-law bytes); with both tracks, the
    /// inbound half now and the outbound half left in [`Self::take_pending`].
    pub fn media(&mut self, mulaw: &[u8]) -> String {
        let timestamp = self.audio_ms;
        match self.tracks {
            Tracks::Inbound => self.media_of("inbound", mulaw, timestamp),
            Tracks::Mixed => self.media_of("mixed", mulaw, timestamp),
            Tracks::Both => {
                let (inbound, outbound) = mulaw.split_at(mulaw.len() / 2);
                let first = self.media_of("inbound", inbound, timestamp);
                self.audio_ms = timestamp;
                self.pending = Some(self.media_of("outbound", outbound, timestamp));
                first
            }
        }
    }

    fn media_of(&mut self, track: &str, mulaw: &[u8], timestamp: u64) -> String {
        self.chunk += 1;
        self.audio_ms = timestamp + mulaw.len() as u64 / BYTES_PER_MS;
        json!({
            "event": "media",
            "sequenceNumber": self.next_sequence(),
            "media": {
                "track": track,
                "chunk": self.chunk.to_string(),
                "timestamp": timestamp.to_string(),
                "payload": BASE64.encode(mulaw),
            },
            "streamSid": self.stream_sid,
        })
        .to_string()
    }

    pub fn dtmf(&mut self, digit: char) -> String {
        json!({
            "event": "dtmf",
            "streamSid": self.stream_sid,
            "sequenceNumber": self.next_sequence(),
            "dtmf": { "track": "inbound_track", "digit": digit.to_string() },
        })
        .to_string()
    }

    /// A mark whose audio has played, or that a `clear` dropped: Twilio answers both alike.
    pub fn mark(&mut self, name: &str) -> String {
        json!({
            "event": "mark",
            "sequenceNumber": self.next_sequence(),
            "streamSid": self.stream_sid,
            "mark": { "name": name },
        })
        .to_string()
    }

    pub fn stop(&mut self) -> String {
        json!({
            "event": "stop",
            "sequenceNumber": self.next_sequence(),
            "streamSid": self.stream_sid,
            "stop": { "accountSid": self.identity.account_sid, "callSid": self.identity.call_sid },
        })
        .to_string()
    }
}

/// Reads a message from a Twilio server on the stream `stream_sid`.
pub fn read(text: &str, stream_sid: &str) -> FromServer {
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
        return FromServer::Ignored("not a JSON object".into());
    };
    let Some(event) = message.get("event").and_then(Value::as_str) else {
        // The module's own actions (hangup, dtmf) stay available beside Twilio's.
        return match parse_control(text) {
            Ok(control) => FromServer::Control(control),
            Err(error) => FromServer::Ignored(error.to_string()),
        };
    };
    match message.get("streamSid") {
        Some(Value::String(sid)) if sid == stream_sid => {}
        Some(other) => return FromServer::Ignored(format!("for another stream ({other})")),
        None => return FromServer::Ignored("no streamSid".into()),
    }
    match event {
        "media" => {
            let payload = message.get("media").and_then(|media| media.get("payload")).and_then(Value::as_str);
            match payload.map(|payload| BASE64.decode(payload)) {
                Some(Ok(mulaw)) => FromServer::Audio(Bytes::from(mulaw)),
                Some(Err(error)) => FromServer::Ignored(format!("media payload is not base64: {error}")),
                None => FromServer::Ignored("media without a payload string".into()),
            }
        }
        "mark" => match message.get("mark").and_then(|mark| mark.get("name")).and_then(Value::as_str) {
            Some(name) if name.chars().count() <= super::MAX_MARK_NAME_CHARS => {
                FromServer::Control(Control::Mark { name: name.to_string() })
            }
            Some(_) => FromServer::Ignored("mark name over 256 characters".into()),
            None => FromServer::Ignored("mark without a name string".into()),
        },
        "clear" => FromServer::Control(Control::Clear),
        other => FromServer::Ignored(format!("unknown event '{}'", other.chars().take(64).collect::<String>())),
    }
}

pub const RULES: ProtocolRules = ProtocolRules {
    name: "twilio",
    over_tcp: false,
    pings: true,
    carries_text: true,
    content_type: carries,
    fork_content_type: fork_carries,
};

pub const ROW: Row = Row { rules: &RULES, encoder };

/// Twilio streams carry μ-law at 8 kHz, whatever else is configured.
fn carries(_asked: ContentType, _set_for_call: bool) -> Result<ContentType, String> {
    Ok(ContentType::PCMU)
}

fn fork_carries(_rate: u32) -> Result<ContentType, String> {
    Ok(ContentType::PCMU)
}

fn encoder(opening: &Opening<'_>) -> Box<dyn Encoder> {
    let identity = CallIdentity::new(opening.twilio_account_sid, opening.call_id, opening.settings.headers.clone());
    let mut writer = StreamWriter::new(identity);
    if let Some(layout) = opening.fork {
        writer.set_tracks(layout.tracks);
    }
    Box::new(writer)
}

impl Encoder for StreamWriter {
    fn open(&mut self) -> Vec<Message> {
        StreamWriter::open(self).map(Message::text).into()
    }

    fn encode(&mut self, item: &ToServer) -> Option<Message> {
        let text = match item {
            ToServer::Audio(frame) => self.media(frame),
            ToServer::Text(text) => text.clone(),
            ToServer::Dtmf { digit, .. } => self.dtmf(*digit),
            ToServer::Mark { name, .. } => self.mark(name),
            // Twilio confirms a clear with the marks it dropped alone.
            ToServer::Cleared | ToServer::FunctionResult { .. } | ToServer::AfterPlayout(_) => return None,
        };
        Some(Message::text(text))
    }

    fn take_pending(&mut self) -> Option<Message> {
        StreamWriter::take_pending(self).map(Message::text)
    }

    fn closing(&mut self) -> Option<Message> {
        Some(Message::text(self.stop()))
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(StreamReader { stream_sid: self.stream_sid().to_string() })
    }
}

/// Reads one stream; messages for any other stream are ignored.
struct StreamReader {
    stream_sid: String,
}

impl Decoder for StreamReader {
    fn decode(&self, message: Message) -> FromServer {
        match message {
            Message::Text(text) => read(text.as_str(), &self.stream_sid),
            Message::Binary(_) => FromServer::Ignored("a binary message on a Twilio stream".into()),
            _ => unused_kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_stereo_fork_sends_both_tracks_one_message_each() {
        let mut writer = writer();
        writer.set_tracks(Tracks::Both);
        let [_, start] = writer.open();
        assert_eq!(parsed(&start)["start"]["tracks"], json!(["inbound", "outbound"]));
        let inbound = parsed(&writer.media(&[0xFF; 320]));
        let outbound = parsed(&writer.take_pending().expect("the outbound track"));
        assert_eq!(
            (inbound["media"]["track"].as_str(), outbound["media"]["track"].as_str()),
            (Some("inbound"), Some("outbound"))
        );
        assert_eq!(inbound["media"]["timestamp"], outbound["media"]["timestamp"]);
        assert_eq!(BASE64.decode(outbound["media"]["payload"].as_str().unwrap()).unwrap().len(), 160);
        assert!(writer.take_pending().is_none());
        assert_eq!(parsed(&writer.media(&[0xFF; 320]))["media"]["timestamp"], "20");
    }

    fn writer() -> StreamWriter {
        let mut parameters = Map::new();
        parameters.insert("caller".into(), json!("+15550100"));
        StreamWriter::new(CallIdentity::new(
            "AC00000000000000000000000000000000",
            "6f1c2a4e-0b1d-4c5e-9a7b-123456789abc",
            parameters,
        ))
    }

    #[test]
    fn stream_opens_with_connected_then_start_numbered_one() {
        let mut writer = writer();
        let [connected, start] = writer.open();
        assert_eq!(parsed(&connected), json!({"event":"connected","protocol":"Call","version":"1.0.0"}));
        let start = parsed(&start);
        let sid = writer.stream_sid().to_string();
        assert!(sid.len() == 34 && sid.starts_with("MZ") && sid[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            start,
            json!({
                "event": "start", "sequenceNumber": "1", "streamSid": sid,
                "start": {
                    "accountSid": "AC00000000000000000000000000000000", "streamSid": sid,
                    "callSid": "CA6f1c2a4e0b1d4c5e9a7b123456789abc", "tracks": ["inbound"],
                    "customParameters": {"caller": "+15550100"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
                }
            })
        );
        let [_, again] = writer.open();
        assert_ne!(parsed(&again)["streamSid"], json!(sid), "a new stream per connection");
    }

    #[test]
    fn media_dtmf_mark_and_stop_count_in_one_sequence() {
        let mut writer = writer();
        writer.open();
        let first = parsed(&writer.media(&[0xFF; 160]));
        assert_eq!(first["sequenceNumber"], "2");
        assert_eq!(first["media"]["chunk"], "1");
        assert_eq!(first["media"]["timestamp"], "0");
        assert_eq!(first["media"]["track"], "inbound");
        assert_eq!(BASE64.decode(first["media"]["payload"].as_str().unwrap()).unwrap(), vec![0xFF; 160]);
        let second = parsed(&writer.media(&[0x7F; 800]));
        assert_eq!((second["media"]["chunk"].as_str(), second["media"]["timestamp"].as_str()), (Some("2"), Some("20")));
        let third = parsed(&writer.media(&[0x7F; 160]));
        assert_eq!(third["media"]["timestamp"], "120", "after a 100 ms chunk");
        let dtmf = parsed(&writer.dtmf('5'));
        assert_eq!(dtmf["sequenceNumber"], "5");
        assert_eq!(dtmf["dtmf"], json!({"track":"inbound_track","digit":"5"}));
        let mark = parsed(&writer.mark("m1"));
        assert_eq!((mark["sequenceNumber"].as_str(), &mark["mark"]), (Some("6"), &json!({"name":"m1"})));
        let stop = parsed(&writer.stop());
        assert_eq!(stop["sequenceNumber"], "7");
        assert_eq!(
            stop["stop"],
            json!({"accountSid":"AC00000000000000000000000000000000","callSid":"CA6f1c2a4e0b1d4c5e9a7b123456789abc"})
        );
    }

    #[test]
    fn server_messages_are_read_for_this_stream_only() {
        let sid = "MZ0123456789abcdef0123456789abcdef";
        let media =
            format!(r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"{}"}}}}"#, BASE64.encode([1, 2, 3]));
        assert_eq!(read(&media, sid), FromServer::Audio(Bytes::from_static(&[1, 2, 3])));
        let mark = format!(r#"{{"event":"mark","streamSid":"{sid}","mark":{{"name":"x"}}}}"#);
        assert_eq!(read(&mark, sid), FromServer::Control(Control::Mark { name: "x".into() }));
        assert_eq!(
            read(&format!(r#"{{"event":"clear","streamSid":"{sid}"}}"#), sid),
            FromServer::Control(Control::Clear)
        );
        assert_eq!(read(r#"{"action":"hangup"}"#, sid), FromServer::Control(Control::Hangup { cause: None }));
        for ignored in [
            media.replace(sid, "MZffffffffffffffffffffffffffffffff"),
            r#"{"event":"clear"}"#.to_string(),
            format!(r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"!!"}}}}"#),
            format!(r#"{{"event":"media","streamSid":"{sid}","media":{{}}}}"#),
            format!(r#"{{"event":"fly","streamSid":"{sid}"}}"#),
            "not json".to_string(),
        ] {
            assert!(matches!(read(&ignored, sid), FromServer::Ignored(_)), "{ignored}");
        }
    }

    #[test]
    fn custom_parameters_are_strings_as_twilio_sends_them() {
        let headers = json!({"name":"x","n":1,"ok":true,"list":[1]}).as_object().unwrap().clone();
        assert_eq!(
            Value::Object(CallIdentity::new("AC", "abc", headers).custom_parameters),
            json!({"name":"x","n":"1","ok":"true","list":"[1]"})
        );
    }

    #[test]
    fn call_sid_is_32_hex_digits_whatever_the_uuid() {
        assert_eq!(CallIdentity::new("AC", "abc", Map::new()).call_sid, format!("CAabc{}", "0".repeat(29)));
    }
}
