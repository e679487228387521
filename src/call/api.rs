//! The `wsbridge` API command: parsing its arguments and the text it prints.

use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::audio::media::{CallMedia, MediaFigures};
use crate::call::drain_state::DrainReport;

/// The arguments `wsbridge` takes; the one place they are spelled out.
macro_rules! syntax {
    () => {
        "status [json] | list [json] | kill <uuid> [cause] | debug on|off | drain on|off | fork <uuid> start|stop|pause|resume|send_text ..."
    };
}

/// The syntax FreeSWITCH shows for the command.
pub const SYNTAX: &CStr = match CStr::from_bytes_with_nul(concat!(syntax!(), "\0").as_bytes()) {
    Ok(text) => text,
    Err(_) => panic!("the syntax has no NUL"),
};
pub const USAGE: &str = concat!("usage: wsbridge ", syntax!());
/// The original module's command.
pub const DEBUG_USAGE: &str = "usage: wsbridge_debug on|off";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status {
        json: bool,
    },
    List {
        json: bool,
    },
    Kill {
        uuid: String,
        cause: Option<String>,
    },
    Debug(bool),
    Drain(bool),
    /// `fork <uuid> ...`: `uuid_wsbridge_fork`'s arguments.
    Fork(String),
}

pub fn parse(arguments: &str) -> Result<Command, String> {
    if let Some(rest) = arguments.trim_start().strip_prefix("fork ") {
        return Ok(Command::Fork(rest.to_string()));
    }
    let words: Vec<&str> = arguments.split_whitespace().collect();
    match words.as_slice() {
        [] | ["status"] => Ok(Command::Status { json: false }),
        ["status", "json"] => Ok(Command::Status { json: true }),
        ["drain", flag] if matches!(*flag, "on" | "off") => Ok(Command::Drain(*flag == "on")),
        ["list"] => Ok(Command::List { json: false }),
        ["list", "json"] => Ok(Command::List { json: true }),
        ["kill", uuid] => Ok(Command::Kill { uuid: uuid.to_string(), cause: None }),
        ["kill", uuid, cause] => Ok(Command::Kill { uuid: uuid.to_string(), cause: Some(cause.to_ascii_uppercase()) }),
        ["debug", flag] | [flag] if matches!(*flag, "on" | "off") => Ok(Command::Debug(*flag == "on")),
        _ => Err(format!("-ERR {USAGE}\n")),
    }
}

/// One call, as the list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSnapshot {
    pub uuid: String,
    pub uri: String,
    pub state: &'static str,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub buffered_ms: u64,
    pub underruns: u64,
    pub dropped: u64,
    pub age_s: f64,
    /// The jitter buffer's target and the recent arrival jitter (95th percentile).
    pub target_ms: u64,
    pub jitter_ms: u64,
    /// A fork's name; `None` for an endpoint call.
    pub fork: Option<String>,
}

impl CallSnapshot {
    /// The call's figures as `wsbridge list` shows them; `age` since it began.
    pub fn of(media: &CallMedia, uuid: &str, uri: &str, age: Duration) -> CallSnapshot {
        let (target_ms, jitter_ms) = media.jitter_now();
        CallSnapshot {
            uuid: uuid.to_string(),
            uri: uri.to_string(),
            state: media.state(),
            frames_sent: media.stats.frames_sent.load(Ordering::Relaxed),
            frames_received: media.stats.frames_received.load(Ordering::Relaxed),
            buffered_ms: media.buffered_playout().as_millis() as u64,
            underruns: media.underruns(),
            dropped: media.dropped_uplink_frames(),
            age_s: age.as_secs_f64(),
            target_ms: target_ms.round() as u64,
            jitter_ms: jitter_ms.round() as u64,
            fork: None,
        }
    }
}

/// A call's figures as `wsbridge_*` channel variables, for CDRs.
pub fn cdr_variables(figures: &MediaFigures) -> Vec<(&'static str, String)> {
    let mut variables = vec![
        ("wsbridge_frames_sent", figures.frames_sent.to_string()),
        ("wsbridge_frames_received", figures.frames_received.to_string()),
        ("wsbridge_frames_played", figures.frames_played.to_string()),
        ("wsbridge_underruns", figures.underruns.to_string()),
        ("wsbridge_jitter_ms", format!("{:.0}", figures.jitter_ms)),
        ("wsbridge_playout_target_ms", format!("{:.0}", figures.target_ms)),
        ("wsbridge_concealed_frames", figures.concealed_frames.to_string()),
        ("wsbridge_drift_dropped_frames", figures.drift_dropped_frames.to_string()),
        ("wsbridge_compressed_ms", format!("{:.0}", figures.compressed_ms)),
        ("wsbridge_dropped_frames", figures.dropped_frames.to_string()),
    ];
    if let Some(connect_ms) = figures.connect_ms {
        variables.push(("wsbridge_connect_ms", connect_ms.to_string()));
    }
    let reconnection = &figures.reconnection;
    if !reconnection.server.is_empty() {
        variables.push(("wsbridge_server_uri", reconnection.server.clone()));
    }
    variables.push(("wsbridge_reconnects", reconnection.reconnects.to_string()));
    variables.push(("wsbridge_gap_ms", reconnection.gap_ms.to_string()));
    if let Some((code, reason)) = &figures.close {
        variables.push(("wsbridge_close_code", code.to_string()));
        variables.push(("wsbridge_close_reason", reason.clone()));
    }
    if let Some(agent) = &figures.agent {
        variables.push(("wsbridge_openai_input_tokens", agent.input_tokens.to_string()));
        variables.push(("wsbridge_openai_output_tokens", agent.output_tokens.to_string()));
        variables.push(("wsbridge_openai_turns", agent.turns.to_string()));
        if let (Some(p50), Some(max)) = (agent.turn_latency_p50_ms, agent.turn_latency_max_ms) {
            variables.push(("wsbridge_openai_turn_latency_ms_p50", p50.to_string()));
            variables.push(("wsbridge_openai_turn_latency_ms_max", max.to_string()));
        }
    }
    variables
}

/// `uuid_wsbridge_function_result <uuid> <call_id> <output>`: the output is the rest of the line, as given.
pub const FUNCTION_RESULT_USAGE: &str = "usage: uuid_wsbridge_function_result <uuid> <call_id> <output>";

/// The call, the function call ID and the output of `uuid_wsbridge_function_result`.
pub fn parse_function_result(arguments: &str) -> Result<(&str, &str, &str), String> {
    let arguments = arguments.trim();
    let (uuid, rest) = arguments.split_once(char::is_whitespace).ok_or(FUNCTION_RESULT_USAGE)?;
    let (call_id, output) = rest.trim_start().split_once(char::is_whitespace).ok_or(FUNCTION_RESULT_USAGE)?;
    Ok((uuid, call_id, output.trim_start()))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u64,
    pub refused: u64,
    pub failed: u64,
    /// New calls refused because the node was draining.
    pub refused_draining: u64,
}

/// What `wsbridge status` reports.
#[derive(Debug, Clone)]
pub struct StatusReport<'a> {
    pub version: &'a str,
    pub active: usize,
    /// Forks streaming calls that are up (`uuid_wsbridge_fork`).
    pub forks: usize,
    pub totals: Totals,
    pub debug: bool,
    pub drain: DrainReport,
    pub settings: &'a [(String, String)],
    /// The settings read only when the runtime starts, as it runs with them:
    /// a `reloadxml` changes what is configured, not these.
    pub started_with: &'a [(String, String)],
    /// What the runtime started with, which a `reloadxml` does not change.
    pub running_threads: usize,
    /// Task polls that held a runtime thread a frame's time or more, and the longest poll.
    pub slow_polls: (u64, std::time::Duration),
    /// Times the runtime woke late for want of CPU, and the longest.
    pub stalls: (u64, std::time::Duration),
}

/// The `status` text; a setting read only at start that is configured
/// otherwise than it runs says both.
pub fn status(report: &StatusReport<'_>) -> String {
    let StatusReport {
        version,
        active,
        forks,
        ref totals,
        debug,
        ref drain,
        settings,
        started_with,
        running_threads,
        slow_polls,
        stalls,
    } = *report;
    let draining = match (drain.reason, drain.seconds) {
        (Some(reason), Some(seconds)) => {
            format!("yes, for {seconds:.1} s ({}), {active} call(s) and {forks} fork(s) still up", reason.name())
        }
        _ => "no".to_string(),
    };
    let mut text = format!(
        "mod_wsbridge {version}\nactive calls: {active}\nactive forks: {forks}\ndraining: {draining}\ncalls since load: {}\nrefused (bad settings): {}\nrefused (draining): {}\nfailed (server unreachable or broken): {}\ndebug: {}\nruntime threads running: {running_threads}\nslow task polls (a frame or more): {}, longest poll {} ms\nruntime stalls (woke 40 ms late or more): {}, longest {} ms\n",
        totals.calls,
        totals.refused,
        totals.refused_draining,
        totals.failed,
        if debug { "on" } else { "off" },
        slow_polls.0,
        slow_polls.1.as_millis(),
        stalls.0,
        stalls.1.as_millis(),
    );
    for (name, value) in settings {
        if value.is_empty() {
            continue;
        }
        match started_with.iter().find(|(started, _)| started == name) {
            Some((_, running)) if running != value => {
                text.push_str(&format!("{name} = {value} (configured; {running} running until reload mod_wsbridge)\n"))
            }
            _ => text.push_str(&format!("{name} = {value}\n")),
        }
    }
    text
}

/// `status json`: the same figures for a machine (an orchestrator polling a drain).
pub fn status_json(report: &StatusReport<'_>) -> String {
    let settings: serde_json::Map<String, serde_json::Value> = (report.settings.iter())
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    let settings_running: serde_json::Map<String, serde_json::Value> =
        report.started_with.iter().map(|(name, value)| (name.clone(), json!(value))).collect();
    let status = json!({
        "version": report.version,
        "active_calls": report.active,
        "active_forks": report.forks,
        "draining": report.drain.reason.is_some(),
        "drain_reason": report.drain.reason.map(|reason| reason.name()),
        "draining_seconds": report.drain.seconds.map(|seconds| (seconds * 10.0).round() / 10.0),
        "calls_since_load": report.totals.calls,
        "refused": report.totals.refused,
        "refused_draining": report.totals.refused_draining,
        "failed": report.totals.failed,
        "debug": report.debug,
        "runtime_threads_running": report.running_threads,
        "slow_task_polls": report.slow_polls.0,
        "longest_task_poll_ms": report.slow_polls.1.as_millis() as u64,
        "runtime_stalls": report.stalls.0,
        "longest_runtime_stall_ms": report.stalls.1.as_millis() as u64,
        "settings": settings,
        "settings_running": settings_running,
    });
    format!("{status}\n")
}

pub fn list(calls: &[CallSnapshot], as_json: bool) -> String {
    if as_json {
        let rows: Vec<_> = calls
            .iter()
            .map(|call| {
                json!({
                    "uuid": call.uuid, "uri": call.uri, "state": call.state,
                    "frames_sent": call.frames_sent, "frames_received": call.frames_received,
                    "buffered_ms": call.buffered_ms, "underruns": call.underruns,
                    "dropped_frames": call.dropped, "age_s": (call.age_s * 10.0).round() / 10.0,
                    "target_ms": call.target_ms, "jitter_ms": call.jitter_ms,
                    "fork": call.fork,
                })
            })
            .collect();
        return format!("{}\n", json!(rows));
    }
    let mut text = String::from(
        "uuid,uri,state,frames_sent,frames_received,buffered_ms,underruns,dropped_frames,age_s,target_ms,jitter_ms,fork\n",
    );
    for call in calls {
        text.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.1},{},{},{}\n",
            call.uuid,
            call.uri,
            call.state,
            call.frames_sent,
            call.frames_received,
            call.buffered_ms,
            call.underruns,
            call.dropped,
            call.age_s,
            call.target_ms,
            call.jitter_ms,
            call.fork.as_deref().unwrap_or("")
        ));
    }
    text.push_str(&format!("{} call(s)\n", calls.len()));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::drain_state::DrainReason;

    #[test]
    fn commands_parse_and_junk_gets_the_usage() {
        assert_eq!(parse(""), Ok(Command::Status { json: false }));
        assert_eq!(parse(" status "), Ok(Command::Status { json: false }));
        assert_eq!(parse("status json"), Ok(Command::Status { json: true }));
        assert_eq!(parse("drain on"), Ok(Command::Drain(true)));
        assert_eq!(parse("drain off"), Ok(Command::Drain(false)));
        assert_eq!(parse("list"), Ok(Command::List { json: false }));
        assert_eq!(parse("list json"), Ok(Command::List { json: true }));
        assert_eq!(parse("kill abc"), Ok(Command::Kill { uuid: "abc".into(), cause: None }));
        assert_eq!(
            parse("kill abc user_busy"),
            Ok(Command::Kill { uuid: "abc".into(), cause: Some("USER_BUSY".into()) })
        );
        assert_eq!(parse("debug on"), Ok(Command::Debug(true)));
        assert_eq!(parse("fork u1 stop name=a"), Ok(Command::Fork("u1 stop name=a".into())));
        assert_eq!(parse("off"), Ok(Command::Debug(false)), "wsbridge_debug off");
        for junk in ["kill", "list xml", "debug maybe", "dance", "kill a b c", "drain", "drain soon", "status xml"] {
            assert!(parse(junk).unwrap_err().contains("usage:"), "{junk}");
        }
    }

    fn report<'a>(
        settings: &'a [(String, String)],
        started_with: &'a [(String, String)],
        running_threads: usize,
    ) -> StatusReport<'a> {
        StatusReport {
            version: "1",
            active: 0,
            forks: 0,
            totals: Totals::default(),
            debug: false,
            drain: DrainReport { reason: None, seconds: None },
            settings,
            started_with,
            running_threads,
            slow_polls: (3, std::time::Duration::from_millis(45)),
            stalls: (2, std::time::Duration::from_millis(120)),
        }
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
    }

    #[test]
    fn status_tells_configured_settings_from_running_ones() {
        let settings = pairs(&[("runtime-threads", "2"), ("uplink-batch-ms", "0"), ("debug", "false")]);
        let same = status(&report(&settings, &pairs(&[("runtime-threads", "2"), ("uplink-batch-ms", "0")]), 2));
        assert!(same.contains("runtime threads running: 2\n") && same.contains("runtime-threads = 2\n"), "{same}");
        assert!(same.contains("uplink-batch-ms = 0\n") && same.contains("debug = false\n"), "{same}");
        assert!(same.contains("slow task polls (a frame or more): 3, longest poll 45 ms\n"), "{same}");
        assert!(same.contains("runtime stalls (woke 40 ms late or more): 2, longest 120 ms\n"), "{same}");
        let started_with = pairs(&[("runtime-threads", "1"), ("uplink-batch-ms", "2")]);
        let changed = status(&report(&settings, &started_with, 1));
        assert!(changed.contains("runtime threads running: 1\n"), "{changed}");
        assert!(changed.contains("runtime-threads = 2 (configured; 1 running until reload mod_wsbridge)"), "{changed}");
        assert!(changed.contains("uplink-batch-ms = 0 (configured; 2 running until reload mod_wsbridge)"), "{changed}");
        assert!(changed.contains("debug = false\n"), "a setting read on every reload says one value: {changed}");
        let parsed: serde_json::Value =
            serde_json::from_str(&status_json(&report(&settings, &started_with, 1))).unwrap();
        assert_eq!(
            (parsed["settings"]["uplink-batch-ms"].as_str(), parsed["settings_running"]["uplink-batch-ms"].as_str()),
            (Some("0"), Some("2"))
        );
    }

    #[test]
    fn status_shows_the_drain_in_text_and_json() {
        let settings = vec![("drain-cause".to_string(), "NORMAL_TEMPORARY_FAILURE".to_string())];
        let idle = report(&settings, &[], 1);
        assert!(status(&idle).contains("draining: no\n"), "{}", status(&idle));
        let idle_json: serde_json::Value = serde_json::from_str(&status_json(&idle)).unwrap();
        assert_eq!((idle_json["draining"].as_bool(), idle_json["draining_seconds"].is_null()), (Some(false), true));

        let draining = StatusReport {
            active: 3,
            forks: 2,
            totals: Totals { calls: 9, refused_draining: 4, ..Totals::default() },
            drain: DrainReport { reason: Some(DrainReason::Api), seconds: Some(12.34) },
            ..report(&settings, &[], 1)
        };
        let text = status(&draining);
        assert!(text.contains("draining: yes, for 12.3 s (api), 3 call(s) and 2 fork(s) still up\n"), "{text}");
        assert!(text.contains("refused (draining): 4\n"), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&status_json(&draining)).unwrap();
        assert_eq!(parsed["draining"], true);
        assert_eq!(parsed["active_forks"], 2);
        assert_eq!(parsed["drain_reason"], "api");
        assert_eq!(parsed["draining_seconds"], 12.3);
        assert_eq!(parsed["active_calls"], 3);
        assert_eq!((parsed["calls_since_load"].as_u64(), parsed["refused_draining"].as_u64()), (Some(9), Some(4)));
        assert_eq!(parsed["settings"]["drain-cause"], "NORMAL_TEMPORARY_FAILURE");
    }

    #[test]
    fn list_prints_every_figure() {
        let call = CallSnapshot {
            uuid: "u1".into(),
            uri: "ws://h/".into(),
            state: "open",
            frames_sent: 10,
            frames_received: 20,
            buffered_ms: 40,
            underruns: 1,
            dropped: 2,
            age_s: 3.25,
            target_ms: 60,
            jitter_ms: 12,
            fork: None,
        };
        let text = list(std::slice::from_ref(&call), false);
        assert!(text.contains("u1,ws://h/,open,10,20,40,1,2,3.2,60,12,\n"), "{text}");
        let fork = CallSnapshot { fork: Some("a".into()), ..call.clone() };
        assert!(list(&[fork], false).contains(",60,12,a\n"));
        let parsed: serde_json::Value = serde_json::from_str(&list(&[call], true)).unwrap();
        assert_eq!(parsed[0]["dropped_frames"], 2);
        assert_eq!(parsed[0]["state"], "open");
        assert_eq!((parsed[0]["target_ms"].as_u64(), parsed[0]["jitter_ms"].as_u64()), (Some(60), Some(12)));
    }
}
