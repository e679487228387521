//! The API commands `wsbridge` and the original's `wsbridge_debug`.

use std::ffi::CStr;

use super::ffi::{ApiCommand, CauseCode, LocatedSession};
use super::{config_store, drain, fork, registry, runtime};
use crate::call::api::{self, Command, StatusReport};
use crate::call::drain_state::DrainReason;
use crate::settings::cause::HangupCause;
use crate::support::logging;

fn run(arguments: &str) -> String {
    let command = match api::parse(arguments) {
        Ok(command) => command,
        Err(usage) => return usage,
    };
    match command {
        Command::Status { json } => {
            let settings = config_store::config().describe();
            let started_with = runtime::started_with();
            let (active, forks) = registry::counts();
            let report = StatusReport {
                version: env!("CARGO_PKG_VERSION"),
                active,
                forks,
                totals: registry::totals(),
                debug: logging::debug(),
                drain: drain::report(),
                settings: &settings,
                started_with: &started_with,
                running_threads: runtime::workers(),
                slow_polls: crate::support::poll_watch::figures(),
                stalls: crate::support::poll_watch::stalls(),
            };
            match json {
                true => api::status_json(&report),
                false => api::status(&report),
            }
        }
        Command::Drain(on) => {
            match on {
                true => drain::start(DrainReason::Api),
                false => drain::stop(),
            }
            format!("+OK draining {}\n", if on { "on" } else { "off" })
        }
        Command::List { json } => api::list(&registry::snapshots(), json),
        Command::Fork(arguments) => fork::run(&arguments),
        Command::Kill { uuid, cause } => kill(&uuid, cause.as_deref()),
        Command::Debug(on) => {
            logging::set_debug(on);
            format!("+OK debug {}\n", if on { "on" } else { "off" })
        }
    }
}

fn kill(uuid: &str, cause: Option<&str>) -> String {
    if !registry::is_call_up(uuid) {
        return format!("-ERR no wsbridge call {uuid}\n");
    }
    let code = match cause {
        None => CauseCode::of(HangupCause::NormalClearing),
        Some(name) => match CauseCode::by_name(name) {
            Some(code) => code,
            None => return format!("-ERR unknown hangup cause {name}\n"),
        },
    };
    match LocatedSession::find(uuid) {
        Some(located) => {
            located.session().channel().hangup_with(code);
            format!("+OK {uuid} hung up\n")
        }
        None => format!("-ERR no wsbridge call {uuid}\n"),
    }
}

/// `wsbridge <status [json]|list [json]|kill <uuid> [cause]|debug on|off|drain on|off>`
pub struct Wsbridge;

impl ApiCommand for Wsbridge {
    const NAME: &'static CStr = c"wsbridge";
    const DESCRIPTION: &'static CStr = c"mod_wsbridge status and control";
    const SYNTAX: &'static CStr = api::SYNTAX;

    fn run(arguments: &str) -> String {
        run(arguments)
    }
}

/// `uuid_wsbridge_function_result <uuid> <call_id> <output>`: answers a
/// model's function call (`wsbridge::function_call`) from an ESL application.
pub struct UuidWsbridgeFunctionResult;

impl ApiCommand for UuidWsbridgeFunctionResult {
    const NAME: &'static CStr = c"uuid_wsbridge_function_result";
    const DESCRIPTION: &'static CStr = c"answer a speech-to-speech model's function call";
    const SYNTAX: &'static CStr = c"<uuid> <call_id> <output>";

    fn run(arguments: &str) -> String {
        let (uuid, call_id, output) = match api::parse_function_result(arguments) {
            Ok(parsed) => parsed,
            Err(usage) => return format!("-ERR {usage}\n"),
        };
        let Some(media) = registry::call_media(uuid) else {
            return format!("-ERR no wsbridge call {uuid}\n");
        };
        match media.answer_function_call(call_id, output.to_string()) {
            true => format!("+OK {call_id} answered\n"),
            false => format!("-ERR no function call {call_id} waits on {uuid}\n"),
        }
    }
}

/// The original module's `wsbridge_debug on|off`.
pub struct WsbridgeDebug;

impl ApiCommand for WsbridgeDebug {
    const NAME: &'static CStr = c"wsbridge_debug";
    const DESCRIPTION: &'static CStr = c"mod_wsbridge debug logging (the original's command)";
    const SYNTAX: &'static CStr = c"on|off";

    fn run(arguments: &str) -> String {
        match arguments.trim() {
            flag @ ("on" | "off") => run(&format!("debug {flag}")),
            _ => format!("-ERR {}\n", api::DEBUG_USAGE),
        }
    }
}
