//! OpenAI's Realtime API (GA), and servers that speak it: the call talks
//! straight to a speech-to-speech model. Every message is JSON text; audio
//! goes as base64 in `input_audio_buffer.append` and comes back in
//! `response.output_audio.delta`, each reply numbered for the playout so
//! that a barge-in can say how much of it the caller heard.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{unused_kind, AgentEvent, Decoder, Encoder, FromServer, Opening, ReplyAudio, Row, Speaker};
use crate::audio::replies::Heard;
use crate::audio::uplink::ToServer;
use crate::settings::agent::{overlay, AgentOptions};
use crate::settings::{ContentType, Encoding, ProtocolRules};
use crate::support::sync::lock;

pub const RULES: ProtocolRules = ProtocolRules {
    name: "openai",
    over_tcp: false,
    pings: true,
    carries_text: true,
    content_type: carries,
    fork_content_type: no_fork,
};

pub const ROW: Row = Row { rules: &RULES, encoder };

/// G.711 reaches the model untouched; any L16 call is carried at the model's 24 kHz.
fn carries(asked: ContentType, _set_for_call: bool) -> Result<ContentType, String> {
    match asked.encoding {
        Encoding::Pcmu | Encoding::Pcma => Ok(asked),
        Encoding::L16 => Ok(ContentType::l16(24000)),
    }
}

fn no_fork(_rate: u32) -> Result<ContentType, String> {
    Err("a fork cannot speak the openai protocol".to_string())
}

/// The audio format object the Realtime API names for `format`.
fn format_object(format: ContentType) -> Value {
    match format.encoding {
        Encoding::L16 => json!({ "type": "audio/pcm", "rate": format.rate }),
        Encoding::Pcmu => json!({ "type": "audio/pcmu" }),
        Encoding::Pcma => json!({ "type": "audio/pcma" }),
    }
}

/// Items followed at once; older ones have long played.
const MAX_ITEMS: usize = 64;

/// One reply's audio: an output item's content part.
struct ItemAudio {
    reply: u64,
    item_id: String,
    content_index: u64,
    received_bytes: u64,
    done: bool,
    truncated: bool,
}

/// What the encoder and decoder of one connection share.
#[derive(Default)]
struct Conversation {
    items: VecDeque<ItemAudio>,
    next_reply: u64,
    /// Replies numbered below this were barged in on: their late audio is dropped.
    interrupted_below: u64,
    /// When the caller last stopped speaking, until a reply answers.
    turn_began: Option<Instant>,
    response_active: bool,
    greeted: bool,
}

impl Conversation {
    fn item(&self, item_id: &str) -> Option<&ItemAudio> {
        self.items.iter().find(|item| item.item_id == item_id)
    }

    /// The reply that `item_id`'s audio belongs to, numbered anew for a new item.
    fn reply_for(&mut self, item_id: &str, content_index: u64) -> (u64, Option<Instant>, &mut ItemAudio) {
        let found = self.items.iter().position(|item| item.item_id == item_id && item.content_index == content_index);
        let (index, turn_began) = match found {
            Some(index) => (index, None),
            None => {
                if self.items.len() == MAX_ITEMS {
                    self.items.pop_front();
                }
                let reply = self.next_reply;
                self.next_reply += 1;
                let item_id = item_id.to_string();
                let fresh =
                    ItemAudio { reply, item_id, content_index, received_bytes: 0, done: false, truncated: false };
                self.items.push_back(fresh);
                (self.items.len() - 1, self.turn_began.take())
            }
        };
        let item = &mut self.items[index];
        (item.reply, turn_began, item)
    }
}

pub struct RealtimeWriter {
    conversation: Arc<Mutex<Conversation>>,
    agent: AgentOptions,
    format: ContentType,
    /// `response.create` after an item the model should answer.
    pending: Option<Message>,
}

fn encoder(opening: &Opening<'_>) -> Box<dyn Encoder> {
    Box::new(RealtimeWriter {
        conversation: Arc::default(),
        agent: opening.agent.clone(),
        format: opening.settings.content_type,
        pending: None,
    })
}

impl RealtimeWriter {
    /// `session.update`: the operator's session, with the module's type and audio formats.
    fn session_update(&self) -> String {
        let mut session = self.agent.session.clone();
        let format = format_object(self.format);
        let ours = json!({
            "type": "realtime",
            "audio": { "input": { "format": format }, "output": { "format": format } },
        });
        if let Value::Object(ours) = ours {
            overlay(&mut session, ours);
        }
        json!({ "type": "session.update", "session": session }).to_string()
    }

    fn user_text(text: &str) -> String {
        json!({
            "type": "conversation.item.create",
            "item": { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": text }] },
        })
        .to_string()
    }

    fn function_output(call_id: &str, output: &str) -> String {
        json!({
            "type": "conversation.item.create",
            "item": { "type": "function_call_output", "call_id": call_id, "output": output },
        })
        .to_string()
    }
}

/// Asks the model to answer what it has been given.
fn response_create() -> Message {
    Message::text(r#"{"type":"response.create"}"#)
}

fn append(audio: &[u8]) -> String {
    const HEAD: &str = r#"{"type":"input_audio_buffer.append","audio":""#;
    let mut text = String::with_capacity(HEAD.len() + audio.len().div_ceil(3) * 4 + 2);
    text.push_str(HEAD);
    BASE64.encode_string(audio, &mut text);
    text.push_str("\"}");
    text
}

impl Encoder for RealtimeWriter {
    fn open(&mut self) -> Vec<Message> {
        // A new connection is a new session: the model remembers nothing of the last.
        *lock(&self.conversation) = Conversation::default();
        self.pending = None;
        vec![Message::text(self.session_update())]
    }

    fn encode(&mut self, item: &ToServer) -> Option<Message> {
        let text = match item {
            ToServer::Audio(frame) => append(frame),
            ToServer::Text(text) => text.clone(),
            ToServer::Dtmf { digit, .. } if self.agent.dtmf_to_model => {
                if !lock(&self.conversation).response_active {
                    self.pending = Some(response_create());
                }
                Self::user_text(&format!("The caller pressed {digit} on the phone's keypad."))
            }
            ToServer::FunctionResult { call_id, output } => {
                self.pending = Some(response_create());
                Self::function_output(call_id, output)
            }
            ToServer::Dtmf { .. } | ToServer::Mark { .. } | ToServer::Cleared | ToServer::AfterPlayout(_) => {
                return None
            }
        };
        Some(Message::text(text))
    }

    fn take_pending(&mut self) -> Option<Message> {
        self.pending.take()
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(RealtimeReader {
            conversation: self.conversation.clone(),
            greeting: self.agent.greeting.clone(),
            wire_bytes_per_ms: (self.format.bytes_per_frame() / crate::settings::FRAME_MS as usize) as u64,
        })
    }
}

struct RealtimeReader {
    conversation: Arc<Mutex<Conversation>>,
    greeting: Option<String>,
    wire_bytes_per_ms: u64,
}

fn text_field<'a>(event: &'a Map<String, Value>, field: &str) -> &'a str {
    event.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn number_field(event: &Map<String, Value>, field: &str) -> u64 {
    event.get(field).and_then(Value::as_u64).unwrap_or_default()
}

impl RealtimeReader {
    fn read(&self, event: &Map<String, Value>) -> FromServer {
        let kind = text_field(event, "type");
        match kind {
            "response.output_audio.delta" | "response.audio.delta" => self.audio(event),
            "response.output_audio.done" | "response.audio.done" => {
                let mut conversation = lock(&self.conversation);
                let item_id = text_field(event, "item_id");
                conversation.items.iter_mut().filter(|item| item.item_id == item_id).for_each(|item| item.done = true);
                FromServer::Ignored(kind.to_string())
            }
            "input_audio_buffer.speech_started" => {
                let mut conversation = lock(&self.conversation);
                conversation.interrupted_below = conversation.next_reply;
                conversation.turn_began = None;
                FromServer::Agent(AgentEvent::BargeIn)
            }
            "input_audio_buffer.speech_stopped" => {
                lock(&self.conversation).turn_began = Some(Instant::now());
                FromServer::Ignored(kind.to_string())
            }
            "response.created" => {
                lock(&self.conversation).response_active = true;
                FromServer::Ignored(kind.to_string())
            }
            "response.done" => {
                lock(&self.conversation).response_active = false;
                let usage = event.get("response").and_then(|response| response.get("usage"));
                let tokens = |field| usage.and_then(|usage| usage.get(field)).and_then(Value::as_u64).unwrap_or(0);
                FromServer::Agent(AgentEvent::Usage {
                    input_tokens: tokens("input_tokens"),
                    output_tokens: tokens("output_tokens"),
                })
            }
            "session.updated" => self.greet(),
            _ => self.read_words(kind, event),
        }
    }

    /// Function calls, transcripts and errors.
    fn read_words(&self, kind: &str, event: &Map<String, Value>) -> FromServer {
        let agent = match kind {
            "response.function_call_arguments.done" => AgentEvent::FunctionCall {
                name: text_field(event, "name").to_string(),
                call_id: text_field(event, "call_id").to_string(),
                arguments: text_field(event, "arguments").to_string(),
            },
            "conversation.item.input_audio_transcription.completed" => AgentEvent::Transcript {
                speaker: Speaker::User,
                text: text_field(event, "transcript").to_string(),
                reply: None,
                truncated: false,
            },
            "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
                let conversation = lock(&self.conversation);
                let item = conversation.item(text_field(event, "item_id"));
                AgentEvent::Transcript {
                    speaker: Speaker::Assistant,
                    text: text_field(event, "transcript").to_string(),
                    reply: item.map(|item| item.reply),
                    truncated: item.is_some_and(|item| item.truncated),
                }
            }
            "error" => {
                let error = event.get("error").and_then(Value::as_object).cloned().unwrap_or_default();
                let (kind, code, message) =
                    (text_field(&error, "type"), text_field(&error, "code"), text_field(&error, "message"));
                let code = if code.is_empty() { String::new() } else { format!(" ({code})") };
                AgentEvent::ServerError(format!("{kind}{code}: {message}"))
            }
            "" => return FromServer::Ignored("a message without a type".into()),
            other => return FromServer::Ignored(other.chars().take(64).collect()),
        };
        FromServer::Agent(agent)
    }

    fn audio(&self, event: &Map<String, Value>) -> FromServer {
        let audio = match BASE64.decode(text_field(event, "delta")) {
            Ok(audio) => audio,
            Err(error) => return FromServer::Ignored(format!("audio delta is not base64: {error}")),
        };
        let mut conversation = lock(&self.conversation);
        let interrupted_below = conversation.interrupted_below;
        let (reply, turn_began, item) =
            conversation.reply_for(text_field(event, "item_id"), number_field(event, "content_index"));
        if reply < interrupted_below {
            return FromServer::Ignored("audio of a reply the caller interrupted".into());
        }
        item.received_bytes += audio.len() as u64;
        FromServer::Reply(ReplyAudio { reply, turn_began, data: Bytes::from(audio) })
    }

    /// The greeting is asked for once, when the first session is updated.
    fn greet(&self) -> FromServer {
        let mut conversation = lock(&self.conversation);
        match &self.greeting {
            Some(instructions) if !conversation.greeted => {
                conversation.greeted = true;
                let create = json!({ "type": "response.create", "response": { "instructions": instructions } });
                FromServer::Agent(AgentEvent::Send(create.to_string()))
            }
            _ => FromServer::Ignored("session.updated".into()),
        }
    }
}

impl Decoder for RealtimeReader {
    fn decode(&self, message: Message) -> FromServer {
        let Message::Text(text) = message else {
            return match message {
                Message::Binary(_) => FromServer::Ignored("a binary message on a Realtime session".into()),
                _ => unused_kind(),
            };
        };
        match serde_json::from_str::<Value>(text.as_str()) {
            Ok(Value::Object(event)) => self.read(&event),
            _ => FromServer::Ignored("not a JSON object".into()),
        }
    }

    /// `conversation.item.truncate` for each reply the caller did not hear whole,
    /// or that the model may still be making.
    fn interrupted(&self, heard: &[Heard]) -> Vec<String> {
        let mut conversation = lock(&self.conversation);
        let mut truncates = Vec::new();
        for heard in heard {
            let Some(item) = conversation.items.iter_mut().find(|item| item.reply == heard.reply) else { continue };
            let received_ms = item.received_bytes / self.wire_bytes_per_ms.max(1);
            if item.done && heard.heard_ms >= received_ms {
                continue;
            }
            item.truncated = true;
            let audio_end_ms = heard.heard_ms.min(received_ms);
            let truncate = json!({
                "type": "conversation.item.truncate",
                "item_id": item.item_id,
                "content_index": item.content_index,
                "audio_end_ms": audio_end_ms,
            });
            truncates.push(truncate.to_string());
        }
        truncates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::RawSettings;

    fn writer(content_type: &str, agent: AgentOptions) -> Box<dyn Encoder> {
        let raw = RawSettings {
            uri: Some("wss://api.openai.com/v1/realtime?model=gpt-realtime".into()),
            content_type: Some(content_type.into()),
            protocol: Some("openai".into()),
            ..RawSettings::default()
        };
        let settings = super::super::resolve(&raw, 1024).unwrap();
        encoder(&Opening {
            settings: &settings,
            style: crate::settings::FirstMessageStyle::Wsbridge,
            twilio_account_sid: "",
            call_id: "c",
            fork: None,
            agent: &agent,
        })
    }

    fn json_of(message: Message) -> Value {
        serde_json::from_str(message.to_text().unwrap()).unwrap()
    }

    fn event(value: Value) -> Message {
        Message::text(value.to_string())
    }

    #[test]
    fn the_session_update_carries_the_operators_session_and_the_calls_formats() {
        let mut session = Map::new();
        session.insert("instructions".into(), json!("Be brief"));
        session.insert("audio".into(), json!({"output": {"voice": "marin", "format": {"type": "audio/pcma"}}}));
        let agent = AgentOptions { session, ..AgentOptions::default() };
        let opened = writer("audio/l16;rate=8000", agent.clone()).open();
        assert_eq!(
            json_of(opened[0].clone()),
            json!({"type": "session.update", "session": {
                "instructions": "Be brief", "type": "realtime",
                "audio": {
                    "output": {"voice": "marin", "format": {"type": "audio/pcm", "rate": 24000}},
                    "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                },
            }})
        );
        let pcmu = json_of(writer("audio/pcmu", agent).open().remove(0));
        assert_eq!(pcmu["session"]["audio"]["input"]["format"], json!({"type": "audio/pcmu"}));
        assert_eq!(pcmu["session"]["audio"]["output"]["format"], json!({"type": "audio/pcmu"}));
    }

    #[test]
    fn audio_dtmf_and_function_results_are_written_as_published() {
        let mut writer = writer("audio/l16;rate=24000", AgentOptions { dtmf_to_model: true, ..Default::default() });
        writer.open();
        let append = json_of(writer.encode(&ToServer::Audio(Bytes::from_static(&[1, 2, 3, 4]))).unwrap());
        assert_eq!(append, json!({"type": "input_audio_buffer.append", "audio": "AQIDBA=="}));
        let digit = json_of(writer.encode(&ToServer::Dtmf { digit: '7', duration_ms: 100 }).unwrap());
        assert_eq!(digit["item"]["role"], "user");
        assert!(digit["item"]["content"][0]["text"].as_str().unwrap().contains('7'));
        assert_eq!(json_of(writer.take_pending().unwrap()), json!({"type": "response.create"}));
        let result = ToServer::FunctionResult { call_id: "call_1".into(), output: "{\"ok\":true}".into() };
        assert_eq!(
            json_of(writer.encode(&result).unwrap()),
            json!({"type": "conversation.item.create",
                   "item": {"type": "function_call_output", "call_id": "call_1", "output": "{\"ok\":true}"}})
        );
        assert!(writer.take_pending().is_some(), "the model answers the result");
        for unsent in [ToServer::Cleared, ToServer::Mark { name: "m".into(), cleared: false }] {
            assert_eq!(writer.encode(&unsent), None);
        }
        let mut deaf = super::tests::writer("audio/l16;rate=24000", AgentOptions::default());
        assert_eq!(deaf.encode(&ToServer::Dtmf { digit: '1', duration_ms: 100 }), None, "wsbridge_openai_dtmf=ignore");
    }

    fn delta(item_id: &str, audio: &[u8]) -> Message {
        event(json!({"type": "response.output_audio.delta", "event_id": "e", "response_id": "r",
                     "item_id": item_id, "output_index": 0, "content_index": 0, "delta": BASE64.encode(audio)}))
    }

    #[test]
    fn replies_are_numbered_by_item_and_a_barge_in_truncates_what_was_not_heard() {
        let mut writer = writer("audio/l16;rate=24000", AgentOptions::default());
        writer.open();
        let reader = writer.decoder();
        reader.decode(event(json!({"type": "input_audio_buffer.speech_stopped"})));
        let FromServer::Reply(first) = reader.decode(delta("item_a", &[0; 4800])) else { panic!("audio") };
        assert_eq!(first.reply, 0);
        assert!(first.turn_began.is_some(), "the reply answers the turn");
        let FromServer::Reply(more) = reader.decode(delta("item_a", &[0; 4800])) else { panic!("audio") };
        assert_eq!((more.reply, more.turn_began), (0, None));
        assert_eq!(
            reader.decode(event(json!({"type": "input_audio_buffer.speech_started"}))),
            FromServer::Agent(AgentEvent::BargeIn)
        );
        // 200 ms arrived (48 bytes a ms); the caller heard 120.
        let truncates = reader.interrupted(&[Heard { reply: 0, heard_ms: 120 }]);
        assert_eq!(
            truncates.iter().map(|t| serde_json::from_str::<Value>(t).unwrap()).collect::<Vec<_>>(),
            [
                json!({"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0, "audio_end_ms": 120})
            ]
        );
        assert!(matches!(reader.decode(delta("item_a", &[0; 480])), FromServer::Ignored(_)), "late audio is dropped");
        let done = json!({"type": "response.output_audio_transcript.done", "item_id": "item_a", "transcript": "Hello"});
        assert_eq!(
            reader.decode(event(done)),
            FromServer::Agent(AgentEvent::Transcript {
                speaker: Speaker::Assistant,
                text: "Hello".into(),
                reply: Some(0),
                truncated: true
            })
        );
        let FromServer::Reply(next) = reader.decode(delta("item_b", &[0; 480])) else { panic!("a new reply plays") };
        assert_eq!(next.reply, 1);
        reader.decode(event(json!({"type": "response.output_audio.done", "item_id": "item_b"})));
        assert!(reader.interrupted(&[Heard { reply: 1, heard_ms: 10 }]).is_empty(), "heard whole");
    }

    #[test]
    fn functions_usage_errors_and_the_greeting() {
        let agent = AgentOptions { greeting: Some("Greet the caller".into()), ..Default::default() };
        let mut writer = writer("audio/pcmu", agent);
        writer.open();
        let reader = writer.decoder();
        let FromServer::Agent(AgentEvent::Send(create)) = reader.decode(event(json!({"type": "session.updated"})))
        else {
            panic!("the greeting is asked for")
        };
        assert_eq!(
            serde_json::from_str::<Value>(&create).unwrap(),
            json!({"type": "response.create", "response": {"instructions": "Greet the caller"}})
        );
        assert!(matches!(reader.decode(event(json!({"type": "session.updated"}))), FromServer::Ignored(_)), "once");
        let call = json!({"type": "response.function_call_arguments.done", "name": "lookup", "call_id": "c1",
                          "arguments": "{\"id\":1}", "item_id": "i", "output_index": 1, "response_id": "r"});
        assert_eq!(
            reader.decode(event(call)),
            FromServer::Agent(AgentEvent::FunctionCall {
                name: "lookup".into(),
                call_id: "c1".into(),
                arguments: "{\"id\":1}".into()
            })
        );
        let done = json!({"type": "response.done", "response": {"usage": {"input_tokens": 12, "output_tokens": 34}}});
        assert_eq!(
            reader.decode(event(done)),
            FromServer::Agent(AgentEvent::Usage { input_tokens: 12, output_tokens: 34 })
        );
        let error = json!({"type": "error", "error": {"type": "invalid_request_error", "code": "x", "message": "bad"}});
        assert_eq!(
            reader.decode(event(error)),
            FromServer::Agent(AgentEvent::ServerError("invalid_request_error (x): bad".into()))
        );
        let user = json!({"type": "conversation.item.input_audio_transcription.completed", "transcript": "hi"});
        assert!(matches!(
            reader.decode(event(user)),
            FromServer::Agent(AgentEvent::Transcript { speaker: Speaker::User, .. })
        ));
        for ignored in ["not json", "[]", r#"{"type":"rate_limits.updated"}"#, r#"{"no":"type"}"#] {
            assert!(matches!(reader.decode(Message::text(ignored)), FromServer::Ignored(_)), "{ignored}");
        }
        let bad = json!({"type": "response.output_audio.delta", "item_id": "i", "delta": "!!"});
        assert!(matches!(reader.decode(event(bad)), FromServer::Ignored(_)));
    }

    #[test]
    fn g711_stays_g711_and_l16_goes_at_24_khz() {
        assert_eq!(carries(ContentType::PCMA, true), Ok(ContentType::PCMA));
        assert_eq!(carries(ContentType::l16(8000), true), Ok(ContentType::l16(24000)));
        assert!(no_fork(16000).is_err());
    }
}
