//! The server events a test sends, each with exactly the fields of its type
//! in openai/types/realtime/ (GA names), `event_id` added by send_event.

use serde_json::{json, Value};

use super::RealtimeServer;
use crate::g711::base64_encode;

impl RealtimeServer {
    /// `input_audio_buffer.speech_started`: the server VAD heard the caller start.
    pub async fn speech_started(&mut self, audio_start_ms: u64, item_id: &str) {
        let event =
            json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": audio_start_ms, "item_id": item_id});
        self.send_event(event).await;
    }

    /// `input_audio_buffer.speech_stopped`: the server VAD heard the caller stop.
    pub async fn speech_stopped(&mut self, audio_end_ms: u64, item_id: &str) {
        let event =
            json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms, "item_id": item_id});
        self.send_event(event).await;
    }

    /// The response object (RealtimeResponse) as `response.created` and `response.done` carry it.
    fn response_object(&self, response_id: &str, status: &str, status_details: Value, output: Vec<Value>) -> Value {
        let audio_output = &self.session["audio"]["output"];
        json!({
            "object": "realtime.response",
            "id": response_id,
            "status": status,
            "status_details": status_details,
            "output": output,
            "conversation_id": "conv_0",
            "output_modalities": self.session["output_modalities"],
            "max_output_tokens": self.session["max_output_tokens"],
            "audio": {"output": {"format": audio_output["format"], "voice": audio_output["voice"]}},
            "usage": null,
            "metadata": null
        })
    }

    /// `response.created`: a response begins, in progress, with no output yet.
    pub async fn response_created(&mut self, response_id: &str) {
        self.outputs.insert(response_id.to_string(), Vec::new());
        let response = self.response_object(response_id, "in_progress", Value::Null, Vec::new());
        self.send_event(json!({"type": "response.created", "response": response})).await;
    }

    /// `response.output_item.added` and `response.content_part.added` for an assistant audio message.
    pub async fn audio_item_added(&mut self, response_id: &str, item_id: &str, output_index: u32, content_index: u32) {
        let item = json!({
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": []
        });
        let mut done = item.clone();
        done["status"] = json!("completed");
        done["content"] = json!([{"type": "output_audio", "transcript": ""}]);
        self.outputs.entry(response_id.to_string()).or_default().push(done);
        let added = json!({"type": "response.output_item.added", "response_id": response_id, "output_index": output_index, "item": item});
        self.send_event(added).await;
        let part = json!({
            "type": "response.content_part.added",
            "response_id": response_id,
            "item_id": item_id,
            "output_index": output_index,
            "content_index": content_index,
            "part": {"type": "audio", "transcript": ""}
        });
        self.send_event(part).await;
    }

    /// The fields that locate a piece of a response's output.
    fn located(kind: &str, response_id: &str, item_id: &str, output_index: u32, content_index: u32) -> Value {
        json!({
            "type": kind,
            "response_id": response_id,
            "item_id": item_id,
            "output_index": output_index,
            "content_index": content_index
        })
    }

    /// `response.output_audio.delta`: `audio` (in the session's output format) as base64.
    pub async fn audio_delta(
        &mut self,
        response_id: &str,
        item_id: &str,
        output_index: u32,
        content_index: u32,
        audio: &[u8],
    ) {
        let mut event = Self::located("response.output_audio.delta", response_id, item_id, output_index, content_index);
        event["delta"] = json!(base64_encode(audio));
        self.send_event(event).await;
    }

    /// `response.output_audio.done`: the item's audio is complete.
    pub async fn audio_done(&mut self, response_id: &str, item_id: &str, output_index: u32, content_index: u32) {
        let event = Self::located("response.output_audio.done", response_id, item_id, output_index, content_index);
        self.send_event(event).await;
    }

    /// `response.output_audio_transcript.done`: what the model said, as text.
    pub async fn output_audio_transcript_done(
        &mut self,
        response_id: &str,
        item_id: &str,
        output_index: u32,
        content_index: u32,
        transcript: &str,
    ) {
        let outputs = self.outputs.entry(response_id.to_string()).or_default();
        if let Some(item) = outputs.iter_mut().find(|item| item["id"] == item_id) {
            item["content"][content_index as usize]["transcript"] = json!(transcript);
        }
        let kind = "response.output_audio_transcript.done";
        let mut event = Self::located(kind, response_id, item_id, output_index, content_index);
        event["transcript"] = json!(transcript);
        self.send_event(event).await;
    }

    /// `conversation.item.input_audio_transcription.completed`: what the caller said, as text.
    pub async fn input_transcription_completed(&mut self, item_id: &str, content_index: u32, transcript: &str) {
        let output_tokens = transcript.split_whitespace().count() as u64 + 1;
        let event = json!({
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id,
            "content_index": content_index,
            "transcript": transcript,
            "usage": {
                "type": "tokens",
                "total_tokens": 20 + output_tokens,
                "input_tokens": 20,
                "input_token_details": {"text_tokens": 0, "audio_tokens": 20},
                "output_tokens": output_tokens
            }
        });
        self.send_event(event).await;
    }

    /// `response.function_call_arguments.done`: the model calls `name` with `arguments` (a JSON string).
    pub async fn function_call_arguments_done(
        &mut self,
        response_id: &str,
        item_id: &str,
        output_index: u32,
        call_id: &str,
        name: &str,
        arguments: &str,
    ) {
        let item = json!({
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "completed",
            "name": name,
            "call_id": call_id,
            "arguments": arguments
        });
        self.outputs.entry(response_id.to_string()).or_default().push(item);
        let event = json!({
            "type": "response.function_call_arguments.done",
            "response_id": response_id,
            "item_id": item_id,
            "output_index": output_index,
            "call_id": call_id,
            "name": name,
            "arguments": arguments
        });
        self.send_event(event).await;
    }

    /// `response.done` with `status` (completed, cancelled, incomplete or failed), its output items and usage.
    pub async fn response_done(&mut self, response_id: &str, status: &str, input_tokens: u64, output_tokens: u64) {
        let status_details = match status {
            "completed" => Value::Null,
            "cancelled" => json!({"type": "cancelled", "reason": "client_cancelled"}),
            "incomplete" => json!({"type": "incomplete", "reason": "max_output_tokens"}),
            "failed" => json!({"type": "failed", "error": {"type": "server_error", "code": null, "message": "failed"}}),
            other => panic!("realtime server: {other:?} is not a status response.done has"),
        };
        let output = self.outputs.remove(response_id).unwrap_or_default();
        let mut response = self.response_object(response_id, status, status_details, output);
        response["usage"] = json!({
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": 0,
                "audio_tokens": input_tokens,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}
            },
            "output_token_details": {"text_tokens": 0, "audio_tokens": output_tokens}
        });
        self.send_event(json!({"type": "response.done", "response": response})).await;
    }

    /// `error` with the given error `type` (e.g. invalid_request_error), `code` and `message`.
    pub async fn error(&mut self, kind: &str, code: &str, message: &str) {
        let error = json!({"type": kind, "code": code, "message": message, "param": null, "event_id": null});
        self.send_event(json!({"type": "error", "error": error})).await;
    }

    /// response.created, the item and part added, `audio` in `chunk_bytes` deltas at once (faster than real time, as OpenAI sends them), audio done.
    pub async fn stream_reply(&mut self, response_id: &str, item_id: &str, audio: &[u8], chunk_bytes: usize) {
        self.response_created(response_id).await;
        self.audio_item_added(response_id, item_id, 0, 0).await;
        for chunk in audio.chunks(chunk_bytes.max(1)) {
            let mut event = Self::located("response.output_audio.delta", response_id, item_id, 0, 0);
            event["delta"] = json!(base64_encode(chunk));
            self.feed_event(event).await;
        }
        self.audio_done(response_id, item_id, 0, 0).await;
    }
}
