//! The event socket's view of a run's calls: when each was originated,
//! answered and hung up, kept by a thread of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use test_support::esl;
use test_support::instance::FreeSwitch;

/// When a call was originated, and what the event socket then told about it.
#[derive(Default)]
pub struct CallEvents {
    pub originated: Option<Instant>,
    /// When originate's `+OK` (its BACKGROUND_JOB) reached us.
    pub originate_ok: Option<Instant>,
    /// When the CHANNEL_ANSWER event reached us. FreeSWITCH's own event
    /// timestamps move in 20 ms timer steps, too coarse for setup times.
    pub answered: Option<Instant>,
    pub hangup: Option<esl::Headers>,
}

pub type Calls = Arc<Mutex<HashMap<String, CallEvents>>>;

/// Reads channel events until `stop`, keeping those of this run's calls.
fn collect_events(mut esl: esl::Esl, prefix: String, calls: Calls, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(event) = esl.next_event(Duration::from_secs(1)) else { continue };
        // originate's reply names the call's UUID after its +OK.
        let job_uuid =
            event.get("_body").and_then(|body| body.strip_prefix("+OK ")).map(|uuid| uuid.trim().to_string());
        let uuid = match event.get("Event-Name").map(String::as_str) {
            Some("BACKGROUND_JOB") => job_uuid.as_ref(),
            _ => event.get("Unique-ID"),
        };
        let Some(uuid) = uuid.filter(|uuid| uuid.starts_with(&prefix)) else { continue };
        let mut calls = calls.lock().unwrap();
        let call = calls.entry(uuid.clone()).or_default();
        match event.get("Event-Name").map(String::as_str) {
            Some("CHANNEL_ANSWER") => call.answered = Some(Instant::now()),
            Some("BACKGROUND_JOB") => call.originate_ok = Some(Instant::now()),
            Some("CHANNEL_HANGUP_COMPLETE") => call.hangup = Some(event),
            _ => {}
        }
    }
}

pub fn count(calls: &Calls, done: impl Fn(&CallEvents) -> bool) -> usize {
    calls.lock().unwrap().values().filter(|call| done(call)).count()
}

pub fn wait_for(calls: &Calls, wanted: usize, deadline: Instant, done: impl Fn(&CallEvents) -> bool) -> usize {
    loop {
        let reached = count(calls, &done);
        if reached >= wanted || Instant::now() >= deadline {
            return reached;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The thread that keeps the events of a run's calls until it is stopped.
pub struct Collector {
    pub calls: Calls,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Collector {
    pub fn start(freeswitch: &FreeSwitch, prefix: &str) -> Collector {
        let calls: Calls = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut esl = freeswitch.esl();
        esl.subscribe("CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB");
        let (prefix, events, stopped) = (prefix.to_string(), calls.clone(), stop.clone());
        let thread = std::thread::spawn(move || collect_events(esl, prefix, events, stopped));
        Collector { calls, stop, thread }
    }

    pub fn stop(self) -> Calls {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.calls
    }
}
