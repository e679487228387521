//! Thin safe wrappers over the FreeSWITCH calls the module makes. Each wraps
//! a pointer FreeSWITCH handed us, valid for the duration of the callback
//! that received it.

use std::ffi::{c_char, CStr, CString};
use std::ptr::NonNull;

use freeswitch_sys as fs;

use crate::cause::HangupCause;

pub fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\u{fffd}")).expect("NULs replaced")
}

/// Copies a C string FreeSWITCH owns.
///
/// # Safety
/// `text` must be null or point to a NUL-terminated string.
pub unsafe fn copy_c_str(text: *const c_char) -> Option<String> {
    (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
}

pub fn cause_code(cause: HangupCause) -> fs::switch_call_cause_t {
    let name = c_string(cause.name());
    // SAFETY: a valid C string; str2cause only reads it.
    unsafe { fs::switch_channel_str2cause(name.as_ptr()) }
}

/// The cause FreeSWITCH knows by `name` (or number), if any. str2cause
/// answers NORMAL_CLEARING for any name it does not know, hence the round trip.
pub fn cause_by_name(name: &str) -> Option<fs::switch_call_cause_t> {
    let text = c_string(name);
    // SAFETY: a valid C string; str2cause only reads it.
    let code = unsafe { fs::switch_channel_str2cause(text.as_ptr()) };
    let known = name.chars().all(|c| c.is_ascii_digit()) || cause_name(code).eq_ignore_ascii_case(name);
    (known && code != fs::switch_call_cause_t::SWITCH_CAUSE_NONE).then_some(code)
}

pub fn cause_name(cause: fs::switch_call_cause_t) -> String {
    // SAFETY: cause2str returns a static string for any value.
    unsafe { copy_c_str(fs::switch_channel_cause2str(cause)) }.unwrap_or_default()
}

/// Writes one line to FreeSWITCH's log, tagged with a call UUID when given.
pub fn log(level: fs::switch_log_level_t, uuid: Option<&str>, text: &str) {
    let text = c_string(text);
    let uuid = uuid.map(c_string);
    // SAFETY: valid C strings; wsb_log passes the text as an argument to "%s".
    unsafe {
        fs::wsb_log(
            level.0,
            uuid.as_ref().map_or(std::ptr::null(), |u| u.as_ptr()),
            c"mod_wsbridge.rs".as_ptr(),
            0,
            text.as_ptr(),
        )
    }
}

#[derive(Clone, Copy)]
pub struct Session(NonNull<fs::switch_core_session_t>);

impl Session {
    /// # Safety
    /// `raw` must be a live session for as long as the wrapper is used.
    pub unsafe fn from_raw(raw: *mut fs::switch_core_session_t) -> Option<Session> {
        NonNull::new(raw).map(Session)
    }

    pub fn as_ptr(self) -> *mut fs::switch_core_session_t {
        self.0.as_ptr()
    }

    pub fn channel(self) -> Channel {
        // SAFETY: every live session has a channel.
        Channel(unsafe { fs::switch_core_session_get_channel(self.as_ptr()) })
    }

    pub fn uuid(self) -> String {
        // SAFETY: the UUID string lives as long as the session.
        unsafe { copy_c_str(fs::switch_core_session_get_uuid(self.as_ptr())) }.unwrap_or_default()
    }

    pub fn pool(self) -> *mut fs::switch_memory_pool_t {
        // SAFETY: live session.
        unsafe { fs::switch_core_session_get_pool(self.as_ptr()) }
    }

    pub fn private(self) -> *mut std::ffi::c_void {
        // SAFETY: live session.
        unsafe { fs::wsb_session_get_private(self.as_ptr()) }
    }

    /// # Safety
    /// `data` is what `private()` returns from now on: the endpoint must
    /// only ever store its own per-call pointer (or null) here.
    pub unsafe fn set_private(self, data: *mut std::ffi::c_void) {
        // SAFETY: live session; FreeSWITCH only stores the pointer.
        unsafe {
            fs::switch_core_session_set_private_class(self.as_ptr(), data, fs::switch_pvt_class_t::SWITCH_PVT_PRIMARY)
        };
    }
}

#[derive(Clone, Copy)]
pub struct Channel(*mut fs::switch_channel_t);

impl Channel {
    pub fn variable(self, name: &str) -> Option<String> {
        let name = c_string(name);
        // SAFETY: live channel; the value is copied before returning.
        unsafe { copy_c_str(fs::wsb_channel_get_variable(self.0, name.as_ptr())) }
    }

    pub fn set_variable(self, name: &str, value: &str) {
        let (name, value) = (c_string(name), c_string(value));
        // SAFETY: live channel; FreeSWITCH copies both strings.
        unsafe {
            fs::switch_channel_set_variable_var_check(
                self.0,
                name.as_ptr(),
                value.as_ptr(),
                fs::switch_bool_t::SWITCH_FALSE,
            )
        };
    }

    pub fn name(self) -> String {
        // SAFETY: live channel.
        unsafe { copy_c_str(fs::switch_channel_get_name(self.0)) }.unwrap_or_default()
    }

    pub fn set_name(self, name: &str) {
        let name = c_string(name);
        // SAFETY: FreeSWITCH copies the name.
        unsafe { fs::switch_channel_set_name(self.0, name.as_ptr()) };
    }

    pub fn is_ready(self) -> bool {
        // SAFETY: live channel.
        unsafe { fs::wsb_channel_ready(self.0) != 0 }
    }

    pub fn set_state(self, state: fs::switch_channel_state_t) {
        // SAFETY: live channel.
        unsafe { fs::wsb_channel_set_state(self.0, state) };
    }

    pub fn set_flag(self, flag: fs::switch_channel_flag_t) {
        // SAFETY: live channel.
        unsafe { fs::wsb_channel_set_flag(self.0, flag) };
    }

    pub fn mark_answered(self) {
        // SAFETY: live channel; FreeSWITCH answers channels from other threads too.
        unsafe { fs::wsb_channel_mark_answered(self.0) };
    }

    pub fn hangup(self, cause: HangupCause) {
        self.hangup_code(cause_code(cause));
    }

    pub fn hangup_code(self, cause: fs::switch_call_cause_t) {
        // SAFETY: live channel; hangup is thread-safe in FreeSWITCH.
        unsafe { fs::wsb_channel_hangup(self.0, cause) };
    }

    /// Queues a digit as received on this channel; FreeSWITCH counts duration in 8 kHz samples.
    pub fn queue_dtmf(self, digit: char, duration_ms: u32) {
        let dtmf = fs::switch_dtmf_t {
            digit: digit as u8 as std::ffi::c_char,
            duration: duration_ms * 8,
            flags: 0,
            source: fs::switch_dtmf_source_t::SWITCH_DTMF_ENDPOINT,
        };
        // SAFETY: live channel; FreeSWITCH copies the digit under its own lock.
        unsafe { fs::switch_channel_queue_dtmf(self.0, &dtmf) };
    }
}

/// A session found by UUID and read-locked until dropped: the only way code
/// off the session's own threads touches it.
pub struct LocatedSession(Session);

impl LocatedSession {
    pub fn find(uuid: &str) -> Option<LocatedSession> {
        let uuid = c_string(uuid);
        // SAFETY: a valid C string; a non-null result is read-locked for us.
        let raw = unsafe { fs::wsb_session_locate(uuid.as_ptr()) };
        // SAFETY: the lock keeps it alive until Drop.
        unsafe { Session::from_raw(raw) }.map(LocatedSession)
    }

    pub fn session(&self) -> Session {
        self.0
    }
}

impl Drop for LocatedSession {
    fn drop(&mut self) {
        // SAFETY: pairs the read lock taken by locate.
        unsafe { fs::switch_core_session_rwunlock(self.0.as_ptr()) };
    }
}

/// The originate variables (`var_event`).
#[derive(Clone, Copy)]
pub struct EventHeaders(*mut fs::switch_event_t);

impl EventHeaders {
    /// # Safety
    /// `event` must be null or a live event for as long as the wrapper is used.
    pub unsafe fn from_raw(event: *mut fs::switch_event_t) -> Self {
        EventHeaders(event)
    }

    pub fn get(self, name: &str) -> Option<String> {
        if self.0.is_null() {
            return None;
        }
        let name = c_string(name);
        // SAFETY: live event; the value is copied before returning.
        unsafe { copy_c_str(fs::wsb_event_get_header(self.0, name.as_ptr())) }
    }
}
