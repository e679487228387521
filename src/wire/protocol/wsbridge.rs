//! The original module's protocol: a first text message (a space, then
//! compact JSON), binary audio both ways, JSON actions from the server and
//! JSON events to it.

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{parse_control, unused_kind, Decoder, Encoder, FromServer, Opening, Row};
use crate::audio::uplink::ToServer;
use crate::settings::{ContentType, ProtocolRules};

pub const RULES: ProtocolRules = ProtocolRules {
    name: "wsbridge",
    over_tcp: false,
    pings: true,
    carries_text: true,
    content_type: carries,
    fork_content_type: fork_carries,
};

pub const ROW: Row = Row { rules: &RULES, encoder };

/// Any content type the module supports.
fn carries(asked: ContentType, _set_for_call: bool) -> Result<ContentType, String> {
    Ok(asked)
}

fn fork_carries(rate: u32) -> Result<ContentType, String> {
    Ok(ContentType::l16(rate))
}

fn encoder(opening: &Opening<'_>) -> Box<dyn Encoder> {
    Box::new(Writer { first_message: opening.first_message(opening.style) })
}

/// The encoder of a call from the WebSocket side, whose client speaks this
/// protocol and is sent nothing first.
pub fn client_encoder() -> Box<dyn Encoder> {
    Box::new(Writer { first_message: String::new() })
}

struct Writer {
    first_message: String,
}

impl Encoder for Writer {
    fn open(&mut self) -> Vec<Message> {
        vec![Message::text(self.first_message.clone())]
    }

    fn audio_as_binary(&self) -> bool {
        true
    }

    fn encode(&mut self, item: &ToServer) -> Option<Message> {
        Some(match item {
            ToServer::Audio(frame) => Message::Binary(frame.clone()),
            ToServer::Text(text) => Message::text(text.clone()),
            ToServer::Dtmf { digit, duration_ms } => Message::text(dtmf_event(*digit, *duration_ms)),
            ToServer::Mark { name, cleared } => Message::text(mark_event(name, *cleared)),
            ToServer::Cleared => Message::text(cleared_event()),
            ToServer::FunctionResult { .. } | ToServer::AfterPlayout(_) => return None,
        })
    }

    fn resumed(&self, text: String) -> Option<Message> {
        Some(Message::text(text))
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(Reader)
    }
}

struct Reader;

impl Decoder for Reader {
    fn decode(&self, message: Message) -> FromServer {
        match message {
            Message::Binary(audio) => FromServer::Audio(audio),
            Message::Text(text) => match parse_control(text.as_str()) {
                Ok(control) => FromServer::Control(control),
                Err(error) => FromServer::Ignored(error.to_string()),
            },
            _ => unused_kind(),
        }
    }
}

/// A caller's digit, as the original module sends it.
pub fn dtmf_event(digit: char, duration_ms: u32) -> String {
    format!(" {}", json!({ "digit": digit.to_string(), "duration": duration_ms }))
}

/// Sent after the first message of a reconnected session, so a server that
/// keeps state can tie the new connection to the call.
pub fn resumed_event(uuid: &str, gap_ms: u64, reconnects: u64, dropped_frames: u64) -> String {
    json!({ "event": "resumed", "uuid": uuid, "gap_ms": gap_ms, "reconnects": reconnects, "dropped_frames": dropped_frames })
        .to_string()
}

pub fn cleared_event() -> String {
    json!({ "event": "cleared" }).to_string()
}

/// A mark reached (its audio has played) or dropped by a clear.
pub fn mark_event(name: &str, cleared: bool) -> String {
    if cleared {
        json!({ "event": "mark", "name": name, "cleared": true }).to_string()
    } else {
        json!({ "event": "mark", "name": name }).to_string()
    }
}

pub fn hangup_event(cause: &str) -> String {
    json!({ "event": "hangup", "cause": cause }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::FirstMessageStyle;

    #[test]
    fn events_are_compact_json() {
        assert_eq!(dtmf_event('5', 260), r#" {"digit":"5","duration":260}"#);
        assert_eq!(cleared_event(), r#"{"event":"cleared"}"#);
        assert_eq!(mark_event("a\"b", false), r#"{"event":"mark","name":"a\"b"}"#);
        assert_eq!(mark_event("x", true), r#"{"event":"mark","name":"x","cleared":true}"#);
    }

    #[test]
    fn the_first_message_opens_and_binary_is_audio() {
        let settings = crate::settings::RawSettings { uri: Some("ws://h/".into()), ..Default::default() }
            .resolve(1024, super::super::DEFAULT)
            .unwrap();
        let opening = Opening {
            settings: &settings,
            style: FirstMessageStyle::Wsbridge,
            twilio_account_sid: "",
            call_id: "c",
            fork: None,
            agent: &Default::default(),
        };
        let mut writer = encoder(&opening);
        assert_eq!(writer.open(), vec![Message::text(r#" {"content-type":"audio/l16;rate=16000"}"#)]);
        let audio = bytes::Bytes::from_static(&[1, 2]);
        assert_eq!(writer.encode(&ToServer::Audio(audio.clone())), Some(Message::Binary(audio.clone())));
        assert_eq!(writer.decoder().decode(Message::Binary(audio.clone())), FromServer::Audio(audio));
    }
}
