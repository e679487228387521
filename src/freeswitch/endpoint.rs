//! The `wsbridge` endpoint: the io routines and state handlers FreeSWITCH
//! calls for each leg, modelled on mod_loopback's null endpoint.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use freeswitch_sys as fs;
use tracing::Instrument;

use super::admin;
use super::api::{cause_by_name, cause_code, copy_c_str, Channel, EventHeaders, LocatedSession, Session};
use super::guard::{guard, guard_session};
use super::runtime;
use crate::cause::HangupCause;
use crate::comfort_noise::DownlinkMixer;
use crate::media::CallMedia;
use crate::options::CallOptions;
use crate::reframe::Reframer;
use crate::session::{self, CallControl, CallEvent};
use crate::settings::{CallSettings, RawSettings, VariableSource, FRAME_MS};
use crate::uplink::PushOutcome;

pub static ENDPOINT: AtomicPtr<fs::switch_endpoint_interface_t> = AtomicPtr::new(std::ptr::null_mut());

/// A C table FreeSWITCH keeps a pointer to for as long as the module is loaded.
pub struct Table<T>(UnsafeCell<T>);

// SAFETY: written only at compile time; FreeSWITCH only reads it.
unsafe impl<T> Sync for Table<T> {}

impl<T> Table<T> {
    pub fn as_ptr(&self) -> *mut T {
        self.0.get()
    }
}

pub static IO_ROUTINES: Table<fs::switch_io_routines_t> = Table(UnsafeCell::new({
    // SAFETY: an all-null table is valid; FreeSWITCH skips null routines.
    let mut table: fs::switch_io_routines_t = unsafe { std::mem::zeroed() };
    table.outgoing_channel = Some(outgoing_channel);
    table.read_frame = Some(read_frame);
    table.write_frame = Some(write_frame);
    table.kill_channel = Some(kill_channel);
    table.send_dtmf = Some(send_dtmf);
    table
}));

pub static STATE_HANDLERS: Table<fs::switch_state_handler_table_t> = Table(UnsafeCell::new({
    // SAFETY: as above.
    let mut table: fs::switch_state_handler_table_t = unsafe { std::mem::zeroed() };
    table.on_init = Some(on_init);
    table.on_hangup = Some(on_hangup);
    table.on_destroy = Some(on_destroy);
    table
}));

impl VariableSource for EventHeaders {
    fn variable(&self, name: &str) -> Option<String> {
        self.get(name)
    }
}

impl VariableSource for Channel {
    fn variable(&self, name: &str) -> Option<String> {
        Channel::variable(*self, name)
    }
}

/// State of the read thread: the pacing timer and the frame handed to FreeSWITCH.
struct ReadSide {
    timer: fs::switch_timer_t,
    timer_ready: bool,
    frame: fs::switch_frame_t,
    samples: Box<[i16]>,
    mixer: DownlinkMixer,
}

/// Per-call state, owned by the session: created in `outgoing_channel`,
/// freed in `on_destroy`, at a fixed address in between because FreeSWITCH
/// keeps pointers to the codecs, the timer and the frame.
struct Call {
    settings: CallSettings,
    options: CallOptions,
    media: Arc<CallMedia>,
    read_codec: UnsafeCell<fs::switch_codec_t>,
    write_codec: UnsafeCell<fs::switch_codec_t>,
    read: Mutex<ReadSide>,
    uplink_reframer: Mutex<Reframer>,
}

// SAFETY: the raw pointers inside are FreeSWITCH's and only used on its
// threads under its own rules: the codecs are set up before the session
// runs, the read side is used by the read thread only, the uplink side by
// the write thread only.
unsafe impl Send for ReadSide {}
unsafe impl Sync for Call {}
unsafe impl Send for Call {}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Call {
    fn new(settings: CallSettings, options: CallOptions) -> Box<Call> {
        let format = settings.content_type;
        let samples = vec![0i16; format.samples_per_frame()].into_boxed_slice();
        Box::new(Call {
            media: Arc::new(CallMedia::new(format, options.media)),
            settings,
            read_codec: UnsafeCell::new(Default::default()),
            write_codec: UnsafeCell::new(Default::default()),
            read: Mutex::new(ReadSide {
                timer: Default::default(),
                timer_ready: false,
                frame: Default::default(),
                samples,
                mixer: DownlinkMixer::new(options.comfort_noise_dbov, format.rate),
            }),
            options,
            uplink_reframer: Mutex::new(Reframer::new(format.bytes_per_frame())),
        })
    }

    /// The call of a session of ours, if it still has one.
    fn of<'a>(session: Session) -> Option<&'a Call> {
        // SAFETY: only our endpoint's sessions reach these callbacks, and
        // their private pointer is a `Call` until on_destroy clears it.
        unsafe { (session.private() as *const Call).as_ref() }
    }

    /// L16 codecs at the call's rate and the soft timer that paces reads.
    fn init_media(&self, session: Session) -> Result<(), String> {
        let rate = self.settings.content_type.rate;
        for codec in [&self.read_codec, &self.write_codec] {
            // SAFETY: the codec lives in the pinned Call; the pool is the session's.
            let status =
                unsafe { fs::wsb_codec_init(codec.get(), c"L16".as_ptr(), rate, FRAME_MS as i32, session.pool()) };
            if status != fs::switch_status_t::SWITCH_STATUS_SUCCESS {
                return Err(format!("FreeSWITCH has no L16 codec at {rate} Hz, {FRAME_MS} ms"));
            }
        }
        // SAFETY: the codecs stay valid until on_destroy.
        unsafe {
            fs::switch_core_session_set_read_codec(session.as_ptr(), self.read_codec.get());
            fs::switch_core_session_set_write_codec(session.as_ptr(), self.write_codec.get());
        }
        let mut read = lock(&self.read);
        let samples = self.settings.content_type.samples_per_frame() as i32;
        // SAFETY: the timer lives in the pinned Call.
        let status = unsafe {
            fs::switch_core_timer_init(&mut read.timer, c"soft".as_ptr(), FRAME_MS as i32, samples, session.pool())
        };
        if status != fs::switch_status_t::SWITCH_STATUS_SUCCESS {
            return Err("cannot start the soft timer".into());
        }
        read.timer_ready = true;
        Ok(())
    }

    /// Releases what `init_media` set up; safe on a partly set-up call.
    fn release_media(&self) {
        let mut read = lock(&self.read);
        if read.timer_ready {
            // SAFETY: initialised above and not yet destroyed.
            unsafe { fs::switch_core_timer_destroy(&mut read.timer) };
            read.timer_ready = false;
        }
        for codec in [&self.read_codec, &self.write_codec] {
            // SAFETY: a zeroed codec reads as not ready.
            unsafe {
                if fs::wsb_codec_ready(codec.get()) != 0 {
                    fs::switch_core_codec_destroy(codec.get());
                }
            }
        }
    }
}

/// How the WebSocket task acts on its call: by UUID, never by pointer.
struct LocatedCall {
    uuid: String,
}

impl CallControl for LocatedCall {
    fn answer(&self) -> bool {
        match LocatedSession::find(&self.uuid) {
            Some(located) => {
                let channel = located.session().channel();
                channel.mark_answered();
                true
            }
            None => false,
        }
    }

    fn hangup(&self, cause: HangupCause) {
        if let Some(located) = LocatedSession::find(&self.uuid) {
            located.session().channel().hangup(cause);
        }
    }

    fn hangup_named(&self, cause: &str) {
        if let Some(located) = LocatedSession::find(&self.uuid) {
            let channel = located.session().channel();
            match cause_by_name(cause) {
                Some(code) => channel.hangup_code(code),
                None => {
                    tracing::warn!("the server named an unknown hangup cause '{cause}'; using NORMAL_CLEARING");
                    channel.hangup(HangupCause::NormalClearing);
                }
            }
        }
    }

    fn event(&self, event: CallEvent) {
        admin::fire(&self.uuid, &event);
    }

    fn send_dtmf(&self, digits: &str, duration_ms: u32) {
        if let Some(located) = LocatedSession::find(&self.uuid) {
            let channel = located.session().channel();
            for digit in digits.chars() {
                // Queued on our leg as if received, so a bridge passes it to the caller.
                channel.queue_dtmf(digit, duration_ms);
            }
        }
    }
}

const SUCCESS: fs::switch_status_t = fs::switch_status_t::SWITCH_STATUS_SUCCESS;
const FALSE: fs::switch_status_t = fs::switch_status_t::SWITCH_STATUS_FALSE;

unsafe extern "C" fn outgoing_channel(
    session: *mut fs::switch_core_session_t,
    var_event: *mut fs::switch_event_t,
    outbound_profile: *mut fs::switch_caller_profile_t,
    new_session: *mut *mut fs::switch_core_session_t,
    pool: *mut *mut fs::switch_memory_pool_t,
    flags: fs::switch_originate_flag_t,
    _cancel_cause: *mut fs::switch_call_cause_t,
) -> fs::switch_call_cause_t {
    guard("outgoing_channel", cause_code(HangupCause::Crash), || {
        // SAFETY: FreeSWITCH passes a live A-leg (or null), event and profile for this call.
        let a_leg = unsafe { Session::from_raw(session) };
        let a_leg_uuid = a_leg.map(Session::uuid);
        let _span = tracing::info_span!("call", uuid = a_leg_uuid.as_deref().unwrap_or("")).entered();
        let originate = unsafe { EventHeaders::from_raw(var_event) };
        let Some(profile) = (unsafe { outbound_profile.as_ref() }) else {
            tracing::error!("originate gave no caller profile");
            return cause_code(HangupCause::DestinationOutOfOrder);
        };
        // originate writes "service" where the dial string has no destination.
        let destination = unsafe { copy_c_str(profile.destination_number) }.filter(|d| d != "service");
        let a_leg_channel = a_leg.map(Session::channel);
        let config = admin::config();
        // Tuning comes from the dial string, the A-leg, then wsbridge.conf; never from SIP headers.
        let (options, problems) = CallOptions::from_variables(&|name: &str| {
            originate
                .get(name)
                .or_else(|| a_leg_channel.and_then(|channel| channel.variable(name)))
                .or_else(|| config.value(name))
        });
        for problem in problems {
            tracing::warn!("{problem}");
        }
        let mut raw = RawSettings::gather(
            &originate,
            a_leg_channel.as_ref().map(|c| c as &dyn VariableSource),
            destination.as_deref(),
        );
        raw.default_uri = config.default_uri.clone();
        raw.default_content_type = config.default_content_type.clone();
        raw.max_headers_bytes = options.max_headers_bytes;
        let refuse = |why: String, cause: HangupCause| {
            admin::CALLS_REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!("refusing the call: {why} ({cause})");
            cause_code(cause)
        };
        let settings = match raw.resolve() {
            Ok(settings) => settings,
            Err(error) => return refuse(error.to_string(), error.cause()),
        };
        let shown_uri = crate::security::redact_uri(&settings.uri.text);
        if raw.uri_from_sip_header && !config.allow_sip_header_uri {
            let why = format!("the URI {shown_uri} came from a SIP header, and allow-sip-header-uri is false");
            return refuse(why, HangupCause::OutgoingCallBarred);
        }
        if !crate::security::allows(&config.allowed_hosts, &settings.uri) {
            let why = format!("{}:{} is not in allowed-hosts", settings.uri.host, settings.uri.port);
            return refuse(why, HangupCause::OutgoingCallBarred);
        }
        if let Some(why) = &options.invalid_http_headers {
            return refuse(why.clone(), HangupCause::InvalidIeContents);
        }
        let mut options = options;
        options.session.max_connecting = config.max_connecting;

        let endpoint = ENDPOINT.load(Ordering::Acquire);
        // SAFETY: our endpoint interface; pool and flags are originate's.
        let raw_session = unsafe {
            fs::switch_core_session_request_uuid(
                endpoint,
                fs::switch_call_direction_t::SWITCH_CALL_DIRECTION_OUTBOUND,
                flags,
                pool,
                std::ptr::null(),
            )
        };
        let Some(leg) = (unsafe { Session::from_raw(raw_session) }) else {
            tracing::error!("FreeSWITCH could not create a session");
            return cause_code(HangupCause::DestinationOutOfOrder);
        };
        unsafe {
            *new_session = raw_session;
            fs::switch_core_session_add_stream(raw_session, std::ptr::null_mut());
        }
        let uri_text = shown_uri;
        let call = Box::into_raw(Call::new(settings, options));
        // From here on_destroy owns the call, on failure too.
        unsafe { leg.set_private(call as *mut c_void) };
        let channel = leg.channel();
        channel.set_name(&format!("wsbridge/{uri_text}"));
        // SAFETY: just stored; lives until on_destroy.
        if let Err(why) = unsafe { &*call }.init_media(leg) {
            tracing::error!("refusing the call: {why}");
            unsafe { fs::wsb_session_destroy(new_session) };
            return cause_code(HangupCause::ServiceNotImplemented);
        }
        // SAFETY: clones into the new session's pool.
        let caller_profile = unsafe { fs::switch_caller_profile_clone(raw_session, outbound_profile) };
        if let Some(caller_profile) = unsafe { caller_profile.as_mut() } {
            caller_profile.source = c"mod_wsbridge".as_ptr();
            unsafe {
                fs::switch_channel_set_caller_profile(fs::switch_core_session_get_channel(raw_session), caller_profile)
            };
        }
        channel.set_state(fs::switch_channel_state_t::CS_INIT);
        // Without CF_AUDIO, 1.10's bridge moves no audio for the channel.
        channel.set_flag(fs::switch_channel_flag_t::CF_AUDIO);
        tracing::debug!("new leg {} for {uri_text}", channel.name());
        fs::switch_call_cause_t::SWITCH_CAUSE_SUCCESS
    })
}

/// The UUID is final by now, so the WebSocket task starts here.
unsafe extern "C" fn on_init(session: *mut fs::switch_core_session_t) -> fs::switch_status_t {
    let session = unsafe { Session::from_raw(session) };
    guard_session(session, "on_init", FALSE, || {
        let Some(session) = session else { return FALSE };
        let Some(call) = Call::of(session) else { return FALSE };
        let uuid = session.uuid();
        let channel = session.channel();
        let task = session::run(
            call.settings.clone(),
            call.media.clone(),
            LocatedCall { uuid: uuid.clone() },
            call.options.session.clone(),
        )
        .instrument(tracing::info_span!("call", uuid = uuid.as_str()));
        admin::register(
            &uuid,
            admin::CallEntry {
                uri: crate::security::redact_uri(&call.settings.uri.text),
                media: call.media.clone(),
                started: std::time::Instant::now(),
            },
        );
        if !runtime::spawn(task) {
            tracing::error!(uuid = uuid.as_str(), "mod_wsbridge is shutting down; refusing the call");
            channel.hangup(HangupCause::DestinationOutOfOrder);
            return SUCCESS;
        }
        channel.set_state(fs::switch_channel_state_t::CS_ROUTING);
        SUCCESS
    })
}

unsafe extern "C" fn on_hangup(session: *mut fs::switch_core_session_t) -> fs::switch_status_t {
    let session = unsafe { Session::from_raw(session) };
    guard("on_hangup", SUCCESS, || {
        let Some(session) = session else { return SUCCESS };
        if let Some(call) = Call::of(session) {
            call.media.caller_hung_up();
            if call.media.is_open() {
                // Unless the server closed first, the session is about to send this.
                call.media.record_close(1000, "caller hung up");
            }
            let channel = session.channel();
            for (name, value) in call.media.report() {
                channel.set_variable(name, &value);
            }
        }
        SUCCESS
    })
}

unsafe extern "C" fn on_destroy(session: *mut fs::switch_core_session_t) -> fs::switch_status_t {
    let session = unsafe { Session::from_raw(session) };
    guard("on_destroy", SUCCESS, || {
        let Some(session) = session else { return SUCCESS };
        let call = session.private() as *mut Call;
        if call.is_null() {
            return SUCCESS;
        }
        unsafe { session.set_private(std::ptr::null_mut()) };
        admin::unregister(&session.uuid());
        // SAFETY: created by Box::into_raw in outgoing_channel; the private
        // pointer was its only copy and is now cleared, so this runs once.
        let call = unsafe { Box::from_raw(call) };
        call.media.caller_hung_up();
        call.release_media();
        SUCCESS
    })
}

unsafe extern "C" fn kill_channel(session: *mut fs::switch_core_session_t, signal: i32) -> fs::switch_status_t {
    let session = unsafe { Session::from_raw(session) };
    guard("kill_channel", SUCCESS, || {
        if signal == fs::switch_signal_t::SWITCH_SIG_KILL.0 as i32 {
            if let Some(call) = session.and_then(Call::of) {
                call.media.caller_hung_up();
            }
        }
        SUCCESS
    })
}

unsafe extern "C" fn read_frame(
    session: *mut fs::switch_core_session_t,
    frame: *mut *mut fs::switch_frame_t,
    _flags: fs::switch_io_flag_t,
    _stream_id: i32,
) -> fs::switch_status_t {
    let session = unsafe { Session::from_raw(session) };
    guard_session(session, "read_frame", FALSE, || {
        unsafe { *frame = std::ptr::null_mut() };
        let Some(session) = session else { return FALSE };
        if !session.channel().is_ready() {
            return FALSE;
        }
        let Some(call) = Call::of(session) else { return FALSE };
        let mut read = lock(&call.read);
        let read = &mut *read;
        // SAFETY: initialised in init_media; only this thread uses it.
        unsafe { fs::switch_core_timer_next(&mut read.timer) };
        let is_audio = call.media.next_downlink_frame(&mut read.samples);
        read.mixer.finish_frame(&mut read.samples, is_audio);
        let bytes = (read.samples.len() * 2) as u32;
        read.frame = fs::switch_frame_t {
            codec: call.read_codec.get(),
            data: read.samples.as_mut_ptr() as *mut c_void,
            datalen: bytes,
            buflen: bytes,
            samples: read.samples.len() as u32,
            rate: call.settings.content_type.rate,
            channels: 1,
            flags: if !is_audio && call.options.cng_frames { fs::switch_frame_flag_enum_t::SFF_CNG.0 } else { 0 },
            ..Default::default()
        };
        unsafe { *frame = &mut read.frame };
        SUCCESS
    })
}

unsafe extern "C" fn write_frame(
    session: *mut fs::switch_core_session_t,
    frame: *mut fs::switch_frame_t,
    _flags: fs::switch_io_flag_t,
    _stream_id: i32,
) -> fs::switch_status_t {
    let session = unsafe { Session::from_raw(session) };
    guard_session(session, "write_frame", FALSE, || {
        let Some(call) = session.and_then(Call::of) else { return FALSE };
        let Some(frame) = (unsafe { frame.as_ref() }) else { return SUCCESS };
        if !call.media.is_open() {
            return SUCCESS;
        }
        let frame_bytes = call.settings.content_type.bytes_per_frame();
        let is_cng = frame.flags & fs::switch_frame_flag_enum_t::SFF_CNG.0 != 0;
        let silence;
        let data: &[u8] = if is_cng || frame.data.is_null() || frame.datalen == 0 {
            silence = vec![0u8; frame_bytes];
            &silence
        } else {
            // SAFETY: FreeSWITCH hands us datalen bytes of L16 at our rate.
            unsafe { std::slice::from_raw_parts(frame.data as *const u8, frame.datalen as usize) }
        };
        let mut reframer = lock(&call.uplink_reframer);
        reframer.push(data, |chunk| {
            // FreeSWITCH's L16 is in host order; the wire is little-endian.
            let little_endian = if cfg!(target_endian = "little") {
                Bytes::copy_from_slice(chunk)
            } else {
                chunk.chunks_exact(2).flat_map(|s| i16::from_ne_bytes([s[0], s[1]]).to_le_bytes()).collect()
            };
            if let PushOutcome::DroppedOldest { first_of_episode: true } = call.media.send_audio(little_endian) {
                tracing::warn!(
                    uuid = session.map(Session::uuid).unwrap_or_default().as_str(),
                    "the server is not keeping up; dropping the oldest caller audio"
                );
            }
        });
        SUCCESS
    })
}

unsafe extern "C" fn send_dtmf(
    session: *mut fs::switch_core_session_t,
    dtmf: *const fs::switch_dtmf_t,
) -> fs::switch_status_t {
    let session = unsafe { Session::from_raw(session) };
    guard("send_dtmf", SUCCESS, || {
        let (Some(call), Some(dtmf)) = (session.and_then(Call::of), unsafe { dtmf.as_ref() }) else { return SUCCESS };
        let digit = (dtmf.digit as u8 as char).to_string();
        // FreeSWITCH counts DTMF duration in 8 kHz samples.
        let duration_ms = dtmf.duration / 8;
        let message = format!(" {}", serde_json::json!({ "digit": digit, "duration": duration_ms }));
        if !call.media.send_text(message) {
            tracing::warn!("too many DTMF messages waiting for the server; digit {digit} dropped");
        }
        SUCCESS
    })
}
