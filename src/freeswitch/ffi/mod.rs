//! The one unsafe layer over FreeSWITCH's C API. Everything outside this
//! module (and `freeswitch-sys`) is safe Rust.
//!
//! - Wrappers borrow what FreeSWITCH hands a callback for that callback's
//!   lifetime ([`session`]): [`Session`], [`Channel`], [`Variables`].
//! - Resources that FreeSWITCH points into ([`codec`]): [`Codec`], [`Timer`],
//!   [`PcmFrame`] and [`Resampler`] live on the heap and release themselves
//!   on `Drop`.
//! - Callbacks are written once, as trampolines over traits:
//!   [`Endpoint`] for a leg's io routines and state handlers
//!   ([`endpoint_interface`]; the legs themselves are requested in
//!   [`leg_request`]), [`MediaBugHandler`] for a media bug ([`media_bug`]),
//!   [`ApiCommand`], [`Application`] and [`Module`] for the module's
//!   commands, load and shutdown ([`module`]), [`EventListener`] for bound
//!   events ([`event_bus`]). Each trampoline turns raw pointers into
//!   wrappers, runs the body under the panic guard (`guard`), and maps the
//!   result back to C.
//! - This file: what they all share: C strings, status and cause codes, the log.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_char, c_int, CStr, CString};

use freeswitch_sys as fs;

use crate::settings::cause::HangupCause;

pub mod codec;
pub mod endpoint_interface;
pub mod event_bus;
mod guard;
pub mod leg_request;
pub mod media_bug;
pub mod module;
pub mod session;

pub use codec::{Codec, FreeSwitchDecoder, PcmFrame, PublishedFrame, Resampler, Timer};
pub use endpoint_interface::{Endpoint, Indication, WrittenFrame};
pub use event_bus::{fire_custom_event, free_subclass, reserve_subclass, unbind, EventKind, EventListener};
pub use leg_request::{retire_endpoint, start_inbound, InboundRequest, NewLeg, OutgoingRequest};
pub use media_bug::{add_media_bug, MediaBugHandler};
pub(crate) use module::declare_module;
pub use module::{acl_allows, config_elements, config_params, ApiCommand, Application, Module, ModuleInterface};
pub use session::{Channel, ChannelState, LocatedSession, Session, Variables};

const SUCCESS: fs::switch_status_t = fs::switch_status_t::SWITCH_STATUS_SUCCESS;
const FALSE: fs::switch_status_t = fs::switch_status_t::SWITCH_STATUS_FALSE;

/// FreeSWITCH's status for `ok`.
fn status(ok: bool) -> fs::switch_status_t {
    if ok {
        SUCCESS
    } else {
        FALSE
    }
}

/// A C string of `text`; NULs become U+FFFD so no text is ever cut short.
pub fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\u{fffd}")).unwrap_or_default()
}

/// Copies a C string FreeSWITCH owns.
///
/// # Safety
/// `text` must be null or point to a NUL-terminated string.
unsafe fn copy_c_str(text: *const c_char) -> Option<String> {
    // SAFETY: the caller promises a valid C string or null.
    (!text.is_null()).then(|| unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------- causes

/// FreeSWITCH's code for one of our causes.
fn cause_code(cause: HangupCause) -> fs::switch_call_cause_t {
    let name = c_string(cause.name());
    // SAFETY: a valid C string; str2cause only reads it.
    unsafe { fs::switch_channel_str2cause(name.as_ptr()) }
}

/// A hangup cause FreeSWITCH knows by name or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CauseCode(fs::switch_call_cause_t);

impl CauseCode {
    /// The cause FreeSWITCH knows by `name` (or number), if any. str2cause
    /// answers NORMAL_CLEARING for any name it does not know, hence the round trip.
    pub fn by_name(name: &str) -> Option<CauseCode> {
        let text = c_string(name);
        // SAFETY: a valid C string; str2cause only reads it.
        let code = unsafe { fs::switch_channel_str2cause(text.as_ptr()) };
        // SAFETY: cause2str returns a static string for any value.
        let known_name = unsafe { copy_c_str(fs::switch_channel_cause2str(code)) }.unwrap_or_default();
        let known = name.chars().all(|c| c.is_ascii_digit()) || known_name.eq_ignore_ascii_case(name);
        (known && code != fs::switch_call_cause_t::SWITCH_CAUSE_NONE).then_some(CauseCode(code))
    }

    pub fn of(cause: HangupCause) -> CauseCode {
        CauseCode(cause_code(cause))
    }
}

// ---------------------------------------------------------------- logging

/// FreeSWITCH's log levels that the module writes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
}

/// Writes one line to FreeSWITCH's log, tagged with a call UUID and the Rust source line.
pub fn log(level: LogLevel, uuid: Option<&str>, file: &str, line: u32, text: &str) {
    let level = match level {
        LogLevel::Error => fs::switch_log_level_t::SWITCH_LOG_ERROR,
        LogLevel::Warning => fs::switch_log_level_t::SWITCH_LOG_WARNING,
        LogLevel::Info => fs::switch_log_level_t::SWITCH_LOG_INFO,
        LogLevel::Debug => fs::switch_log_level_t::SWITCH_LOG_DEBUG,
    };
    let (text, file) = (c_string(text), c_string(file));
    let uuid = uuid.map(c_string);
    let uuid_ptr = uuid.as_ref().map_or(std::ptr::null(), |u| u.as_ptr());
    // SAFETY: valid C strings for the call; wsb_log passes the text as an argument to "%s".
    unsafe { fs::wsb_log(level.0, uuid_ptr, file.as_ptr(), line as c_int, text.as_ptr()) }
}
