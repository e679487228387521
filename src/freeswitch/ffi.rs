//! The one unsafe layer over FreeSWITCH's C API. Everything outside this
//! file (and `freeswitch-sys`) is safe Rust.
//!
//! - Wrappers borrow what FreeSWITCH hands a callback for that callback's
//!   lifetime: [`Session`], [`Channel`], [`Variables`].
//! - Resources that FreeSWITCH points into, [`Codec`], [`Timer`] and
//!   [`PcmFrame`], live on the heap and release themselves on `Drop`.
//! - Callbacks are written once, here, as trampolines over traits:
//!   [`Endpoint`] for a leg's io routines and state handlers, [`ApiCommand`]
//!   for API commands, [`EventListener`] for bound events, [`Module`] for
//!   load and shutdown. Each trampoline turns raw pointers into wrappers,
//!   runs the body under the panic guard, and maps the result back to C.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use freeswitch_sys as fs;

use super::guard::{guard, guard_session};
use crate::settings::cause::HangupCause;

const SUCCESS: fs::switch_status_t = fs::switch_status_t::SWITCH_STATUS_SUCCESS;
const FALSE: fs::switch_status_t = fs::switch_status_t::SWITCH_STATUS_FALSE;

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
pub fn cause_code(cause: HangupCause) -> fs::switch_call_cause_t {
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

// ---------------------------------------------------------------- sessions and channels

/// A session FreeSWITCH handed us, borrowed for as long as `'a`.
#[derive(Clone, Copy)]
pub struct Session<'a>(NonNull<fs::switch_core_session_t>, PhantomData<&'a fs::switch_core_session_t>);

impl<'a> Session<'a> {
    /// # Safety
    /// `raw` must be null or a session that stays live for `'a`.
    unsafe fn from_raw(raw: *mut fs::switch_core_session_t) -> Option<Session<'a>> {
        NonNull::new(raw).map(|raw| Session(raw, PhantomData))
    }

    fn as_ptr(self) -> *mut fs::switch_core_session_t {
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

    fn pool(self) -> *mut fs::switch_memory_pool_t {
        // SAFETY: live session.
        unsafe { fs::switch_core_session_get_pool(self.as_ptr()) }
    }

    /// Sets the session's read and write codecs; both must belong to its call (see [`Codec`]).
    pub fn use_codecs(self, read: &Codec, write: &Codec) {
        // SAFETY: both codecs are on the heap and outlive the session's use of them (see Codec).
        unsafe {
            fs::switch_core_session_set_read_codec(self.as_ptr(), read.as_ptr());
            fs::switch_core_session_set_write_codec(self.as_ptr(), write.as_ptr());
        }
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

impl Variables<'_> {
    pub fn get(self, name: &str) -> Option<String> {
        if self.0.is_null() {
            return None;
        }
        let name = c_string(name);
        // SAFETY: live event; the value is copied before returning.
        unsafe { copy_c_str(fs::wsb_event_get_header(self.0, name.as_ptr())) }
    }
}

// ---------------------------------------------------------------- media resources

/// A codec FreeSWITCH points into; on the heap so its address never
/// changes, and destroyed on drop. A session's codec must outlive the
/// session's use of it, which holds when it belongs to the call: calls are
/// dropped in on_destroy. A [`Codec::standalone`] one has its own pool.
pub struct Codec(Box<UnsafeCell<fs::switch_codec_t>>);

// SAFETY: FreeSWITCH uses the codec under its own locking (decode takes the
// codec's mutex); Rust code initialises it, decodes through FreeSWITCH, and
// destroys it on drop.
unsafe impl Send for Codec {}
// SAFETY: as above; no Rust code reads or writes it through a shared reference.
unsafe impl Sync for Codec {}

impl Codec {
    /// L16 mono at `rate` Hz, `ms` per frame, from the session's pool.
    pub fn l16(session: Session<'_>, rate: u32, ms: u32) -> Result<Codec, String> {
        Codec::named(session, "L16", rate, ms)
    }

    /// FreeSWITCH's codec `name` (L16, PCMU, PCMA), mono, from the session's pool.
    pub fn named(session: Session<'_>, name: &str, rate: u32, ms: u32) -> Result<Codec, String> {
        // SAFETY: the pool is the session's, alive while the session is.
        unsafe { Codec::init(name, rate, ms, session.pool()) }
    }

    /// As [`Codec::named`], with a pool of its own, so that it may outlive the session.
    pub fn standalone(name: &str, rate: u32, ms: u32) -> Result<Codec, String> {
        // SAFETY: a null pool makes FreeSWITCH create one for the codec, freed with it.
        unsafe { Codec::init(name, rate, ms, std::ptr::null_mut()) }
    }

    /// # Safety
    /// `pool` is null or a live pool that outlives the codec.
    unsafe fn init(name: &str, rate: u32, ms: u32, pool: *mut fs::switch_memory_pool_t) -> Result<Codec, String> {
        let codec = Codec(Box::default());
        let c_name = CString::new(name).map_err(|_| format!("bad codec name {name:?}"))?;
        // SAFETY: the codec is on the heap and zeroed; the pool is as the caller promised.
        let status = unsafe { fs::wsb_codec_init(codec.as_ptr(), c_name.as_ptr(), rate, ms as c_int, pool) };
        if status != SUCCESS {
            return Err(format!("FreeSWITCH has no {name} codec at {rate} Hz, {ms} ms"));
        }
        Ok(codec)
    }

    /// Decodes `encoded` to 16-bit samples in host order, appended to `samples`.
    pub fn decode(&self, encoded: &[u8], samples: &mut Vec<i16>) {
        if encoded.is_empty() {
            return;
        }
        let start = samples.len();
        // G.711 gives two bytes per byte; room for more covers any codec used here.
        samples.resize(start + encoded.len() * 2, 0);
        let mut decoded_bytes = ((samples.len() - start) * 2) as u32;
        let mut decoded_rate = 0u32;
        let mut flags = 0u32;
        // SAFETY: the codec is ready (init succeeded); both buffers are valid for the lengths given,
        // and FreeSWITCH writes at most decoded_bytes; the codec's mutex serialises users.
        let status = unsafe {
            fs::switch_core_codec_decode(
                self.as_ptr(),
                std::ptr::null_mut(),
                encoded.as_ptr() as *mut c_void,
                encoded.len() as u32,
                0,
                samples[start..].as_mut_ptr() as *mut c_void,
                &mut decoded_bytes,
                &mut decoded_rate,
                &mut flags,
            )
        };
        let decoded = if status == SUCCESS { (decoded_bytes as usize / 2).min(encoded.len() * 2) } else { 0 };
        samples.truncate(start + decoded);
    }

    fn as_ptr(&self) -> *mut fs::switch_codec_t {
        self.0.get()
    }
}

impl Drop for Codec {
    fn drop(&mut self) {
        // SAFETY: a zeroed or destroyed codec reads as not ready; a ready one is ours to destroy.
        unsafe {
            if fs::wsb_codec_ready(self.as_ptr()) != 0 {
                fs::switch_core_codec_destroy(self.as_ptr());
            }
        }
    }
}

/// A soft timer that paces one session's reads; destroyed on drop.
pub struct Timer(Box<fs::switch_timer_t>);

// SAFETY: the timer is driven by one thread at a time (`next` takes &mut).
unsafe impl Send for Timer {}

impl Timer {
    pub fn soft(session: Session<'_>, ms: u32, samples: u32) -> Result<Timer, String> {
        let mut raw: Box<fs::switch_timer_t> = Box::default();
        // SAFETY: the timer is on the heap; the pool is the session's.
        let status = unsafe {
            fs::switch_core_timer_init(&mut *raw, c"soft".as_ptr(), ms as c_int, samples as c_int, session.pool())
        };
        if status != SUCCESS {
            return Err("cannot start the soft timer".into());
        }
        Ok(Timer(raw))
    }

    /// Sleeps until the next tick.
    pub fn next(&mut self) {
        // SAFETY: initialised in soft().
        unsafe { fs::switch_core_timer_next(&mut *self.0) };
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: initialised in soft() and destroyed only here.
        unsafe { fs::switch_core_timer_destroy(&mut *self.0) };
    }
}

/// The frame `read_frame` hands FreeSWITCH, which reads it until the next read.
pub struct PcmFrame {
    frame: Box<fs::switch_frame_t>,
    samples: Box<[i16]>,
    rate: u32,
}

// SAFETY: used by the session's read thread only (behind the call's lock).
unsafe impl Send for PcmFrame {}

/// A frame ready for FreeSWITCH, produced by [`PcmFrame::publish`].
pub struct PublishedFrame(NonNull<fs::switch_frame_t>);

impl PcmFrame {
    pub fn new(samples: usize, rate: u32) -> PcmFrame {
        PcmFrame { frame: Box::default(), samples: vec![0; samples].into_boxed_slice(), rate }
    }

    pub fn samples_mut(&mut self) -> &mut [i16] {
        &mut self.samples
    }

    /// Points the frame at the samples, in `codec`'s format; `comfort_noise` flags it SFF_CNG.
    pub fn publish(&mut self, codec: &Codec, comfort_noise: bool) -> PublishedFrame {
        let bytes = (self.samples.len() * 2) as u32;
        *self.frame = fs::switch_frame_t {
            codec: codec.as_ptr(),
            data: self.samples.as_mut_ptr() as *mut c_void,
            datalen: bytes,
            buflen: bytes,
            samples: self.samples.len() as u32,
            rate: self.rate,
            channels: 1,
            flags: if comfort_noise { fs::switch_frame_flag_enum_t::SFF_CNG.0 } else { 0 },
            ..Default::default()
        };
        PublishedFrame(NonNull::from(&mut *self.frame))
    }
}

/// A frame FreeSWITCH writes to the leg: host-order L16 at the call's rate.
pub struct WrittenFrame<'a> {
    /// Empty for comfort noise or a frame without data.
    pub pcm: &'a [u8],
    pub comfort_noise: bool,
}

// ---------------------------------------------------------------- the endpoint

/// A `wsbridge` leg's per-call state and the callbacks FreeSWITCH makes on it.
/// The state is owned by the session from [`NewLeg`] until on_destroy.
pub trait Endpoint: Send + Sync + Sized + 'static {
    /// outgoing_channel: decide the call and build its leg, or refuse it.
    fn outgoing(request: &Outgoing<'_>) -> Result<(), HangupCause>;
    /// on_init: the UUID is final; false fails the leg.
    fn on_init(&self, session: Session<'_>) -> bool;
    fn on_hangup(&self, session: Session<'_>);
    /// on_destroy: the last callback; the state is handed back to be dropped.
    fn on_destroy(self: Box<Self>, session: Session<'_>);
    /// kill_channel with SIG_KILL.
    fn on_kill(&self, session: Session<'_>);
    /// The next 20 ms of audio for FreeSWITCH; `None` ends the read with failure.
    fn read_frame(&self, session: Session<'_>) -> Option<PublishedFrame>;
    fn write_frame(&self, session: Session<'_>, frame: WrittenFrame<'_>);
    /// A digit for the server; FreeSWITCH counts duration in 8 kHz samples, this in ms.
    fn send_dtmf(&self, session: Session<'_>, digit: char, duration_ms: u32);
    /// receive_message: call progress FreeSWITCH indicates on the leg.
    fn on_indication(&self, _session: Session<'_>, _indication: Indication) {}
}

/// Call progress that reaches an endpoint's receive_message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indication {
    Ringing,
    Progress,
    Answer,
}

/// What a call from the outside (the WebSocket side) enters the dialplan with.
pub struct InboundRequest<'a> {
    pub channel_name: &'a str,
    pub context: &'a str,
    pub destination: &'a str,
    pub caller_id_name: &'a str,
    pub caller_id_number: &'a str,
    pub network_address: &'a str,
    /// Channel variables set before the dialplan runs.
    pub variables: &'a [(String, String)],
}

/// Creates an inbound leg of our endpoint with `build`'s state, a caller
/// profile in the XML dialplan, and its session thread, as mod_loopback's B
/// side and mod_verto do. Returns the leg's UUID; from then on the leg is
/// FreeSWITCH's, reached only through [`LocatedSession`].
pub fn start_inbound<E: Endpoint>(
    request: &InboundRequest<'_>,
    build: impl FnOnce(Session<'_>) -> Result<E, String>,
) -> Result<String, String> {
    let endpoint = ENDPOINT.load(Ordering::Acquire);
    if endpoint.is_null() {
        return Err("mod_wsbridge is unloading".into());
    }
    // SAFETY: our endpoint interface; a null pool makes FreeSWITCH create the session's own.
    let mut raw = unsafe {
        fs::switch_core_session_request_uuid(
            endpoint,
            fs::switch_call_direction_t::SWITCH_CALL_DIRECTION_INBOUND,
            fs::switch_originate_flag_enum_t::SOF_NONE.0 as fs::switch_originate_flag_t,
            std::ptr::null_mut(),
            std::ptr::null(),
        )
    };
    // SAFETY: a new session that only this function holds until its thread is launched.
    let Some(session) = (unsafe { Session::from_raw(raw) }) else {
        return Err("FreeSWITCH could not create a session (max-sessions?)".into());
    };
    // SAFETY: the new session has one stream like any leg.
    unsafe { fs::switch_core_session_add_stream(raw, std::ptr::null_mut()) };
    let call = match build(session) {
        Ok(call) => call,
        Err(why) => {
            // SAFETY: ours alone; no private state attached, nothing else points at it.
            unsafe { fs::wsb_session_destroy(&mut raw) };
            return Err(why);
        }
    };
    let call = Box::into_raw(Box::new(call)) as *mut c_void;
    // SAFETY: live session; only our endpoint's state is ever stored here (see private_of).
    unsafe { fs::switch_core_session_set_private_class(raw, call, fs::switch_pvt_class_t::SWITCH_PVT_PRIMARY) };
    let channel = session.channel();
    channel.set_name(request.channel_name);
    let text = |value: &str| c_string(value);
    let (context, destination, name, number, address) = (
        text(request.context),
        text(request.destination),
        text(request.caller_id_name),
        text(request.caller_id_number),
        text(request.network_address),
    );
    // SAFETY: every string is copied into the session's pool by switch_caller_profile_new.
    let profile = unsafe {
        fs::switch_caller_profile_new(
            session.pool(),
            std::ptr::null(),
            c"XML".as_ptr(),
            name.as_ptr(),
            number.as_ptr(),
            address.as_ptr(),
            number.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            c"mod_wsbridge".as_ptr(),
            context.as_ptr(),
            destination.as_ptr(),
        )
    };
    if profile.is_null() {
        // SAFETY: ours alone; on_destroy frees the attached state.
        unsafe { fs::wsb_session_destroy(&mut raw) };
        return Err("FreeSWITCH could not create a caller profile".into());
    }
    // SAFETY: live channel; the profile lives in the session's pool.
    unsafe { fs::switch_channel_set_caller_profile(channel.0, profile) };
    for (name, value) in request.variables {
        channel.set_variable(name, value);
    }
    channel.set_audio_flag();
    channel.set_state(ChannelState::Init);
    let uuid = session.uuid();
    // SAFETY: a complete session; from here its thread owns it.
    if unsafe { fs::switch_core_session_thread_launch(raw) } != SUCCESS {
        // SAFETY: the thread did not start, so the session is still ours alone.
        unsafe { fs::wsb_session_destroy(&mut raw) };
        return Err("FreeSWITCH could not start the session's thread".into());
    }
    Ok(uuid)
}

/// The endpoint interface FreeSWITCH created for us at load; null once unloading.
static ENDPOINT: AtomicPtr<fs::switch_endpoint_interface_t> = AtomicPtr::new(std::ptr::null_mut());

/// What outgoing_channel was handed.
pub struct Outgoing<'a> {
    a_leg: Option<Session<'a>>,
    variables: Variables<'a>,
    profile: &'a fs::switch_caller_profile_t,
    profile_ptr: *mut fs::switch_caller_profile_t,
    new_session: *mut *mut fs::switch_core_session_t,
    pool: *mut *mut fs::switch_memory_pool_t,
    flags: fs::switch_originate_flag_t,
}

impl<'a> Outgoing<'a> {
    pub fn a_leg(&self) -> Option<Session<'a>> {
        self.a_leg
    }

    pub fn variables(&self) -> Variables<'a> {
        self.variables
    }

    /// The caller profile's destination number, as originate wrote it.
    pub fn destination(&self) -> Option<String> {
        // SAFETY: the profile is originate's, live for the callback.
        unsafe { copy_c_str(self.profile.destination_number) }
    }

    /// Requests the outbound leg, already handed to originate.
    pub fn request_leg(&self) -> Result<NewLeg<'a>, HangupCause> {
        let endpoint = ENDPOINT.load(Ordering::Acquire);
        if endpoint.is_null() {
            return Err(HangupCause::DestinationOutOfOrder);
        }
        // SAFETY: our endpoint interface; pool and flags are originate's.
        let raw = unsafe {
            fs::switch_core_session_request_uuid(
                endpoint,
                fs::switch_call_direction_t::SWITCH_CALL_DIRECTION_OUTBOUND,
                self.flags,
                self.pool,
                std::ptr::null(),
            )
        };
        // SAFETY: a new session, live until destroyed here or reaped by FreeSWITCH after on_destroy.
        let Some(session) = (unsafe { Session::from_raw(raw) }) else {
            return Err(HangupCause::DestinationOutOfOrder);
        };
        // SAFETY: originate's out-parameter; the new session has one stream like any leg.
        unsafe {
            *self.new_session = raw;
            fs::switch_core_session_add_stream(raw, std::ptr::null_mut());
        }
        Ok(NewLeg { session, new_session: self.new_session, profile: self.profile_ptr })
    }
}

/// The leg outgoing_channel is building.
pub struct NewLeg<'a> {
    session: Session<'a>,
    new_session: *mut *mut fs::switch_core_session_t,
    profile: *mut fs::switch_caller_profile_t,
}

impl<'a> NewLeg<'a> {
    pub fn session(&self) -> Session<'a> {
        self.session
    }

    /// Hands the leg its call state; on_destroy frees it from now on.
    pub fn attach<E: Endpoint>(&self, call: Box<E>) {
        let call = Box::into_raw(call) as *mut c_void;
        // SAFETY: live session; only our endpoint's state is ever stored here (see private_of).
        unsafe {
            fs::switch_core_session_set_private_class(
                self.session.as_ptr(),
                call,
                fs::switch_pvt_class_t::SWITCH_PVT_PRIMARY,
            )
        };
    }

    /// Gives the leg a copy of originate's caller profile, marked as ours.
    pub fn adopt_caller_profile(&self) {
        // SAFETY: clones into the new session's pool.
        let profile = unsafe { fs::switch_caller_profile_clone(self.session.as_ptr(), self.profile) };
        // SAFETY: null or the clone, owned by the new session's pool.
        if let Some(profile) = unsafe { profile.as_mut() } {
            profile.source = c"mod_wsbridge".as_ptr();
            // SAFETY: live channel; the profile lives in the session's pool.
            unsafe { fs::switch_channel_set_caller_profile(self.session.channel().0, profile) };
        }
    }

    /// Destroys the half-built leg; its on_destroy frees the call, if attached.
    pub fn destroy(self) {
        // SAFETY: the session we created and nobody else holds; this nulls originate's pointer.
        unsafe { fs::wsb_session_destroy(self.new_session) };
    }
}

/// The state of a session of our endpoint, if it still has one.
fn private_of<'s, E: Endpoint>(session: Session<'s>) -> Option<&'s E> {
    // SAFETY: only our endpoint's sessions reach its callbacks, and their
    // private pointer is an `E` from request_leg until on_destroy clears it.
    unsafe { (fs::wsb_session_get_private(session.as_ptr()) as *const E).as_ref() }
}

/// Runs a session callback: the session borrowed, its state found, and a
/// panic turned into `failed` and a CRASH hangup.
fn session_callback<R: Copy>(
    raw: *mut fs::switch_core_session_t,
    name: &str,
    failed: R,
    body: impl FnOnce(Session<'_>) -> R,
) -> R {
    // SAFETY: FreeSWITCH passes a live session (or null) for the callback.
    let session = unsafe { Session::from_raw(raw) };
    guard_session(session.map(|s| s.channel()), name, failed, || match session {
        Some(session) => body(session),
        None => failed,
    })
}

fn status(ok: bool) -> fs::switch_status_t {
    if ok {
        SUCCESS
    } else {
        FALSE
    }
}

unsafe extern "C" fn outgoing_channel<E: Endpoint>(
    session: *mut fs::switch_core_session_t,
    var_event: *mut fs::switch_event_t,
    outbound_profile: *mut fs::switch_caller_profile_t,
    new_session: *mut *mut fs::switch_core_session_t,
    pool: *mut *mut fs::switch_memory_pool_t,
    flags: fs::switch_originate_flag_t,
    _cancel_cause: *mut fs::switch_call_cause_t,
) -> fs::switch_call_cause_t {
    guard("outgoing_channel", cause_code(HangupCause::Crash), || {
        // SAFETY: originate's profile, live for the callback.
        let Some(profile) = (unsafe { outbound_profile.as_ref() }) else {
            tracing::error!("originate gave no caller profile");
            return cause_code(HangupCause::DestinationOutOfOrder);
        };
        let request = Outgoing {
            // SAFETY: the A-leg (or null), live for the callback.
            a_leg: unsafe { Session::from_raw(session) },
            variables: Variables(var_event, PhantomData),
            profile,
            profile_ptr: outbound_profile,
            new_session,
            pool,
            flags,
        };
        match E::outgoing(&request) {
            Ok(()) => fs::switch_call_cause_t::SWITCH_CAUSE_SUCCESS,
            Err(cause) => cause_code(cause),
        }
    })
}

unsafe extern "C" fn on_init<E: Endpoint>(raw: *mut fs::switch_core_session_t) -> fs::switch_status_t {
    session_callback(raw, "on_init", FALSE, |session| {
        status(private_of::<E>(session).is_some_and(|c| c.on_init(session)))
    })
}

unsafe extern "C" fn on_hangup<E: Endpoint>(raw: *mut fs::switch_core_session_t) -> fs::switch_status_t {
    session_callback(raw, "on_hangup", SUCCESS, |session| {
        if let Some(call) = private_of::<E>(session) {
            call.on_hangup(session);
        }
        SUCCESS
    })
}

unsafe extern "C" fn on_destroy<E: Endpoint>(raw: *mut fs::switch_core_session_t) -> fs::switch_status_t {
    session_callback(raw, "on_destroy", SUCCESS, |session| {
        // SAFETY: live session.
        let call = unsafe { fs::wsb_session_get_private(session.as_ptr()) } as *mut E;
        if call.is_null() {
            return SUCCESS;
        }
        // SAFETY: live session; clearing first makes this run once.
        unsafe {
            fs::switch_core_session_set_private_class(
                session.as_ptr(),
                std::ptr::null_mut(),
                fs::switch_pvt_class_t::SWITCH_PVT_PRIMARY,
            )
        };
        // SAFETY: made by Box::into_raw in request_leg; the private pointer was its only copy.
        let call = unsafe { Box::from_raw(call) };
        call.on_destroy(session);
        SUCCESS
    })
}

unsafe extern "C" fn kill_channel<E: Endpoint>(
    raw: *mut fs::switch_core_session_t,
    signal: c_int,
) -> fs::switch_status_t {
    session_callback(raw, "kill_channel", SUCCESS, |session| {
        if signal == fs::switch_signal_t::SWITCH_SIG_KILL.0 as c_int {
            if let Some(call) = private_of::<E>(session) {
                call.on_kill(session);
            }
        }
        SUCCESS
    })
}

unsafe extern "C" fn read_frame<E: Endpoint>(
    raw: *mut fs::switch_core_session_t,
    frame: *mut *mut fs::switch_frame_t,
    _flags: fs::switch_io_flag_t,
    _stream_id: c_int,
) -> fs::switch_status_t {
    // SAFETY: FreeSWITCH's out-parameter for the frame.
    unsafe { *frame = std::ptr::null_mut() };
    session_callback(raw, "read_frame", FALSE, |session| {
        let Some(published) = private_of::<E>(session).and_then(|call| call.read_frame(session)) else {
            return FALSE;
        };
        // SAFETY: the frame lives in the call until on_destroy; FreeSWITCH reads it until the next read.
        unsafe { *frame = published.0.as_ptr() };
        SUCCESS
    })
}

unsafe extern "C" fn write_frame<E: Endpoint>(
    raw: *mut fs::switch_core_session_t,
    frame: *mut fs::switch_frame_t,
    _flags: fs::switch_io_flag_t,
    _stream_id: c_int,
) -> fs::switch_status_t {
    session_callback(raw, "write_frame", FALSE, |session| {
        let Some(call) = private_of::<E>(session) else { return FALSE };
        // SAFETY: FreeSWITCH's frame, live for the callback.
        let Some(frame) = (unsafe { frame.as_ref() }) else { return SUCCESS };
        let comfort_noise = frame.flags & fs::switch_frame_flag_enum_t::SFF_CNG.0 != 0;
        let pcm: &[u8] = if comfort_noise || frame.data.is_null() || frame.datalen == 0 {
            &[]
        } else {
            // SAFETY: FreeSWITCH hands us datalen bytes of L16 at the leg's rate.
            unsafe { std::slice::from_raw_parts(frame.data as *const u8, frame.datalen as usize) }
        };
        call.write_frame(session, WrittenFrame { pcm, comfort_noise });
        SUCCESS
    })
}

unsafe extern "C" fn send_dtmf<E: Endpoint>(
    raw: *mut fs::switch_core_session_t,
    dtmf: *const fs::switch_dtmf_t,
) -> fs::switch_status_t {
    session_callback(raw, "send_dtmf", SUCCESS, |session| {
        // SAFETY: FreeSWITCH's digit, live for the callback.
        let (Some(call), Some(dtmf)) = (private_of::<E>(session), unsafe { dtmf.as_ref() }) else { return SUCCESS };
        call.send_dtmf(session, dtmf.digit as u8 as char, dtmf.duration / 8);
        SUCCESS
    })
}

unsafe extern "C" fn receive_message<E: Endpoint>(
    raw: *mut fs::switch_core_session_t,
    message: *mut fs::switch_core_session_message_t,
) -> fs::switch_status_t {
    session_callback(raw, "receive_message", SUCCESS, |session| {
        // SAFETY: FreeSWITCH's message, live for the callback.
        let (Some(call), Some(message)) = (private_of::<E>(session), unsafe { message.as_ref() }) else {
            return SUCCESS;
        };
        use fs::switch_core_session_message_types_t as M;
        let indication = match message.message_id {
            M::SWITCH_MESSAGE_INDICATE_RINGING => Indication::Ringing,
            M::SWITCH_MESSAGE_INDICATE_PROGRESS => Indication::Progress,
            M::SWITCH_MESSAGE_INDICATE_ANSWER => Indication::Answer,
            _ => return SUCCESS,
        };
        call.on_indication(session, indication);
        SUCCESS
    })
}

/// A C table FreeSWITCH keeps a pointer to for as long as the module is loaded.
struct Table<T>(UnsafeCell<T>);

// SAFETY: written once before FreeSWITCH sees it; FreeSWITCH only reads it.
unsafe impl<T> Sync for Table<T> {}
// SAFETY: as above.
unsafe impl<T> Send for Table<T> {}

static IO_ROUTINES: OnceLock<Table<fs::switch_io_routines_t>> = OnceLock::new();
static STATE_HANDLERS: OnceLock<Table<fs::switch_state_handler_table_t>> = OnceLock::new();

fn endpoint_tables<E: Endpoint>() -> (*mut fs::switch_io_routines_t, *mut fs::switch_state_handler_table_t) {
    let io = IO_ROUTINES.get_or_init(|| {
        Table(UnsafeCell::new(fs::switch_io_routines_t {
            outgoing_channel: Some(outgoing_channel::<E>),
            read_frame: Some(read_frame::<E>),
            write_frame: Some(write_frame::<E>),
            kill_channel: Some(kill_channel::<E>),
            send_dtmf: Some(send_dtmf::<E>),
            receive_message: Some(receive_message::<E>),
            ..Default::default()
        }))
    });
    let states = STATE_HANDLERS.get_or_init(|| {
        Table(UnsafeCell::new(fs::switch_state_handler_table_t {
            on_init: Some(on_init::<E>),
            on_hangup: Some(on_hangup::<E>),
            on_destroy: Some(on_destroy::<E>),
            ..Default::default()
        }))
    });
    (io.0.get(), states.0.get())
}

// ---------------------------------------------------------------- media bugs

/// What a media bug does with the audio of the channel it is attached to.
/// Called on the channel's media threads (read and write may be different
/// threads): it must never block.
pub trait MediaBugHandler: Send + Sync + 'static {
    /// A frame the channel read (the caller): host-order L16, mono, at `rate`. False removes the bug.
    fn on_read(&self, samples: &[i16], rate: u32) -> bool;
    /// A frame about to be written to the channel (what the caller hears),
    /// which may be changed in place. False removes the bug.
    fn on_write(&self, samples: &mut [i16], rate: u32) -> bool;
    /// The bug is gone: removed, or the channel hung up. The channel is
    /// still there to take variables.
    fn on_close(&self, channel: Option<Channel<'_>>);
}

/// Attaches a bug that sees what `session` reads and may change what it
/// writes (FreeSWITCH's read and write replace). `handler` is dropped when
/// the bug closes, or here if it cannot be attached.
pub fn add_media_bug<H: MediaBugHandler>(
    session: Session<'_>,
    function: &str,
    handler: std::sync::Arc<H>,
) -> Result<(), String> {
    let user_data = Box::into_raw(Box::new(handler)) as *mut c_void;
    let flags =
        fs::switch_media_bug_flag_enum_t::SMBF_READ_REPLACE.0 | fs::switch_media_bug_flag_enum_t::SMBF_WRITE_REPLACE.0;
    let function = c_string(function);
    let mut bug: *mut fs::switch_media_bug_t = std::ptr::null_mut();
    // SAFETY: live session; FreeSWITCH copies the strings; the callback owns
    // user_data from now on and frees it on SWITCH_ABC_TYPE_CLOSE.
    let status = unsafe {
        fs::switch_core_media_bug_add(
            session.as_ptr(),
            function.as_ptr(),
            std::ptr::null(),
            Some(media_bug_callback::<H>),
            user_data,
            0,
            flags as fs::switch_media_bug_flag_t,
            &mut bug,
        )
    };
    if status != SUCCESS {
        // SAFETY: not attached, so no callback saw or will see it (INIT always accepts).
        drop(unsafe { Box::from_raw(user_data as *mut std::sync::Arc<H>) });
        return Err("FreeSWITCH could not attach the media bug".into());
    }
    Ok(())
}

/// The samples of a bug's frame, when it holds mono L16 audio.
///
/// # Safety
/// `frame` is null or a frame FreeSWITCH hands the callback, live for it.
unsafe fn frame_samples<'f>(frame: *mut fs::switch_frame_t) -> Option<(&'f mut [i16], u32)> {
    // SAFETY: as the caller promises.
    let frame = unsafe { frame.as_mut() }?;
    if frame.data.is_null() || frame.datalen < 2 || frame.channels > 1 || frame.data as usize % 2 != 0 {
        return None;
    }
    let samples = frame.datalen as usize / 2;
    let rate = if frame.rate > 0 { frame.rate } else { (samples * 1000 / FRAME_MS_USIZE) as u32 };
    // SAFETY: FreeSWITCH's frame holds datalen bytes of host-order L16, aligned (checked above).
    Some((unsafe { std::slice::from_raw_parts_mut(frame.data as *mut i16, samples) }, rate))
}

const FRAME_MS_USIZE: usize = 20;

unsafe extern "C" fn media_bug_callback<H: MediaBugHandler>(
    bug: *mut fs::switch_media_bug_t,
    user_data: *mut c_void,
    kind: fs::switch_abc_type_t,
) -> fs::switch_bool_t {
    const KEEP: fs::switch_bool_t = fs::switch_bool_t::SWITCH_TRUE;
    guard("media bug", KEEP, || {
        if user_data.is_null() {
            return KEEP;
        }
        let keep = match kind {
            fs::switch_abc_type_t::SWITCH_ABC_TYPE_READ_REPLACE => {
                // SAFETY: user_data is the handler add_media_bug stored, live until CLOSE.
                let handler = unsafe { &*(user_data as *const std::sync::Arc<H>) };
                // SAFETY: FreeSWITCH's bug, live for the callback; its read frame likewise.
                let frame = unsafe { fs::switch_core_media_bug_get_read_replace_frame(bug) };
                // SAFETY: as above.
                let keep = match unsafe { frame_samples(frame) } {
                    Some((samples, rate)) => handler.on_read(samples, rate),
                    None => true,
                };
                // SAFETY: the frame is handed back unchanged.
                unsafe { fs::switch_core_media_bug_set_read_replace_frame(bug, frame) };
                keep
            }
            fs::switch_abc_type_t::SWITCH_ABC_TYPE_WRITE_REPLACE => {
                // SAFETY: as for READ_REPLACE.
                let handler = unsafe { &*(user_data as *const std::sync::Arc<H>) };
                // SAFETY: FreeSWITCH's bug and its write frame, live for the callback.
                let frame = unsafe { fs::switch_core_media_bug_get_write_replace_frame(bug) };
                // SAFETY: as above; the frame's data is ours to change for the callback.
                let keep = match unsafe { frame_samples(frame) } {
                    Some((samples, rate)) => handler.on_write(samples, rate),
                    None => true,
                };
                // SAFETY: the same frame, changed in place.
                unsafe { fs::switch_core_media_bug_set_write_replace_frame(bug, frame) };
                keep
            }
            fs::switch_abc_type_t::SWITCH_ABC_TYPE_CLOSE => {
                // SAFETY: made by Box::into_raw in add_media_bug; CLOSE comes once, last.
                let handler = unsafe { Box::from_raw(user_data as *mut std::sync::Arc<H>) };
                // SAFETY: the bug's session, live while its bugs close.
                let session = unsafe { Session::from_raw(fs::switch_core_media_bug_get_session(bug)) };
                handler.on_close(session.map(Session::channel));
                true
            }
            _ => true,
        };
        if keep {
            KEEP
        } else {
            fs::switch_bool_t::SWITCH_FALSE
        }
    })
}

/// FreeSWITCH's (speex) resampler for mono L16; destroyed on drop.
pub struct Resampler {
    raw: NonNull<fs::switch_audio_resampler_t>,
    pub from_rate: u32,
    pub to_rate: u32,
}

// SAFETY: used by one thread at a time (`process` takes &mut).
unsafe impl Send for Resampler {}

impl Resampler {
    pub fn new(from_rate: u32, to_rate: u32) -> Result<Resampler, String> {
        let mut raw: *mut fs::switch_audio_resampler_t = std::ptr::null_mut();
        // SAFETY: FreeSWITCH allocates the resampler into `raw`; the strings are static.
        let status = unsafe {
            fs::switch_resample_perform_create(
                &mut raw,
                from_rate,
                to_rate,
                (to_rate / 50).max(160) * 4,
                2,
                1,
                c"fork".as_ptr(),
                c"Resampler::new".as_ptr(),
                0,
            )
        };
        match NonNull::new(raw) {
            Some(raw) if status == SUCCESS => Ok(Resampler { raw, from_rate, to_rate }),
            _ => Err(format!("FreeSWITCH cannot resample {from_rate} Hz to {to_rate} Hz")),
        }
    }

    /// Appends `input` at the source rate to `out`, at the target rate.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if input.is_empty() {
            return;
        }
        // SAFETY: a live resampler; speex only reads the input; `to` holds to_len samples after the call.
        unsafe {
            let raw = self.raw.as_ptr();
            let produced = fs::switch_resample_process(raw, input.as_ptr() as *mut i16, input.len() as u32);
            let to = (*raw).to;
            if !to.is_null() {
                out.extend_from_slice(std::slice::from_raw_parts(to, produced as usize));
            }
        }
    }
}

impl Drop for Resampler {
    fn drop(&mut self) {
        let mut raw = self.raw.as_ptr();
        // SAFETY: created in new() and destroyed only here.
        unsafe { fs::switch_resample_destroy(&mut raw) };
    }
}

// ---------------------------------------------------------------- dialplan applications

/// A dialplan application (`<action application="name" data="..."/>`).
pub trait Application {
    const NAME: &'static CStr;
    const SHORT_DESCRIPTION: &'static CStr;
    const SYNTAX: &'static CStr;
    fn run(session: Session<'_>, data: &str);
}

unsafe extern "C" fn application<A: Application>(raw: *mut fs::switch_core_session_t, data: *const c_char) {
    guard("application", (), || {
        // SAFETY: the session running the application, live for the call; data is null or a C string.
        let (session, data) = unsafe { (Session::from_raw(raw), copy_c_str(data)) };
        if let Some(session) = session {
            A::run(session, &data.unwrap_or_default());
        }
    })
}

// ---------------------------------------------------------------- API commands

/// An API command (`fs_cli> name arguments`).
pub trait ApiCommand {
    const NAME: &'static CStr;
    const DESCRIPTION: &'static CStr;
    const SYNTAX: &'static CStr;
    /// The text to print for `arguments`.
    fn run(arguments: &str) -> String;
}

unsafe extern "C" fn api_command<A: ApiCommand>(
    command: *const c_char,
    _session: *mut fs::switch_core_session_t,
    stream: *mut fs::switch_stream_handle_t,
) -> fs::switch_status_t {
    guard("API command", SUCCESS, || {
        // SAFETY: FreeSWITCH's argument string, or null.
        let arguments = unsafe { copy_c_str(command) }.unwrap_or_default();
        let text = c_string(&A::run(&arguments));
        if !stream.is_null() {
            // SAFETY: FreeSWITCH's stream for this call; the text is a "%s" argument.
            unsafe { fs::wsb_stream_write(stream, text.as_ptr()) };
        }
        SUCCESS
    })
}

// ---------------------------------------------------------------- events

/// FreeSWITCH events the module listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    ReloadXml,
    ShutdownRequested,
}

impl EventKind {
    fn raw(self) -> fs::switch_event_types_t {
        match self {
            EventKind::ReloadXml => fs::switch_event_types_t::SWITCH_EVENT_RELOADXML,
            EventKind::ShutdownRequested => fs::switch_event_types_t::SWITCH_EVENT_SHUTDOWN_REQUESTED,
        }
    }
}

/// Something done when FreeSWITCH fires an event.
pub trait EventListener {
    const EVENT: EventKind;
    fn on_event();
}

unsafe extern "C" fn event_callback<L: EventListener>(_event: *mut fs::switch_event_t) {
    guard("event listener", (), L::on_event);
}

/// Stops calling `L` back.
pub fn unbind<L: EventListener>() {
    // SAFETY: unbinding a callback that was never bound is harmless.
    unsafe { fs::switch_event_unbind_callback(Some(event_callback::<L>)) };
}

/// Reserves `owner`'s CUSTOM event subclass, so event-socket clients may subscribe to it.
pub fn reserve_subclass(owner: &CStr, subclass: &CStr) -> Result<(), String> {
    // SAFETY: valid C strings; FreeSWITCH copies them.
    let status = unsafe { fs::switch_event_reserve_subclass_detailed(owner.as_ptr(), subclass.as_ptr()) };
    match status {
        SUCCESS => Ok(()),
        _ => Err(format!("cannot reserve the event subclass {}", subclass.to_string_lossy())),
    }
}

pub fn free_subclass(owner: &CStr, subclass: &CStr) {
    // SAFETY: valid C strings.
    unsafe { fs::switch_event_free_subclass_detailed(owner.as_ptr(), subclass.as_ptr()) };
}

/// Fires a CUSTOM event, with the channel's headers when a session is given.
pub fn fire_custom_event(session: Option<Session<'_>>, subclass: &str, headers: &[(&str, String)], body: Option<&str>) {
    let subclass = c_string(subclass);
    let names: Vec<CString> = headers.iter().map(|(name, _)| c_string(name)).collect();
    let values: Vec<CString> = headers.iter().map(|(_, value)| c_string(value)).collect();
    let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let value_ptrs: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
    let body = body.map(c_string);
    let session = session.map_or(std::ptr::null_mut(), Session::as_ptr);
    // SAFETY: every string lives until the call returns, and FreeSWITCH copies them.
    unsafe {
        fs::wsb_fire_custom_event(
            session,
            subclass.as_ptr(),
            name_ptrs.as_ptr(),
            value_ptrs.as_ptr(),
            name_ptrs.len() as c_int,
            body.as_ref().map_or(std::ptr::null(), |b| b.as_ptr()),
        )
    };
}

// ---------------------------------------------------------------- configuration

unsafe extern "C" fn collect_param(context: *mut c_void, name: *const c_char, value: *const c_char) {
    guard("config param", (), || {
        // SAFETY: the Vec passed to wsb_config_params, alive for the call.
        let params = unsafe { &mut *(context as *mut Vec<(String, String)>) };
        // SAFETY: FreeSWITCH's attribute strings, live for the callback.
        let (name, value) = unsafe { (copy_c_str(name), copy_c_str(value)) };
        params.push((name.unwrap_or_default(), value.unwrap_or_default()));
    })
}

/// The `<settings><param>` pairs of a configuration; `None` when it is missing.
pub fn config_params(name: &CStr) -> Option<Vec<(String, String)>> {
    let mut params: Vec<(String, String)> = Vec::new();
    let context = &mut params as *mut Vec<(String, String)> as *mut c_void;
    // SAFETY: the callback only touches `params`, which outlives the call.
    let found = unsafe { fs::wsb_config_params(name.as_ptr(), Some(collect_param), context) };
    (found == 0).then_some(params)
}

// ---------------------------------------------------------------- the module

/// What FreeSWITCH hands `load`: the place to declare the module's interfaces.
pub struct ModuleInterface {
    raw: *mut fs::switch_loadable_module_interface_t,
}

impl ModuleInterface {
    fn create(
        raw: *mut *mut fs::switch_loadable_module_interface_t,
        pool: *mut fs::switch_memory_pool_t,
        name: &CStr,
    ) -> Result<ModuleInterface, String> {
        // SAFETY: FreeSWITCH's slot and the module's pool.
        let module = unsafe { fs::switch_loadable_module_create_module_interface(pool, name.as_ptr()) };
        if module.is_null() || raw.is_null() {
            return Err("FreeSWITCH could not create the module interface".into());
        }
        // SAFETY: the out-parameter FreeSWITCH passed to load.
        unsafe { *raw = module };
        Ok(ModuleInterface { raw: module })
    }

    /// A zeroed interface of type `T`, owned by the module until it is unloaded.
    fn create_interface<T>(&self, kind: fs::switch_module_interface_name_t) -> Result<NonNull<T>, String> {
        // SAFETY: our module interface; FreeSWITCH allocates the interface from the module's pool.
        let raw = unsafe { fs::switch_loadable_module_create_interface(self.raw, kind) } as *mut T;
        NonNull::new(raw).ok_or_else(|| format!("FreeSWITCH could not create a {kind:?}"))
    }

    /// Declares the endpoint `name` with `E`'s callbacks.
    pub fn add_endpoint<E: Endpoint>(&self, name: &'static CStr) -> Result<(), String> {
        let mut endpoint: NonNull<fs::switch_endpoint_interface_t> =
            self.create_interface(fs::switch_module_interface_name_t::SWITCH_ENDPOINT_INTERFACE)?;
        // SAFETY: just created for us and not yet seen by FreeSWITCH's callers.
        let endpoint = unsafe { endpoint.as_mut() };
        let (io_routines, state_handlers) = endpoint_tables::<E>();
        endpoint.interface_name = name.as_ptr();
        endpoint.io_routines = io_routines;
        endpoint.state_handler = state_handlers;
        ENDPOINT.store(endpoint, Ordering::Release);
        Ok(())
    }

    pub fn add_application<A: Application>(&self) -> Result<(), String> {
        let mut app: NonNull<fs::switch_application_interface_t> =
            self.create_interface(fs::switch_module_interface_name_t::SWITCH_APPLICATION_INTERFACE)?;
        // SAFETY: just created for us and not yet seen by FreeSWITCH's callers.
        let app = unsafe { app.as_mut() };
        app.interface_name = A::NAME.as_ptr();
        app.short_desc = A::SHORT_DESCRIPTION.as_ptr();
        app.long_desc = A::SHORT_DESCRIPTION.as_ptr();
        app.syntax = A::SYNTAX.as_ptr();
        app.application_function = Some(application::<A>);
        app.flags = fs::switch_application_flag_enum_t::SAF_NONE.0;
        Ok(())
    }

    pub fn add_api<A: ApiCommand>(&self) -> Result<(), String> {
        let mut api: NonNull<fs::switch_api_interface_t> =
            self.create_interface(fs::switch_module_interface_name_t::SWITCH_API_INTERFACE)?;
        // SAFETY: just created for us and not yet seen by FreeSWITCH's callers.
        let api = unsafe { api.as_mut() };
        api.interface_name = A::NAME.as_ptr();
        api.desc = A::DESCRIPTION.as_ptr();
        api.syntax = A::SYNTAX.as_ptr();
        api.function = Some(api_command::<A>);
        Ok(())
    }

    /// Calls `L` back whenever its event fires.
    pub fn bind<L: EventListener>(&self, owner: &CStr) -> Result<(), String> {
        // SAFETY: valid C strings; the callback is a function of this module, unbound at shutdown.
        let status = unsafe {
            fs::switch_event_bind(
                owner.as_ptr(),
                L::EVENT.raw(),
                std::ptr::null(),
                Some(event_callback::<L>),
                std::ptr::null_mut(),
            )
        };
        match status {
            SUCCESS => Ok(()),
            _ => Err(format!("cannot bind to the {:?} event", L::EVENT)),
        }
    }
}

/// Stops routing new calls to the endpoint (calls up keep their callbacks).
pub fn retire_endpoint() {
    ENDPOINT.store(std::ptr::null_mut(), Ordering::Release);
}

/// A FreeSWITCH module: what it declares at load and how it stops.
pub trait Module {
    const NAME: &'static CStr;
    fn load(interface: &ModuleInterface) -> Result<(), String>;
    /// True when nothing of the module is running any more, so it may be unloaded.
    fn shutdown() -> bool;
}

/// The module's `load`, for [`declare_module`].
///
/// # Safety
/// Called by FreeSWITCH only, with its out-parameter for the module interface and the module's pool.
pub unsafe extern "C" fn load<M: Module>(
    module_interface: *mut *mut fs::switch_loadable_module_interface_t,
    pool: *mut fs::switch_memory_pool_t,
) -> fs::switch_status_t {
    guard("load", FALSE, || {
        let loaded = ModuleInterface::create(module_interface, pool, M::NAME).and_then(|interface| M::load(&interface));
        match loaded {
            Ok(()) => SUCCESS,
            Err(why) => {
                tracing::error!("{} failed to load: {why}", M::NAME.to_string_lossy());
                FALSE
            }
        }
    })
}

/// The module's `shutdown`, for [`declare_module`].
///
/// # Safety
/// Called by FreeSWITCH only, once, after `load` succeeded.
pub unsafe extern "C" fn shutdown<M: Module>() -> fs::switch_status_t {
    guard("shutdown", fs::switch_status_t::SWITCH_STATUS_NOUNLOAD, || {
        if M::shutdown() {
            SUCCESS
        } else {
            fs::switch_status_t::SWITCH_STATUS_NOUNLOAD
        }
    })
}

/// Declares the symbol FreeSWITCH looks up after loading `<name>.so`.
macro_rules! declare_module {
    ($symbol:ident, $module:ty) => {
        #[no_mangle]
        #[allow(non_upper_case_globals, unsafe_code)]
        pub static $symbol: freeswitch_sys::switch_loadable_module_function_table_t =
            freeswitch_sys::switch_loadable_module_function_table_t {
                switch_api_version: freeswitch_sys::SWITCH_API_VERSION as i32,
                load: Some($crate::freeswitch::ffi::load::<$module>),
                shutdown: Some($crate::freeswitch::ffi::shutdown::<$module>),
                runtime: None,
                flags: freeswitch_sys::switch_module_flag_enum_t::SMODF_NONE.0 as freeswitch_sys::switch_module_flag_t,
            };
    };
}
pub(crate) use declare_module;
