//! Which client events, and which keys in them, the openai package's types
//! define (openai/types/realtime/*.py, GA interface): each event the test
//! server receives is checked here, in Rust, as it arrives.
//!
//! A key the types do not define, a missing required key, or a value of the
//! wrong JSON kind is refused. Optional keys may be null (they are
//! `Optional[...] = None` in the types). The MCP conversation items and tool
//! filters are left to realtime_events.py, which checks everything.

use serde_json::Value;

/// Checks one value found at `path`.
type Check = fn(&Value, &str) -> Result<(), String>;

/// One key of an object: its name, whether the types require it, its check.
struct Key {
    name: &'static str,
    required: bool,
    check: Check,
}

fn req(name: &'static str, check: Check) -> Key {
    Key { name, required: true, check }
}

fn opt(name: &'static str, check: Check) -> Key {
    Key { name, required: false, check }
}

/// Ok, or why `event` is not a client event as the openai types define them.
pub fn check_client_event(event: &Value) -> Result<(), String> {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or_default();
    let mut keys = match kind {
        "session.update" => vec![req("session", session)],
        "input_audio_buffer.append" => vec![req("audio", string)],
        "input_audio_buffer.commit" | "input_audio_buffer.clear" | "output_audio_buffer.clear" => vec![],
        "conversation.item.create" => vec![req("item", item), opt("previous_item_id", string)],
        "conversation.item.truncate" => {
            vec![req("item_id", string), req("content_index", unsigned), req("audio_end_ms", unsigned)]
        }
        "conversation.item.delete" | "conversation.item.retrieve" => vec![req("item_id", string)],
        "response.create" => vec![opt("response", response_params)],
        "response.cancel" => vec![opt("response_id", string)],
        _ => return Err(format!("`{kind}` is not a client event type of the openai types: {event}")),
    };
    keys.extend([req("type", string), opt("event_id", string)]);
    object(event, "", &keys).map_err(|why| format!("client event `{kind}`: {why}"))
}

/// Checks an object against its keys: none unknown, the required present.
fn object(value: &Value, path: &str, keys: &[Key]) -> Result<(), String> {
    let shown = if path.is_empty() { "the event" } else { path };
    let Some(map) = value.as_object() else { return Err(format!("{shown}: not an object: {value}")) };
    if let Some(unknown) = map.keys().find(|name| !keys.iter().any(|key| key.name == name.as_str())) {
        let known: Vec<&str> = keys.iter().map(|key| key.name).collect();
        return Err(format!("{shown}: `{unknown}` is not a key of the openai types (they have: {})", known.join(", ")));
    }
    for key in keys {
        let at = if path.is_empty() { key.name.to_string() } else { format!("{path}.{}", key.name) };
        match map.get(key.name) {
            None if key.required => return Err(format!("{at}: missing, and the openai types require it")),
            None => {}
            Some(Value::Null) if !key.required => {}
            Some(value) => (key.check)(value, &at)?,
        }
    }
    Ok(())
}

fn kind(ok: bool, what: &str, value: &Value, path: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{path}: not {what}: {value}"))
    }
}

fn string(value: &Value, path: &str) -> Result<(), String> {
    kind(value.is_string(), "a string", value, path)
}

fn unsigned(value: &Value, path: &str) -> Result<(), String> {
    kind(value.is_u64(), "a non-negative integer", value, path)
}

fn number(value: &Value, path: &str) -> Result<(), String> {
    kind(value.is_number(), "a number", value, path)
}

fn boolean(value: &Value, path: &str) -> Result<(), String> {
    kind(value.is_boolean(), "true or false", value, path)
}

fn any(_: &Value, _: &str) -> Result<(), String> {
    Ok(())
}

fn list(value: &Value, path: &str, check: Check) -> Result<(), String> {
    let Some(items) = value.as_array() else { return Err(format!("{path}: not a list: {value}")) };
    items.iter().enumerate().try_for_each(|(index, item)| check(item, &format!("{path}[{index}]")))
}

fn literal(value: &Value, path: &str, allowed: &[&str]) -> Result<(), String> {
    match value.as_str() {
        Some(text) if allowed.contains(&text) => Ok(()),
        _ => Err(format!("{path}: {value} is none of {allowed:?}")),
    }
}

/// Checks that are one literal of a list, and lists of those.
macro_rules! literals {
    ($($name:ident: $($allowed:literal)|+;)*) => {$(
        fn $name(value: &Value, path: &str) -> Result<(), String> {
            literal(value, path, &[$($allowed),+])
        }
    )*};
}

literals! {
    modality: "text" | "audio";
    include_entry: "item.input_audio_transcription.logprobs";
    noise_reduction_type: "near_field" | "far_field";
    transcription_delay: "minimal" | "low" | "medium" | "high" | "xhigh";
    eagerness: "low" | "medium" | "high" | "auto";
    item_status: "completed" | "incomplete" | "in_progress";
    item_object: "realtime.item";
    user_content_type: "input_text" | "input_audio" | "input_image";
    assistant_content_type: "output_text" | "output_audio";
    system_content_type: "input_text";
    image_detail: "low" | "high" | "auto";
}

fn strings(value: &Value, path: &str) -> Result<(), String> {
    list(value, path, string)
}

fn modalities(value: &Value, path: &str) -> Result<(), String> {
    list(value, path, modality)
}

fn includes(value: &Value, path: &str) -> Result<(), String> {
    list(value, path, include_entry)
}

fn type_of(value: &Value) -> Option<&str> {
    value.get("type").and_then(Value::as_str)
}

// ---------------------------------------------------------------------------
// session.update's session (RealtimeSessionCreateRequest, or the
// transcription one)
// ---------------------------------------------------------------------------

fn session(value: &Value, path: &str) -> Result<(), String> {
    match type_of(value) {
        Some("realtime") => object(
            value,
            path,
            &[
                req("type", string),
                opt("audio", audio),
                opt("include", includes),
                opt("instructions", string),
                opt("max_output_tokens", max_output_tokens),
                opt("model", string),
                opt("output_modalities", modalities),
                opt("parallel_tool_calls", boolean),
                opt("prompt", prompt),
                opt("reasoning", reasoning),
                opt("tool_choice", tool_choice),
                opt("tools", tools),
                opt("tracing", tracing),
                opt("truncation", truncation),
            ],
        ),
        Some("transcription") => {
            object(value, path, &[req("type", string), opt("audio", transcription_audio), opt("include", includes)])
        }
        _ => Err(format!("{path}.type: must be \"realtime\" or \"transcription\": {value}")),
    }
}

fn audio(value: &Value, path: &str) -> Result<(), String> {
    object(value, path, &[opt("input", audio_input), opt("output", audio_output)])
}

fn transcription_audio(value: &Value, path: &str) -> Result<(), String> {
    object(value, path, &[opt("input", audio_input)])
}

fn audio_input(value: &Value, path: &str) -> Result<(), String> {
    let keys = [
        opt("format", audio_format),
        opt("noise_reduction", noise_reduction),
        opt("transcription", transcription),
        opt("turn_detection", turn_detection),
    ];
    object(value, path, &keys)
}

fn audio_output(value: &Value, path: &str) -> Result<(), String> {
    object(value, path, &[opt("format", audio_format), opt("speed", number), opt("voice", voice)])
}

/// AudioPCM (its type optional, its rate only 24000), AudioPCMU, AudioPCMA.
fn audio_format(value: &Value, path: &str) -> Result<(), String> {
    match type_of(value) {
        None | Some("audio/pcm") => object(value, path, &[opt("type", string), opt("rate", pcm_rate)]),
        Some("audio/pcmu" | "audio/pcma") => object(value, path, &[req("type", string)]),
        Some(other) => Err(format!("{path}.type: {other:?} is none of audio/pcm, audio/pcmu, audio/pcma")),
    }
}

fn pcm_rate(value: &Value, path: &str) -> Result<(), String> {
    kind(value.as_u64() == Some(24000), "24000, the only rate the types allow", value, path)
}

fn voice(value: &Value, path: &str) -> Result<(), String> {
    if value.is_string() {
        return Ok(());
    }
    object(value, path, &[req("id", string)])
}

fn noise_reduction(value: &Value, path: &str) -> Result<(), String> {
    object(value, path, &[opt("strength", number), opt("type", noise_reduction_type)])
}

fn transcription(value: &Value, path: &str) -> Result<(), String> {
    let keys = [
        opt("delay", transcription_delay),
        opt("keywords", strings),
        opt("language", string),
        opt("languages", strings),
        opt("model", string),
        opt("prompt", string),
    ];
    object(value, path, &keys)
}

fn turn_detection(value: &Value, path: &str) -> Result<(), String> {
    let common = [req("type", string), opt("create_response", boolean), opt("interrupt_response", boolean)];
    match type_of(value) {
        Some("server_vad") => {
            let mut keys = Vec::from(common);
            keys.extend([
                opt("idle_timeout_ms", unsigned),
                opt("prefix_padding_ms", unsigned),
                opt("silence_duration_ms", unsigned),
                opt("threshold", number),
            ]);
            object(value, path, &keys)
        }
        Some("semantic_vad") => {
            let mut keys = Vec::from(common);
            keys.push(opt("eagerness", eagerness));
            object(value, path, &keys)
        }
        _ => Err(format!("{path}.type: must be \"server_vad\" or \"semantic_vad\": {value}")),
    }
}

fn max_output_tokens(value: &Value, path: &str) -> Result<(), String> {
    kind(value.is_u64() || value.as_str() == Some("inf"), "an integer or \"inf\"", value, path)
}

fn prompt(value: &Value, path: &str) -> Result<(), String> {
    object(value, path, &[req("id", string), opt("variables", any), opt("version", string)])
}

fn reasoning(value: &Value, path: &str) -> Result<(), String> {
    object(value, path, &[opt("effort", string)])
}

fn tool_choice(value: &Value, path: &str) -> Result<(), String> {
    match (value.as_str(), type_of(value)) {
        (Some(_), _) => literal(value, path, &["none", "auto", "required"]),
        (_, Some("function")) => object(value, path, &[req("type", string), req("name", string)]),
        (_, Some("mcp")) => {
            object(value, path, &[req("type", string), req("server_label", string), opt("name", string)])
        }
        _ => Err(format!("{path}: not a tool choice: {value}")),
    }
}

fn tools(value: &Value, path: &str) -> Result<(), String> {
    list(value, path, tool)
}

/// A function tool (its type optional), or an MCP tool (left to python past its keys).
fn tool(value: &Value, path: &str) -> Result<(), String> {
    match type_of(value) {
        None | Some("function") => object(
            value,
            path,
            &[opt("type", string), opt("name", string), opt("description", string), opt("parameters", any)],
        ),
        Some("mcp") => {
            let names = [
                "allowed_callers",
                "allowed_tools",
                "authorization",
                "connector_id",
                "defer_loading",
                "headers",
                "require_approval",
                "server_description",
                "server_url",
                "tunnel_id",
            ];
            let mut keys: Vec<Key> = names.into_iter().map(|name| opt(name, any)).collect();
            keys.extend([req("type", string), req("server_label", string)]);
            object(value, path, &keys)
        }
        Some(other) => Err(format!("{path}.type: {other:?} is neither \"function\" nor \"mcp\"")),
    }
}

fn tracing(value: &Value, path: &str) -> Result<(), String> {
    if value.is_string() {
        return literal(value, path, &["auto"]);
    }
    object(value, path, &[opt("group_id", string), opt("metadata", any), opt("workflow_name", string)])
}

fn truncation(value: &Value, path: &str) -> Result<(), String> {
    if value.is_string() {
        return literal(value, path, &["auto", "disabled"]);
    }
    object(value, path, &[req("type", string), req("retention_ratio", number), opt("token_limits", token_limits)])
}

fn token_limits(value: &Value, path: &str) -> Result<(), String> {
    object(value, path, &[opt("post_instructions", unsigned)])
}

// ---------------------------------------------------------------------------
// Conversation items (ConversationItem) and response.create's response
// ---------------------------------------------------------------------------

fn item(value: &Value, path: &str) -> Result<(), String> {
    let common = [req("type", string), opt("id", string), opt("object", item_object), opt("status", item_status)];
    let mut keys = Vec::from(common);
    match type_of(value) {
        Some("message") => {
            let content: Check = match value.get("role").and_then(Value::as_str) {
                Some("user") => user_contents,
                Some("assistant") => assistant_contents,
                Some("system") => system_contents,
                _ => return Err(format!("{path}.role: must be user, assistant or system: {value}")),
            };
            keys.extend([req("role", string), req("content", content)]);
        }
        Some("function_call") => {
            keys.extend([req("arguments", string), req("name", string), opt("call_id", string)]);
        }
        Some("function_call_output") => keys.extend([req("call_id", string), req("output", string)]),
        Some("mcp_approval_response" | "mcp_list_tools" | "mcp_call" | "mcp_approval_request") => return Ok(()),
        _ => return Err(format!("{path}.type: not a conversation item type of the openai types: {value}")),
    }
    object(value, path, &keys)
}

fn user_contents(value: &Value, path: &str) -> Result<(), String> {
    list(value, path, |part, path| {
        let keys = [
            opt("type", user_content_type),
            opt("text", string),
            opt("audio", string),
            opt("transcript", string),
            opt("image_url", string),
            opt("detail", image_detail),
        ];
        object(part, path, &keys)
    })
}

fn assistant_contents(value: &Value, path: &str) -> Result<(), String> {
    list(value, path, |part, path| {
        let keys =
            [opt("type", assistant_content_type), opt("text", string), opt("audio", string), opt("transcript", string)];
        object(part, path, &keys)
    })
}

fn system_contents(value: &Value, path: &str) -> Result<(), String> {
    list(value, path, |part, path| object(part, path, &[opt("type", system_content_type), opt("text", string)]))
}

fn response_params(value: &Value, path: &str) -> Result<(), String> {
    let keys = [
        opt("audio", response_audio),
        opt("conversation", string),
        opt("input", |items, path| list(items, path, item)),
        opt("instructions", string),
        opt("max_output_tokens", max_output_tokens),
        opt("metadata", |map, path| match map.as_object() {
            Some(map) => map.iter().try_for_each(|(key, value)| string(value, &format!("{path}.{key}"))),
            None => Err(format!("{path}: not an object: {map}")),
        }),
        opt("output_modalities", modalities),
        opt("parallel_tool_calls", boolean),
        opt("prompt", prompt),
        opt("reasoning", reasoning),
        opt("tool_choice", tool_choice),
        opt("tools", tools),
    ];
    object(value, path, &keys)
}

fn response_audio(value: &Value, path: &str) -> Result<(), String> {
    object(
        value,
        path,
        &[opt("output", |output, path| object(output, path, &[opt("format", audio_format), opt("voice", voice)]))],
    )
}
