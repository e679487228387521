//! The server against a scripted client on loopback, no FreeSWITCH: every
//! client event the module will send and every server event kind, all then
//! proven well-formed by the openai package's own types; and proof that a
//! key the types do not define is refused, by the Rust checks, by the
//! server and by the python validator.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{check_client_event, new_id, validate_with_openai_types, RealtimeServer};
use crate::g711::{base64_decode, base64_encode};
use crate::ws_server::{runtime, Connection};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// 24 kHz PCM, 20 ms (960 bytes) per append: what the client appends.
const APPENDS: usize = 10;
const APPEND_BYTES: usize = 960;

/// The server events the server sends here, every kind the module reads.
const SERVER_KINDS: &[&str] = &[
    "session.created",
    "session.updated",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "conversation.item.input_audio_transcription.completed",
    "response.created",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.function_call_arguments.done",
    "response.done",
    "error",
];

pub fn speaks_the_published_protocol() {
    runtime().block_on(async {
        let (client, connection) = connect_pair().await;
        let caller: Vec<u8> = (0..APPENDS * APPEND_BYTES).map(|i| (i * 7 % 251) as u8).collect();
        let client = tokio::spawn(scripted_client(client, caller.clone()));
        let mut server = RealtimeServer::accept(connection).await;
        assert_eq!(server.header("authorization"), Some("Bearer sk-test"));
        let session = server.expect_session_update().await;
        assert_eq!(session["audio"]["input"]["format"], json!({"type": "audio/pcm", "rate": 24000}));
        assert_eq!(server.session()["audio"]["output"]["voice"], "marin", "the default kept where not updated");
        server.collect_audio_for(Duration::from_millis(500)).await;
        assert_eq!(server.appended_audio(), caller.as_slice());
        assert_eq!(server.append_sizes(), &[APPEND_BYTES; APPENDS]);
        read_the_client_script(&mut server).await;
        let reply: Vec<u8> = (0..9600u32).map(|i| (i % 256) as u8).collect();
        send_every_server_event(&mut server, &reply).await;
        server.close().await;
        assert!(server.closed().is_some(), "the close handshake completed");
        let (kinds, heard) = client.await.expect("the scripted client");
        for kind in SERVER_KINDS {
            assert!(kinds.iter().any(|seen| seen == kind), "the client never saw `{kind}`: {kinds:?}");
        }
        assert_eq!(heard, [&reply[..], &reply[..960]].concat(), "the deltas carry the audio whole, in order");
        let kept = server.client_events();
        assert_eq!(kept.len(), 1 + APPENDS + 4, "every client event kept: {kept:?}");
        assert_eq!(kept[1]["audio"].as_str().map(str::len), Some(8), "appends kept shortened");
        server.check_with_openai_types();
    });
    unknown_keys_are_refused();
}

/// A listener on loopback, a client connected to it, and the server's end.
async fn connect_pair() -> (Client, Connection) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut headers = Vec::new();
        let ws = tokio_tungstenite::accept_hdr_async(tcp, |request: &Request, response: Response| {
            headers = request
                .headers()
                .iter()
                .map(|(name, value)| (name.as_str().to_string(), value.to_str().unwrap_or("").to_string()))
                .collect();
            Ok(response)
        })
        .await
        .unwrap();
        Connection { subprotocol: None, headers, ws }
    });
    let mut request = format!("ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", "Bearer sk-test".parse().unwrap());
    let (client, _) = tokio_tungstenite::connect_async(request).await.expect("connect to the realtime server");
    (client, accepting.await.unwrap())
}

/// Plays the module's part, then returns the server event types it saw and the audio the deltas carried.
async fn scripted_client(mut client: Client, caller: Vec<u8>) -> (Vec<String>, Vec<u8>) {
    let pcm = json!({"type": "audio/pcm", "rate": 24000});
    let mut script = vec![json!({"type": "session.update", "session": {
        "type": "realtime",
        "instructions": "You answer the phone.",
        "audio": {"input": {"format": pcm, "turn_detection": {"type": "server_vad"}}, "output": {"format": pcm}},
        "tools": [{"type": "function", "name": "transfer", "description": "Transfers the call",
                   "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}]
    }})];
    for chunk in caller.chunks(APPEND_BYTES) {
        script.push(json!({"type": "input_audio_buffer.append", "audio": base64_encode(chunk)}));
    }
    script.extend([
        json!({"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 1500}),
        json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_1", "output": "{\"ok\":true}"}}),
        json!({"type": "response.create"}),
        json!({"type": "conversation.item.create", "event_id": "event_dtmf",
               "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "The caller pressed 5"}]}}),
    ]);
    let first = client.next().await;
    assert!(matches!(&first, Some(Ok(Message::Text(text))) if text.contains("\"session.created\"")), "{first:?}");
    let mut kinds = vec!["session.created".to_string()];
    for event in script {
        client.send(Message::text(event.to_string())).await.unwrap();
    }
    let mut heard = Vec::new();
    while let Some(Ok(message)) = client.next().await {
        let Message::Text(text) = message else { continue };
        let event: Value = serde_json::from_str(&text).unwrap();
        if let Some(delta) = event["delta"].as_str().filter(|_| event["type"] == "response.output_audio.delta") {
            heard.extend(base64_decode(delta).expect("a delta in base64"));
        }
        kinds.push(event["type"].as_str().unwrap_or_default().to_string());
    }
    (kinds, heard)
}

/// The client's events after its appends, each as the server saw it.
async fn read_the_client_script(server: &mut RealtimeServer) {
    let within = Duration::from_secs(2);
    let truncate = server.expect_event("conversation.item.truncate", within).await;
    assert_eq!((truncate["item_id"].as_str(), truncate["audio_end_ms"].as_u64()), (Some("item_1"), Some(1500)));
    let output = server.expect_event("conversation.item.create", within).await;
    assert_eq!(output["item"]["type"], "function_call_output");
    server.expect_event("response.create", within).await;
    let dtmf = server.expect_event("conversation.item.create", within).await;
    assert_eq!(dtmf["item"]["content"][0]["text"], "The caller pressed 5");
    assert!(server.next_event(Duration::from_millis(100)).await.is_none(), "nothing more");
}

/// One of each server event kind, as a call would see them.
async fn send_every_server_event(server: &mut RealtimeServer, reply: &[u8]) {
    let (caller_item, reply_item, call_item) = (new_id("item"), new_id("item"), new_id("item"));
    server.speech_started(120, &caller_item).await;
    server.speech_stopped(1480, &caller_item).await;
    server.input_transcription_completed(&caller_item, 0, "Transfer me to sales, please.").await;
    let response = new_id("resp");
    server.stream_reply(&response, &reply_item, reply, 4800).await;
    server.output_audio_transcript_done(&response, &reply_item, 0, 0, "Transferring you now.").await;
    let arguments = json!({"to": "sales"}).to_string();
    server.function_call_arguments_done(&response, &call_item, 1, &new_id("call"), "transfer", &arguments).await;
    server.response_done(&response, "completed", 120, 80).await;
    // A second response, barged in on: built from the single events, cancelled.
    let (second, second_item) = (new_id("resp"), new_id("item"));
    server.response_created(&second).await;
    server.audio_item_added(&second, &second_item, 0, 0).await;
    for chunk in reply[..960].chunks(480) {
        server.audio_delta(&second, &second_item, 0, 0, chunk).await;
    }
    server.audio_done(&second, &second_item, 0, 0).await;
    server.response_done(&second, "cancelled", 10, 5).await;
    server.error("invalid_request_error", "invalid_value", "An example error.").await;
    let done = server.server_events().iter().find(|event| event["type"] == "response.done").unwrap();
    assert_eq!(done["response"]["output"][0]["content"][0]["transcript"], "Transferring you now.");
    assert_eq!(done["response"]["usage"]["total_tokens"], 200);
}

/// A key the types lack is refused by the Rust check, by a live server, and by python both ways.
fn unknown_keys_are_refused() {
    let truncate =
        json!({"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 1500});
    let mut extra = truncate.clone();
    extra["audio_start_ms"] = json!(0);
    let why = check_client_event(&extra).expect_err("an unknown key refused in Rust");
    assert!(why.contains("conversation.item.truncate") && why.contains("audio_start_ms"), "{why}");
    let mut nested = json!({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}});
    nested["session"]["audio"]["input"]["format"]["channels"] = json!(1);
    assert!(check_client_event(&nested).expect_err("nested").contains("audio.input.format"));
    let mut as_text = truncate.clone();
    as_text["audio_end_ms"] = json!("1500");
    assert!(check_client_event(&as_text).is_err(), "audio_end_ms as a string refused");
    assert!(check_client_event(&truncate).is_ok());

    let started = json!({"type": "input_audio_buffer.speech_started", "event_id": "event_1", "audio_start_ms": 0, "item_id": "item_1"});
    let mut loud = started.clone();
    loud["volume"] = json!(0.5);
    let client = [truncate, extra.clone(), nested, as_text];
    let report = validate_with_openai_types(&client, &[started, loud]).expect_err("python refuses them");
    for expected in [
        "client event 1 ('conversation.item.truncate'): event.audio_start_ms: a key the openai types do not define",
        "client event 2 ('session.update'): event.session.audio.input.format.channels: a key",
        "client event 3 ('conversation.item.truncate'): 1 validation error",
        "4 client events checked with openai",
        "server event 1 ('input_audio_buffer.speech_started'): event.volume: a key",
        "2 server events checked with openai",
    ] {
        assert!(report.contains(expected), "python's report lacks {expected:?}:\n{report}");
    }
    assert_eq!(report.matches(": a key the openai types do not define").count(), 3, "{report}");

    eprintln!("realtime_server: the next panic, a server refusing `audio_start_ms`, is expected");
    let server = runtime().block_on(async {
        let (mut client, connection) = connect_pair().await;
        let server = tokio::spawn(async move {
            let mut server = RealtimeServer::accept(connection).await;
            server.next_event(Duration::from_secs(5)).await
        });
        client.send(Message::text(extra.to_string())).await.unwrap();
        server.await
    });
    assert!(server.is_err_and(|error| error.is_panic()), "the server panics on an unknown key");
}
