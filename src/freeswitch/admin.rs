//! What an operator sees: the live-call registry, the `wsbridge` API,
//! `wsbridge.conf`, CUSTOM events and the debug switch.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use freeswitch_sys as fs;

use super::api::{c_string, cause_by_name, copy_c_str, LocatedSession};
use super::guard::guard;
use crate::admin::{self, CallSnapshot, Command, Totals};
use crate::cause::HangupCause;
use crate::config::ModuleConfig;
use crate::logging;
use crate::media::CallMedia;
use crate::session::CallEvent;

pub const EVENT_SUBCLASSES: [&CStr; 5] =
    [c"wsbridge::connect", c"wsbridge::disconnect", c"wsbridge::error", c"wsbridge::message", c"wsbridge::mark"];
const OWNER: &CStr = c"mod_wsbridge";

pub struct CallEntry {
    pub uri: String,
    pub media: Arc<CallMedia>,
    pub started: Instant,
}

static CALLS: Mutex<BTreeMap<String, Arc<CallEntry>>> = Mutex::new(BTreeMap::new());
static CONFIG: RwLock<Option<Arc<ModuleConfig>>> = RwLock::new(None);
pub static CALLS_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static CALLS_REFUSED: AtomicU64 = AtomicU64::new(0);
pub static CALLS_FAILED: AtomicU64 = AtomicU64::new(0);

fn calls() -> MutexGuard<'static, BTreeMap<String, Arc<CallEntry>>> {
    CALLS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn register(uuid: &str, entry: CallEntry) {
    CALLS_TOTAL.fetch_add(1, Ordering::Relaxed);
    calls().insert(uuid.to_string(), Arc::new(entry));
}

pub fn unregister(uuid: &str) {
    calls().remove(uuid);
}

pub fn active_calls() -> usize {
    calls().len()
}

/// The settings in force; new calls read them, calls up keep theirs.
pub fn config() -> Arc<ModuleConfig> {
    CONFIG.read().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default()
}

unsafe extern "C" fn collect_param(context: *mut c_void, name: *const c_char, value: *const c_char) {
    guard("config param", (), || {
        // SAFETY: the Vec passed to wsb_config_params, alive for the call.
        let params = unsafe { &mut *(context as *mut Vec<(String, String)>) };
        let (name, value) = unsafe { (copy_c_str(name), copy_c_str(value)) };
        params.push((name.unwrap_or_default(), value.unwrap_or_default()));
    })
}

/// (Re)reads `wsbridge.conf`; a missing file means built-in defaults.
pub fn load_config() {
    let mut params: Vec<(String, String)> = Vec::new();
    // SAFETY: the callback only touches `params`, which outlives the call.
    let found = unsafe {
        fs::wsb_config_params(c"wsbridge.conf".as_ptr(), Some(collect_param), &mut params as *mut _ as *mut c_void)
    };
    if found != 0 {
        tracing::info!("no wsbridge.conf; using built-in defaults");
    }
    let (config, problems) = ModuleConfig::from_params(&params);
    for problem in problems {
        tracing::warn!("wsbridge.conf: {problem}");
    }
    logging::set_debug(config.debug);
    crate::websocket::clear_tls_cache();
    tracing::info!("wsbridge.conf: {} settings loaded", params.len());
    *CONFIG.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(config));
}

pub unsafe extern "C" fn on_reloadxml(_event: *mut fs::switch_event_t) {
    guard("reloadxml", (), load_config);
}

pub fn reserve_event_subclasses() {
    for subclass in EVENT_SUBCLASSES {
        // SAFETY: static strings.
        unsafe { fs::switch_event_reserve_subclass_detailed(OWNER.as_ptr(), subclass.as_ptr()) };
    }
}

pub fn free_event_subclasses() {
    for subclass in EVENT_SUBCLASSES {
        // SAFETY: static strings, reserved at load.
        unsafe { fs::switch_event_free_subclass_detailed(OWNER.as_ptr(), subclass.as_ptr()) };
    }
}

/// Fires `wsbridge::<kind>` with the channel's own headers.
pub fn fire(uuid: &str, event: &CallEvent) {
    if let CallEvent::Error { .. } = event {
        CALLS_FAILED.fetch_add(1, Ordering::Relaxed);
    }
    let mut headers: Vec<(&str, String)> = Vec::new();
    let mut body = None;
    match event {
        CallEvent::Connect { uri, connect_ms } => {
            headers.push(("WSBridge-URI", uri.clone()));
            headers.push(("WSBridge-Connect-MS", connect_ms.to_string()));
        }
        CallEvent::Disconnect { code, reason } => {
            headers.push(("WSBridge-Close-Code", code.map_or_else(String::new, |c| c.to_string())));
            headers.push(("WSBridge-Close-Reason", reason.clone()));
        }
        CallEvent::Error { what } => headers.push(("WSBridge-Error", what.clone())),
        CallEvent::Message { body: text } => body = Some(text.clone()),
        CallEvent::Mark { name, cleared } => {
            headers.push(("WSBridge-Mark-Name", name.clone()));
            headers.push(("WSBridge-Mark-Cleared", cleared.to_string()));
        }
    }
    let subclass = c_string(&format!("wsbridge::{}", event.kind()));
    let names: Vec<_> = headers.iter().map(|(name, _)| c_string(name)).collect();
    let values: Vec<_> = headers.iter().map(|(_, value)| c_string(value)).collect();
    let name_ptrs: Vec<_> = names.iter().map(|n| n.as_ptr()).collect();
    let value_ptrs: Vec<_> = values.iter().map(|v| v.as_ptr()).collect();
    let body = body.map(|b| c_string(&b));
    let located = LocatedSession::find(uuid);
    let session = located.as_ref().map_or(std::ptr::null_mut(), |l| l.session().as_ptr());
    // SAFETY: all strings live until the call returns; FreeSWITCH copies them.
    unsafe {
        fs::wsb_fire_custom_event(
            session,
            subclass.as_ptr(),
            name_ptrs.as_ptr(),
            value_ptrs.as_ptr(),
            name_ptrs.len() as i32,
            body.as_ref().map_or(std::ptr::null(), |b| b.as_ptr()),
        )
    };
}

fn snapshots() -> Vec<CallSnapshot> {
    calls()
        .iter()
        .map(|(uuid, call)| CallSnapshot {
            uuid: uuid.clone(),
            uri: call.uri.clone(),
            state: call.media.state(),
            frames_sent: call.media.stats.frames_sent.load(Ordering::Relaxed),
            frames_received: call.media.stats.frames_received.load(Ordering::Relaxed),
            buffered_ms: call.media.buffered_playout().as_millis() as u64,
            underruns: call.media.underruns(),
            dropped: call.media.dropped_uplink_frames(),
            age_s: call.started.elapsed().as_secs_f64(),
        })
        .collect()
}

fn run(arguments: &str) -> String {
    let command = match admin::parse(arguments) {
        Ok(command) => command,
        Err(usage) => return usage,
    };
    match command {
        Command::Status => {
            let totals = Totals {
                calls: CALLS_TOTAL.load(Ordering::Relaxed),
                refused: CALLS_REFUSED.load(Ordering::Relaxed),
                failed: CALLS_FAILED.load(Ordering::Relaxed),
            };
            admin::status(env!("CARGO_PKG_VERSION"), active_calls(), &totals, logging::debug(), &config().describe())
        }
        Command::List { json } => admin::list(&snapshots(), json),
        Command::Kill { uuid, cause } => {
            if !calls().contains_key(&uuid) {
                return format!("-ERR no wsbridge call {uuid}\n");
            }
            let code = match cause.as_deref() {
                None => super::api::cause_code(HangupCause::NormalClearing),
                Some(name) => match cause_by_name(name) {
                    Some(code) => code,
                    None => return format!("-ERR unknown hangup cause {name}\n"),
                },
            };
            match LocatedSession::find(&uuid) {
                Some(located) => {
                    located.session().channel().hangup_code(code);
                    format!("+OK {uuid} hung up\n")
                }
                None => format!("-ERR no wsbridge call {uuid}\n"),
            }
        }
        Command::Debug(on) => {
            logging::set_debug(on);
            format!("+OK debug {}\n", if on { "on" } else { "off" })
        }
    }
}

fn write(stream: *mut fs::switch_stream_handle_t, text: &str) {
    let text = c_string(text);
    // SAFETY: FreeSWITCH's stream for this API call; the text is a "%s" argument.
    unsafe { fs::wsb_stream_write(stream, text.as_ptr()) };
}

/// `wsbridge <status|list [json]|kill <uuid> [cause]|debug on|off>`
pub unsafe extern "C" fn api_wsbridge(
    command: *const c_char,
    _session: *mut fs::switch_core_session_t,
    stream: *mut fs::switch_stream_handle_t,
) -> fs::switch_status_t {
    guard("wsbridge API", fs::switch_status_t::SWITCH_STATUS_SUCCESS, || {
        let arguments = unsafe { copy_c_str(command) }.unwrap_or_default();
        write(stream, &run(&arguments));
        fs::switch_status_t::SWITCH_STATUS_SUCCESS
    })
}

/// The original module's `wsbridge_debug on|off`.
pub unsafe extern "C" fn api_wsbridge_debug(
    command: *const c_char,
    _session: *mut fs::switch_core_session_t,
    stream: *mut fs::switch_stream_handle_t,
) -> fs::switch_status_t {
    guard("wsbridge_debug API", fs::switch_status_t::SWITCH_STATUS_SUCCESS, || {
        let arguments = unsafe { copy_c_str(command) }.unwrap_or_default();
        let text = match arguments.trim() {
            "on" | "off" => run(&format!("debug {}", arguments.trim())),
            _ => "-ERR usage: wsbridge_debug on|off\n".to_string(),
        };
        write(stream, &text);
        fs::switch_status_t::SWITCH_STATUS_SUCCESS
    })
}
