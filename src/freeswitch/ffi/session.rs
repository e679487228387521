//! Sessions and channels: borrowed for a callback ([`Session`], [`Channel`],
//! [`Variables`]) or found by UUID and read-locked ([`LocatedSession`]).

use std::ffi::c_char;
use std::marker::PhantomData;
use std::ptr::NonNull;

use freeswitch_sys as fs;

use super::{c_string, copy_c_str, CauseCode};
use crate::settings::cause::HangupCause;

/// A session FreeSWITCH handed us, borrowed for as long as `'a`.
#[derive(Clone, Copy)]
pub struct Session<'a>(NonNull<fs::switch_core_session_t>, PhantomData<&'a fs::switch_core_session_t>);

impl<'a> Session<'a> {
    /// # Safety
    /// `raw` must be null or a session that stays live for `'a`.
    pub(super) unsafe fn from_raw(raw: *mut fs::switch_core_session_t) -> Option<Session<'a>> {
        // SAFETY: as the caller promises.
        NonNull::new(raw).map(|raw| unsafe { Session::from_non_null(raw) })
    }

    /// # Safety
    /// `raw` must be a session that stays live for `'a`.
    pub(super) unsafe fn from_non_null(raw: NonNull<fs::switch_core_session_t>) -> Session<'a> {
        Session(raw, PhantomData)
    }

    pub(super) fn as_ptr(self) -> *mut fs::switch_core_session_t {
        self.0.as_ptr()
    }

    pub fn channel(self) -> Channel<'a> {
        // SAFETY: every live session has a channel, which lives as long as it.
        let raw = unsafe { fs::switch_core_session_get_channel(self.as_ptr()) };
        Channel(raw, PhantomData)
    }

    pub fn uuid(self) -> String {
        // SAFETY: the UUID string lives as long as the session.
        unsafe { copy_c_str(fs::switch_core_session_get_uuid(self.as_ptr())) }.unwrap_or_default()
    }

    /// Hangs the session up with `cause` once `seconds` have passed, by
    /// FreeSWITCH's scheduler (as the `sched_hangup` application does).
    pub fn schedule_hangup(self, seconds: u64, cause: HangupCause) {
        let uuid = c_string(&self.uuid());
        // SAFETY: a null argument only asks for the time.
        let now = unsafe { fs::switch_epoch_time_now(std::ptr::null_mut()) };
        let at = now.saturating_add(seconds.min(i64::MAX as u64) as fs::time_t);
        // SAFETY: a valid C string, copied by the scheduler; the task finds the session by UUID when it runs.
        unsafe {
            fs::switch_ivr_schedule_hangup(at, uuid.as_ptr(), CauseCode::of(cause).0, fs::switch_bool_t::SWITCH_FALSE)
        };
    }

    /// Sends the session to `extension` in its own dialplan and context (as `uuid_transfer` does).
    pub fn transfer(self, extension: &str) -> bool {
        let extension = c_string(extension);
        // SAFETY: live session; FreeSWITCH copies the extension; null dialplan and context mean the channel's own.
        let status = unsafe {
            fs::switch_ivr_session_transfer(self.as_ptr(), extension.as_ptr(), std::ptr::null(), std::ptr::null())
        };
        status == fs::switch_status_t::SWITCH_STATUS_SUCCESS
    }

    pub(super) fn pool(self) -> *mut fs::switch_memory_pool_t {
        // SAFETY: live session.
        unsafe { fs::switch_core_session_get_pool(self.as_ptr()) }
    }
}

/// A channel's state, as far as the endpoint sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    Init,
    Routing,
}

/// A session's channel, borrowed with it.
#[derive(Clone, Copy)]
pub struct Channel<'a>(*mut fs::switch_channel_t, PhantomData<&'a fs::switch_channel_t>);

impl Channel<'_> {
    pub(super) fn as_ptr(self) -> *mut fs::switch_channel_t {
        self.0
    }

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
        // SAFETY: live channel; FreeSWITCH copies the name.
        unsafe { fs::switch_channel_set_name(self.0, name.as_ptr()) };
    }

    pub fn is_ready(self) -> bool {
        // SAFETY: live channel.
        unsafe { fs::wsb_channel_ready(self.0) != 0 }
    }

    pub fn set_state(self, state: ChannelState) {
        let state = match state {
            ChannelState::Init => fs::switch_channel_state_t::CS_INIT,
            ChannelState::Routing => fs::switch_channel_state_t::CS_ROUTING,
        };
        // SAFETY: live channel.
        unsafe { fs::wsb_channel_set_state(self.0, state) };
    }

    /// Without CF_AUDIO, FreeSWITCH 1.10's bridge moves no audio for the channel.
    pub fn set_audio_flag(self) {
        // SAFETY: live channel.
        unsafe { fs::wsb_channel_set_flag(self.0, fs::switch_channel_flag_t::CF_AUDIO) };
    }

    pub fn mark_answered(self) {
        // SAFETY: live channel; FreeSWITCH answers channels from other threads too.
        unsafe { fs::wsb_channel_mark_answered(self.0) };
    }

    pub fn hangup(self, cause: HangupCause) {
        self.hangup_with(CauseCode::of(cause));
    }

    pub fn hangup_with(self, cause: CauseCode) {
        // SAFETY: live channel; hangup is thread-safe in FreeSWITCH.
        unsafe { fs::wsb_channel_hangup(self.0, cause.0) };
    }

    /// Hangs up with the cause a server named (its `hangup` action); a name
    /// FreeSWITCH does not know is logged and becomes NORMAL_CLEARING.
    pub fn hangup_named(self, cause: &str) {
        match CauseCode::by_name(cause) {
            Some(code) => self.hangup_with(code),
            None => {
                tracing::warn!("the server named an unknown hangup cause '{cause}'; using NORMAL_CLEARING");
                self.hangup(HangupCause::NormalClearing);
            }
        }
    }

    /// The UUID of the channel bridged to this one, if any.
    pub fn partner_uuid(self) -> Option<String> {
        let mut buffer = [0 as c_char; 256];
        // SAFETY: live channel; FreeSWITCH writes at most the buffer's length, NUL included, under its own lock.
        let copied =
            unsafe { fs::switch_channel_get_partner_uuid_copy(self.0, buffer.as_mut_ptr(), buffer.len() as _) };
        // SAFETY: null, or the buffer, NUL-terminated.
        unsafe { copy_c_str(copied) }.filter(|uuid| !uuid.is_empty())
    }

    /// The channel's hangup cause by name, e.g. `NORMAL_CLEARING`.
    pub fn hangup_cause_name(self) -> String {
        // SAFETY: live channel; cause2str returns a static string for any value.
        unsafe { copy_c_str(fs::switch_channel_cause2str(fs::switch_channel_get_cause(self.0))) }.unwrap_or_default()
    }

    /// Queues a digit as received on this channel; FreeSWITCH counts duration in 8 kHz samples.
    pub fn queue_dtmf(self, digit: char, duration_ms: u32) {
        let dtmf = fs::switch_dtmf_t {
            digit: digit as u8 as c_char,
            duration: duration_ms.saturating_mul(8),
            flags: 0,
            source: fs::switch_dtmf_source_t::SWITCH_DTMF_ENDPOINT,
        };
        // SAFETY: live channel; FreeSWITCH copies the digit under its own lock.
        unsafe { fs::switch_channel_queue_dtmf(self.0, &dtmf) };
    }
}

/// A session found by UUID and read-locked until dropped: the only way code
/// off the session's own threads touches it.
pub struct LocatedSession(NonNull<fs::switch_core_session_t>);

impl LocatedSession {
    pub fn find(uuid: &str) -> Option<LocatedSession> {
        let uuid = c_string(uuid);
        // SAFETY: a valid C string; a non-null result is read-locked for us.
        let raw = unsafe { fs::wsb_session_locate(uuid.as_ptr()) };
        NonNull::new(raw).map(LocatedSession)
    }

    /// Runs `action` on the channel of the session `uuid`, if it is still
    /// there; false when it is gone.
    pub fn with_channel(uuid: &str, action: impl FnOnce(Channel<'_>)) -> bool {
        match LocatedSession::find(uuid) {
            Some(located) => {
                action(located.session().channel());
                true
            }
            None => false,
        }
    }

    /// The session, borrowed while the lock is held.
    pub fn session(&self) -> Session<'_> {
        Session(self.0, PhantomData)
    }
}

impl Drop for LocatedSession {
    fn drop(&mut self) {
        // SAFETY: pairs the read lock taken by locate.
        unsafe { fs::switch_core_session_rwunlock(self.0.as_ptr()) };
    }
}

/// The originate variables (`var_event`), borrowed for the callback.
#[derive(Clone, Copy)]
pub struct Variables<'a>(*mut fs::switch_event_t, PhantomData<&'a fs::switch_event_t>);

impl<'a> Variables<'a> {
    /// # Safety
    /// `raw` must be null or an event that stays live for `'a`.
    pub(super) unsafe fn from_raw(raw: *mut fs::switch_event_t) -> Variables<'a> {
        Variables(raw, PhantomData)
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
