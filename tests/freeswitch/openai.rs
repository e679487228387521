//! A call straight into a speech-to-speech model (issue 24): the module
//! against a server that speaks OpenAI's Realtime API as published
//! (`realtime_server`, which checks every client event field by field and
//! with the `openai` package's own types).

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_support::esl::Esl;
use test_support::instance::FreeSwitch;

use crate::audio::{assert_tone, loud_span, read_wav, tone};
use crate::g711::ulaw_decode;
use crate::realtime_server::RealtimeServer;
use crate::ws_server::{runtime, Connection};
use crate::{encode, esl, ok_uuid, recording_path, uri, wait_gone, wait_gone_on, world, BUILD};

crate::tests! {
    openai::session_uplink_and_reply_at_24_khz,
    openai::g711_sip_caller_dtmf_and_server_errors,
    openai::barge_in_truncates_what_was_heard,
    openai::functions_answered_through_the_api,
    openai::hangup_and_transfer_functions,
    openai::transcripts_usage_and_turn_latency,
    openai::key_and_session_from_the_config_and_never_shown,
}

const UPLINK_HZ: f64 = 1000.0;
const REPLY_HZ: f64 = 700.0;
const RATE: u32 = 24000;

/// 16-bit little-endian samples.
fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|sample| sample.to_le_bytes()).collect()
}

fn pcm_samples(bytes: &[u8]) -> Vec<i16> {
    bytes.chunks_exact(2).map(|pair| i16::from_le_bytes([pair[0], pair[1]])).collect()
}

/// A reply tone of `seconds` at 24 kHz, as the model's audio.
fn reply_tone(seconds: f64) -> Vec<u8> {
    pcm_bytes(&tone(REPLY_HZ, RATE, seconds, 8000.0))
}

/// An `openai` call from originate, parked, recording only what the server sends it.
fn parked_call(path: &str, variables: &str, recording: &Path) -> String {
    let extra = if variables.is_empty() { String::new() } else { format!(",{variables}") };
    let reply = esl().api(&format!(
        "originate {{wsbridge_protocol=openai,RECORD_READ_ONLY=true{extra}}}wsbridge/{} &park",
        uri(path)
    ));
    let leg = ok_uuid(&reply);
    let record = esl().api(&format!("uuid_record {leg} start {}", recording.display()));
    assert!(record.starts_with("+OK"), "uuid_record: {record}");
    leg
}

fn accept(connection: Connection) -> RealtimeServer {
    runtime().block_on(RealtimeServer::accept(connection))
}

/// Waits for the CUSTOM event `subclass` of the channel `uuid`.
fn custom_event(events: &mut Esl, uuid: &str, subclass: &str) -> test_support::esl::Headers {
    events
        .wait_event(Duration::from_secs(10), |event| {
            event.get("Event-Subclass").map(String::as_str) == Some(subclass)
                && event.get("Unique-ID").map(String::as_str) == Some(uuid)
        })
        .unwrap_or_else(|| panic!("no {subclass} for {uuid}"))
}

fn hangup_complete(events: &mut Esl, uuid: &str) -> test_support::esl::Headers {
    events
        .wait_event(Duration::from_secs(15), |event| {
            event.get("Event-Name").map(String::as_str) == Some("CHANNEL_HANGUP_COMPLETE")
                && event.get("Unique-ID").map(String::as_str) == Some(uuid)
        })
        .unwrap_or_else(|| panic!("no CHANNEL_HANGUP_COMPLETE for {uuid}"))
}

fn kill(uuid: &str) {
    let _ = esl().api(&format!("uuid_kill {uuid}"));
    wait_gone(uuid, Duration::from_secs(5));
}

/// The length and the tone of what a recording heard, in ms.
fn heard_reply_ms(recording: &Path) -> f64 {
    let (samples, rate) = read_wav(recording);
    let (start, end) = loud_span(&samples, rate, 1000.0).expect("the reply was heard");
    let (from, to) = (((start + 0.03) * rate as f64) as usize, ((end - 0.03) * rate as f64) as usize);
    assert!(to > from, "only {:.3} s of the reply heard", end - start);
    assert_tone(&samples[from..to], rate, REPLY_HZ, "the reply as the caller heard it");
    (end - start) * 1000.0
}

/// L16: `session.update` names audio/pcm at 24 kHz both ways with the call's
/// own session; the caller's tone is appended 20 ms at a time; the model's
/// reply plays to the caller.
pub fn session_uplink_and_reply_at_24_khz() {
    let path = "/openai-l16";
    let mut incoming = world().router.expect(path);
    let session = encode(r#"{"instructions":"Be brief","audio":{"output":{"voice":"marin"}}}"#);
    let reply = esl().api(&format!(
        "originate {{wsbridge_protocol=openai,wsbridge_openai_session={session}}}wsbridge/{} tone_5000ms XML wsbridge-test",
        uri(path)
    ));
    let leg = ok_uuid(&reply);
    let mut server = accept(incoming.next(Duration::from_secs(5)));
    runtime().block_on(async {
        let update = server.expect_session_update().await;
        let pcm = json!({"type": "audio/pcm", "rate": 24000});
        assert_eq!(update["type"], "realtime");
        assert_eq!(update["audio"]["input"]["format"], pcm);
        assert_eq!(update["audio"]["output"]["format"], pcm);
        assert_eq!(
            (update["instructions"].as_str(), update["audio"]["output"]["voice"].as_str()),
            (Some("Be brief"), Some("marin"))
        );
        server.collect_audio_for(Duration::from_millis(1500)).await;
    });
    assert!(server.append_sizes().iter().all(|size| *size == 960), "20 ms of 24 kHz L16 an append");
    let samples = pcm_samples(server.appended_audio());
    assert!(samples.len() >= RATE as usize, "only {} samples appended", samples.len());
    assert_tone(&samples[samples.len() - RATE as usize / 2..], RATE, UPLINK_HZ, "the caller's tone, appended");
    assert_eq!(channel_variable(&leg, "read_codec"), "L16", "the leg runs at the model's rate");
    assert_eq!(channel_variable(&leg, "read_rate"), "24000");
    kill(&leg);
    runtime().block_on(server.collect_audio_for(Duration::from_millis(300)));
    server.check_with_openai_types();
}

/// The UUID of the wsbridge leg whose server URI ends with `suffix`.
fn wsbridge_leg(suffix: &str) -> String {
    let listed: Value = serde_json::from_str(&esl().api("wsbridge list json")).unwrap_or(Value::Null);
    let calls = listed.as_array().cloned().unwrap_or_default();
    let call = calls.iter().find(|call| call["uri"].as_str().is_some_and(|uri| uri.ends_with(suffix)));
    call.and_then(|call| call["uuid"].as_str()).unwrap_or_else(|| panic!("no wsbridge call to {suffix}")).to_string()
}

fn channel_variable(uuid: &str, name: &str) -> String {
    esl().api(&format!("uuid_getvar {uuid} {name}")).trim().to_string()
}

/// A G.711 SIP caller: the model gets audio/pcmu and the caller's μ-law
/// untouched; a digit reaches it as a user message; a server `error` event
/// is evented and the call goes on; its reply in μ-law plays.
pub fn g711_sip_caller_dtmf_and_server_errors() {
    let path = "/openai-pcmu";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe("CUSTOM wsbridge::error");
    let caller = ok_uuid(&esl().api(&format!(
        "originate {{sip_h_P-wsbridge-websocket-uri={},sip_h_P-wsbridge-websocket-protocol=openai,sip_h_P-wsbridge-websocket-content-type=audio%2Fpcmu}}sofia/test/sip_to_wsbridge@127.0.0.1:{} tone_60000ms XML wsbridge-test",
        encode(&uri(path)),
        world().sip_port,
    )));
    let mut server = accept(incoming.next(Duration::from_secs(5)));
    runtime().block_on(async {
        let update = server.expect_session_update().await;
        assert_eq!(update["audio"]["input"]["format"], json!({"type": "audio/pcmu"}));
        assert_eq!(update["audio"]["output"]["format"], json!({"type": "audio/pcmu"}));
        // Digits queued before the caller's RTP flows are lost by FreeSWITCH itself.
        server.collect_audio_for(Duration::from_millis(1000)).await;
        let sent = esl().api(&format!("uuid_send_dtmf {caller} 5@100"));
        assert!(sent.starts_with("+OK"), "uuid_send_dtmf: {sent}");
        let item = server.expect_event("conversation.item.create", Duration::from_secs(10)).await;
        assert_eq!((item["item"]["type"].as_str(), item["item"]["role"].as_str()), (Some("message"), Some("user")));
        let text = item["item"]["content"][0]["text"].as_str().unwrap_or_default();
        assert!(text.contains('5') && item["item"]["content"][0]["type"] == "input_text", "{item}");
        server.expect_event("response.create", Duration::from_secs(5)).await;
        server.error("invalid_request_error", "unknown_parameter", "Unknown parameter: 'session.x'").await;
        server.collect_audio_for(Duration::from_millis(500)).await;
    });
    let mulaw = server.appended_audio();
    assert!(server.append_sizes().iter().all(|size| *size == 160), "20 ms of μ-law an append");
    let samples: Vec<i16> = mulaw[mulaw.len() - 4000..].iter().map(|code| ulaw_decode(*code)).collect();
    assert_tone(&samples, 8000, UPLINK_HZ, "the SIP caller's μ-law, as it came");
    let error = custom_event(&mut events, &wsbridge_leg(path), "wsbridge::error");
    assert_eq!(error["WSBridge-Error"], "invalid_request_error (unknown_parameter): Unknown parameter: 'session.x'");
    assert_eq!(esl().api(&format!("uuid_exists {caller}")).trim(), "true", "the call goes on");
    kill(&caller);
    runtime().block_on(server.collect_audio_for(Duration::from_millis(300)));
    server.check_with_openai_types();
}

/// The caller speaks over a reply: the queued reply stops within a frame and
/// `conversation.item.truncate` names the item and the ms the caller heard,
/// within 40 ms of what the recording shows; late audio of it is dropped.
pub fn barge_in_truncates_what_was_heard() {
    let path = "/openai-barge-in";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe("CUSTOM wsbridge::transcript");
    let recording = recording_path("openai_barge_in");
    let leg = parked_call(path, "", &recording);
    let mut server = accept(incoming.next(Duration::from_secs(5)));
    let truncate = runtime().block_on(async {
        server.expect_session_update().await;
        server.speech_stopped(900, "item_caller_1").await;
        server.stream_reply("resp_1", "item_reply_1", &reply_tone(3.0), 4800).await;
        server.collect_audio_for(Duration::from_millis(1300)).await;
        server.speech_started(2100, "item_caller_2").await;
        let truncate = server.expect_event("conversation.item.truncate", Duration::from_secs(2)).await;
        // The model's audio still in flight: the module drops it.
        let late = json!({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_reply_1",
            "output_index": 0, "content_index": 0, "delta": crate::g711::base64_encode(&reply_tone(0.5))});
        server.send_event(late).await;
        server.output_audio_transcript_done("resp_1", "item_reply_1", 0, 0, "Let me tell you about our").await;
        server.response_done("resp_1", "cancelled", 50, 60).await;
        server.collect_audio_for(Duration::from_millis(800)).await;
        truncate
    });
    assert_eq!((truncate["item_id"].as_str(), truncate["content_index"].as_u64()), (Some("item_reply_1"), Some(0)));
    let audio_end_ms = truncate["audio_end_ms"].as_u64().expect("audio_end_ms") as f64;
    let transcript = custom_event(&mut events, &leg, "wsbridge::transcript");
    assert_eq!(transcript["WSBridge-Role"], "assistant");
    assert_eq!(transcript["WSBridge-Truncated"], "true");
    assert!(transcript.contains_key("WSBridge-Turn-Latency-Ms"), "the reply answered a turn");
    kill(&leg);
    let heard_ms = heard_reply_ms(&recording);
    println!("barge-in: audio_end_ms {audio_end_ms}, the recording heard {heard_ms:.0} ms");
    assert!((900.0..2000.0).contains(&heard_ms), "heard {heard_ms} ms: the reply was cut, late audio dropped");
    assert!((audio_end_ms - heard_ms).abs() <= 40.0, "audio_end_ms {audio_end_ms} against {heard_ms:.0} ms heard");
    server.check_with_openai_types();
}

/// `wsbridge::function_call` carries the call; `uuid_wsbridge_function_result`
/// answers it with `function_call_output` and `response.create`, once.
pub fn functions_answered_through_the_api() {
    let path = "/openai-functions";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe("CUSTOM wsbridge::function_call");
    let leg = parked_call(path, "", &recording_path("openai_functions"));
    let mut server = accept(incoming.next(Duration::from_secs(5)));
    let arguments = r#"{"order":"A-42"}"#;
    runtime().block_on(async {
        server.expect_session_update().await;
        server.response_created("resp_f").await;
        server.function_call_arguments_done("resp_f", "item_f", 0, "call_lookup_1", "lookup_order", arguments).await;
        server.response_done("resp_f", "completed", 10, 5).await;
    });
    let call = custom_event(&mut events, &leg, "wsbridge::function_call");
    assert_eq!(
        (call["WSBridge-Function-Name"].as_str(), call["WSBridge-Function-Call-ID"].as_str()),
        ("lookup_order", "call_lookup_1")
    );
    assert_eq!(call.get("_body").map(String::as_str), Some(arguments));
    assert!(!call.contains_key("WSBridge-Function-Builtin"));
    let output = r#"{"status":"shipped","eta":"Tuesday"}"#;
    let answered = esl().api(&format!("uuid_wsbridge_function_result {leg} call_lookup_1 {output}"));
    assert!(answered.starts_with("+OK"), "{answered}");
    runtime().block_on(async {
        let item = server.expect_event("conversation.item.create", Duration::from_secs(5)).await;
        assert_eq!(item["item"], json!({"type": "function_call_output", "call_id": "call_lookup_1", "output": output}));
        server.expect_event("response.create", Duration::from_secs(5)).await;
    });
    let again = esl().api(&format!("uuid_wsbridge_function_result {leg} call_lookup_1 {output}"));
    assert!(again.starts_with("-ERR"), "answered once only: {again}");
    let unknown = esl().api(&format!("uuid_wsbridge_function_result {leg} call_nobody {output}"));
    assert!(unknown.starts_with("-ERR"), "{unknown}");
    let no_call = esl().api("uuid_wsbridge_function_result 00000000-0000-0000-0000-000000000000 call_lookup_1 x");
    assert!(no_call.starts_with("-ERR"), "{no_call}");
    assert!(esl().api("uuid_wsbridge_function_result").starts_with("-ERR usage"));
    kill(&leg);
    runtime().block_on(server.collect_audio_for(Duration::from_millis(300)));
    server.check_with_openai_types();
}

/// The module's own functions: hang up after the queued reply; transfer the
/// caller after it when the pattern allows the destination, else refuse.
pub fn hangup_and_transfer_functions() {
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE CUSTOM wsbridge::function_call");
    // Hang up: the whole 800 ms reply is heard first.
    let path = "/openai-hangup";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("openai_hangup");
    let leg = parked_call(path, "wsbridge_openai_hangup_function=end_call", &recording);
    let mut server = accept(incoming.next(Duration::from_secs(5)));
    let asked = runtime().block_on(async {
        server.expect_session_update().await;
        server.stream_reply("resp_bye", "item_bye", &reply_tone(0.8), 4800).await;
        server.function_call_arguments_done("resp_bye", "item_fn", 1, "call_bye", "end_call", "{}").await;
        Instant::now()
    });
    let call = custom_event(&mut events, &leg, "wsbridge::function_call");
    assert_eq!(call["WSBridge-Function-Builtin"], "hangup");
    let hangup = hangup_complete(&mut events, &leg);
    let took = asked.elapsed();
    assert_eq!(hangup["Hangup-Cause"], "NORMAL_CLEARING");
    assert!(took >= Duration::from_millis(600), "hung up {took:?} after the call: before the reply played");
    let heard = heard_reply_ms(&recording);
    assert!((760.0..=840.0).contains(&heard), "the whole reply is heard before the hangup: {heard} ms");
    runtime().block_on(server.collect_audio_for(Duration::from_millis(300)));
    server.check_with_openai_types();
    transfer_refused_then_done(&mut events);
}

/// A bridged caller: a destination the pattern refuses gets an output that
/// says so; one it allows moves the caller there once the reply has played.
fn transfer_refused_then_done(events: &mut Esl) {
    let path = "/openai-transfer";
    let mut incoming = world().router.expect(path);
    let recording = recording_path("openai_transfer");
    let variables = "wsbridge_protocol=openai,wsbridge_openai_transfer_function=transfer_call,wsbridge_openai_transfer_pattern=tone_[0-9]*ms";
    let caller = ok_uuid(&esl().api(&format!(
        "originate {{P-wsbridge-websocket-uri={},{variables}}}null/openai_transfer record_and_bridge XML wsbridge-test",
        encode(&uri(path))
    )));
    let record = esl().api(&format!("uuid_record {caller} start {}", recording.display()));
    assert!(record.starts_with("+OK"), "uuid_record: {record}");
    let mut server = accept(incoming.next(Duration::from_secs(5)));
    runtime().block_on(async {
        server.expect_session_update().await;
        let refused = r#"{"destination":"9999"}"#;
        server.function_call_arguments_done("resp_t1", "item_t1", 0, "call_t1", "transfer_call", refused).await;
        let output = server.expect_event("conversation.item.create", Duration::from_secs(5)).await;
        assert_eq!(
            (output["item"]["type"].as_str(), output["item"]["call_id"].as_str()),
            (Some("function_call_output"), Some("call_t1"))
        );
        assert!(output["item"]["output"].as_str().unwrap_or_default().contains("refused"), "{output}");
        server.expect_event("response.create", Duration::from_secs(5)).await;
        server.stream_reply("resp_t2", "item_t2", &reply_tone(0.6), 4800).await;
        let allowed = r#"{"destination":"tone_3000ms"}"#;
        server.function_call_arguments_done("resp_t2", "item_t3", 1, "call_t2", "transfer_call", allowed).await;
        server.collect_audio_for(Duration::from_millis(300)).await;
    });
    let call = events
        .wait_event(Duration::from_secs(10), |event| {
            event.get("WSBridge-Function-Call-ID").map(String::as_str) == Some("call_t2")
        })
        .expect("the transfer's wsbridge::function_call");
    assert_eq!(call["WSBridge-Function-Builtin"], "transfer");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(esl().api(&format!("uuid_exists {caller}")).trim(), "true", "the caller lives on, transferred");
    kill(&caller);
    let (samples, rate) = read_wav(&recording);
    let (reply_start, reply_end) = loud_span(&samples, rate, 1000.0).expect("the reply and then the tone");
    assert!(reply_end - reply_start > 1.5, "the transfer's tone follows the reply: {reply_start}..{reply_end}");
    let at = |seconds: f64| &samples[(seconds * rate as f64) as usize..((seconds + 0.2) * rate as f64) as usize];
    assert_tone(at(reply_start + 0.1), rate, REPLY_HZ, "the reply, heard whole first");
    assert_tone(at(reply_start + 1.2), rate, UPLINK_HZ, "then the extension the model transferred to");
    runtime().block_on(server.collect_audio_for(Duration::from_millis(300)));
    server.check_with_openai_types();
}

/// Transcripts of both sides, the turn latency on the reply's, and the
/// usage and latency figures in the CDR.
pub fn transcripts_usage_and_turn_latency() {
    let path = "/openai-turns";
    let mut incoming = world().router.expect(path);
    let mut events = esl();
    events.subscribe("CHANNEL_HANGUP_COMPLETE CUSTOM wsbridge::transcript");
    let leg = parked_call(path, "", &recording_path("openai_turns"));
    let mut server = accept(incoming.next(Duration::from_secs(5)));
    let mut latencies = Vec::new();
    for (turn, think_ms) in [(1, 300u64), (2, 600)] {
        runtime().block_on(async {
            if turn == 1 {
                server.expect_session_update().await;
            }
            server.speech_stopped(1000 * turn, &format!("item_user_{turn}")).await;
            server.input_transcription_completed(&format!("item_user_{turn}"), 0, &format!("question {turn}")).await;
            tokio::time::sleep(Duration::from_millis(think_ms)).await;
            let (response, item) = (format!("resp_{turn}"), format!("item_answer_{turn}"));
            server.stream_reply(&response, &item, &reply_tone(0.5), 4800).await;
            server.output_audio_transcript_done(&response, &item, 0, 0, &format!("answer {turn}")).await;
            server.response_done(&response, "completed", 100 * turn, 200 * turn).await;
        });
        let user = custom_event(&mut events, &leg, "wsbridge::transcript");
        assert_eq!(
            (user["WSBridge-Role"].as_str(), user.get("_body").map(String::as_str)),
            ("user", Some(format!("question {turn}").as_str()))
        );
        let answer = custom_event(&mut events, &leg, "wsbridge::transcript");
        assert_eq!(answer["WSBridge-Role"], "assistant");
        assert_eq!(answer["WSBridge-Truncated"], "false");
        let latency: u64 = answer["WSBridge-Turn-Latency-Ms"].parse().expect("a turn latency");
        assert!(
            (think_ms..think_ms + 400).contains(&latency),
            "turn {turn}: {latency} ms for {think_ms} ms of thought"
        );
        latencies.push(latency);
        runtime().block_on(server.collect_audio_for(Duration::from_millis(700)));
    }
    let _ = esl().api(&format!("uuid_kill {leg}"));
    let hangup = hangup_complete(&mut events, &leg);
    assert_eq!(hangup["variable_wsbridge_openai_input_tokens"], "300");
    assert_eq!(hangup["variable_wsbridge_openai_output_tokens"], "600");
    assert_eq!(hangup["variable_wsbridge_openai_turns"], "2");
    let p50: u64 = hangup["variable_wsbridge_openai_turn_latency_ms_p50"].parse().unwrap();
    let max: u64 = hangup["variable_wsbridge_openai_turn_latency_ms_max"].parse().unwrap();
    assert_eq!((p50, max), (*latencies.iter().min().unwrap(), *latencies.iter().max().unwrap()), "{latencies:?}");
    runtime().block_on(server.collect_audio_for(Duration::from_millis(300)));
    server.check_with_openai_types();
}

/// wsbridge.conf's key authenticates the call and is never shown; its
/// session is overlaid by the channel's; a refused key ends the call with
/// `CALL_REJECTED` and a line that says so.
pub fn key_and_session_from_the_config_and_never_shown() {
    const KEY: &str = "sk-PLANTED-OPENAI-KEY";
    let router = &world().router;
    let freeswitch = FreeSwitch::start(&BUILD, &router.base(), 50);
    let mut esl = freeswitch.esl();
    freeswitch.set_wsbridge_conf(&format!(
        r#"<param name="openai-api-key" value="{KEY}"/><param name="openai-session" value="{{&quot;instructions&quot;:&quot;from the config&quot;,&quot;audio&quot;:{{&quot;output&quot;:{{&quot;voice&quot;:&quot;alloy&quot;}}}}}}"/>"#
    ));
    assert!(esl.api("reloadxml").contains("+OK"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !esl.api("wsbridge status").contains("openai-api-key = ***") {
        assert!(Instant::now() < deadline, "wsbridge.conf not re-read: {}", esl.api("wsbridge status"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut events = freeswitch.esl();
    events.subscribe("ALL");
    let path = "/openai-key";
    let mut incoming = router.expect(path);
    let session = encode(r#"{"audio":{"output":{"voice":"marin"}}}"#);
    let uuid = ok_uuid(&esl.api(&format!(
        "originate {{wsbridge_protocol=openai,wsbridge_openai_session={session}}}wsbridge/{} &park",
        uri(path)
    )));
    let mut server = accept(incoming.next(Duration::from_secs(5)));
    assert_eq!(server.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    let update = runtime().block_on(server.expect_session_update());
    assert_eq!(update["instructions"], "from the config");
    assert_eq!(update["audio"]["output"]["voice"], "marin", "the channel's session overlays the config's");
    let shown = [
        esl.api("wsbridge status"),
        esl.api("wsbridge status json"),
        esl.api("wsbridge list"),
        esl.api("wsbridge list json"),
    ];
    assert!(esl.api(&format!("uuid_kill {uuid}")).starts_with("+OK"));
    wait_gone_on(&mut esl, &uuid, Duration::from_secs(5));
    let mut seen = Vec::new();
    while let Some(event) = events.next_event(Duration::from_millis(500)) {
        seen.push(format!("{event:?}"));
    }
    refused_key_is_call_rejected(&mut esl);
    let log = std::fs::read_to_string(freeswitch.log_path()).unwrap();
    assert!(log.contains("refused the OpenAI API key (HTTP 401)"), "the refusal is logged");
    for (place, text) in shown.iter().map(|text| ("status or list", text.as_str())).chain([("the log", log.as_str())]) {
        assert!(!text.contains("PLANTED-OPENAI-KEY"), "the key is shown in {place}");
    }
    assert!(seen.len() > 5, "events were seen: {}", seen.len());
    assert!(seen.iter().all(|event| !event.contains("PLANTED-OPENAI-KEY")), "the key is in an event or CDR");
    freeswitch.stop();
    server.check_with_openai_types();
}

/// A server that answers the upgrade with 401.
fn refused_key_is_call_rejected(esl: &mut Esl) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request);
        let _ = socket.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    let reply =
        esl.api(&format!("originate {{wsbridge_protocol=openai}}wsbridge/ws://127.0.0.1:{port}/v1/realtime &park"));
    assert!(reply.contains("CALL_REJECTED"), "a refused key: {reply}");
    server.join().unwrap();
}
