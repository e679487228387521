//! A `tracing` layer that hands each event, as finished text, to a log sink
//! (FreeSWITCH's logger in the module), tagged with the call's UUID taken
//! from the event or from an enclosing span's `uuid` field.

use std::fmt::Write;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Debug lines are passed on only while this is on (`wsbridge debug on`).
pub fn set_debug(on: bool) {
    DEBUG.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn debug() -> bool {
    DEBUG.load(std::sync::atomic::Ordering::Relaxed)
}

/// The text of a panic's payload.
pub fn describe_panic(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".to_string())
}

/// Where finished log lines go.
pub trait LogSink: Send + Sync + 'static {
    /// `file` and `line` name the Rust source of the line.
    fn log(&self, level: Level, uuid: Option<&str>, file: &str, line: u32, text: &str);
}

pub struct SinkLayer<S> {
    sink: S,
}

impl<S: LogSink> SinkLayer<S> {
    pub fn new(sink: S) -> Self {
        SinkLayer { sink }
    }
}

struct CallUuid(String);

#[derive(Default)]
struct Collect {
    message: String,
    fields: String,
    uuid: Option<String>,
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "uuid" => self.uuid = Some(value.to_string()),
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.fields, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "uuid" => self.uuid = Some(format!("{value:?}")),
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}

impl<S: LogSink, R: Subscriber + for<'a> LookupSpan<'a>> Layer<R> for SinkLayer<S> {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, R>) {
        let mut collect = Collect::default();
        attributes.record(&mut collect);
        if let (Some(uuid), Some(span)) = (collect.uuid, context.span(id)) {
            span.extensions_mut().insert(CallUuid(uuid));
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _context: Context<'_, R>) -> bool {
        *metadata.level() <= Level::INFO || debug()
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, R>) {
        let mut collect = Collect::default();
        event.record(&mut collect);
        let uuid = collect.uuid.clone().or_else(|| {
            context.event_scope(event)?.find_map(|span| span.extensions().get::<CallUuid>().map(|uuid| uuid.0.clone()))
        });
        collect.message.push_str(&collect.fields);
        let metadata = event.metadata();
        let (file, line) = (metadata.file().unwrap_or("mod_wsbridge"), metadata.line().unwrap_or(0));
        self.sink.log(*metadata.level(), uuid.as_deref(), file, line, &collect.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    type Line = (Level, Option<String>, String, String);

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<Line>>>);

    impl LogSink for Lines {
        fn log(&self, level: Level, uuid: Option<&str>, file: &str, line: u32, text: &str) {
            let source = format!("{file}:{}", line > 0);
            self.0.lock().unwrap().push((level, uuid.map(str::to_string), source, text.to_string()));
        }
    }

    #[test]
    fn events_carry_the_uuid_of_their_span() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(SinkLayer::new(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("dropped while debug is off");
            tracing::info!("no call");
            let span = tracing::info_span!("call", uuid = "abc-123");
            span.in_scope(|| tracing::warn!(frames = 3, "100% %s %n safe"));
            tracing::error!(uuid = "direct", "explicit");
        });
        let lines = lines.0.lock().unwrap().clone();
        assert_eq!(
            lines,
            vec![
                (Level::INFO, None, "src/support/logging.rs:true".to_string(), "no call".to_string()),
                (
                    Level::WARN,
                    Some("abc-123".to_string()),
                    "src/support/logging.rs:true".to_string(),
                    "100% %s %n safe frames=3".to_string()
                ),
                (
                    Level::ERROR,
                    Some("direct".to_string()),
                    "src/support/logging.rs:true".to_string(),
                    "explicit".to_string()
                ),
            ]
        );
    }
}
