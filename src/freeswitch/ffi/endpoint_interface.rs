//! The endpoint interface: the [`Endpoint`] trait a leg's state implements,
//! the io routines and state handlers FreeSWITCH calls on its legs
//! (trampolines over the trait, in tables of their own per endpoint type),
//! and [`ModuleInterface::add_endpoint`], which declares them.
//!
//! A leg's state is stored in its session as a raw pointer and read back by
//! the trampolines as the endpoint type they were made for (`private_of`).
//! That cast is sound because an interface's tables are its own type's
//! (`Tables`) and because every leg of the interface gets that type's state:
//! legs are made by [`OutgoingRequest::request_leg`] and [`super::start_inbound`],
//! both typed by the endpoint type and asking the registration for its
//! interface by type ([`super::leg_request`]), which holds one endpoint type
//! per module.

use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::ptr::NonNull;

use freeswitch_sys as fs;

use super::guard::{guard, guard_session};
use super::leg_request::{register_endpoint, EndpointType, InterfacePtr, OutgoingRequest};
use super::{cause_code, status, ModuleInterface, PublishedFrame, Session, Variables, FALSE, SUCCESS};
use crate::settings::cause::HangupCause;

/// A leg's per-call state and the callbacks FreeSWITCH makes on it. The
/// state is owned by the session from [`super::NewLeg::attach`] (or
/// [`start_inbound`](super::start_inbound)) until on_destroy.
pub trait Endpoint: Send + Sync + Sized + 'static {
    /// outgoing_channel: decide the call and build its leg, or refuse it.
    fn outgoing(request: &OutgoingRequest<'_, Self>) -> Result<(), HangupCause>;
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

/// A frame FreeSWITCH writes to the leg: host-order L16 at the call's rate.
pub struct WrittenFrame<'a> {
    /// Empty for comfort noise or a frame without data.
    pub pcm: &'a [u8],
    pub comfort_noise: bool,
}

impl ModuleInterface {
    /// Declares the endpoint `name` with `E`'s callbacks. A module has one
    /// endpoint type: declaring a second, different one is refused (see
    /// [`super::leg_request`]), before FreeSWITCH sees any interface for it.
    pub fn add_endpoint<E: Endpoint>(&self, name: &'static CStr) -> Result<(), String> {
        register_endpoint(EndpointType::of::<E>(), || {
            let mut endpoint: NonNull<fs::switch_endpoint_interface_t> =
                self.create_interface(fs::switch_module_interface_name_t::SWITCH_ENDPOINT_INTERFACE)?;
            // SAFETY: just created for us and not yet seen by FreeSWITCH's callers.
            let interface = unsafe { endpoint.as_mut() };
            interface.interface_name = name.as_ptr();
            interface.io_routines = Tables::<E>::io_routines();
            interface.state_handler = Tables::<E>::state_handlers();
            Ok(InterfacePtr(endpoint))
        })
    }
}

/// The io routines and state handlers of the endpoint type `E`: constants,
/// so each type has its own pair, promoted to statics that live as long as
/// the module's code. FreeSWITCH only reads them (it never writes through
/// an interface's `io_routines` or `state_handler`).
struct Tables<E>(PhantomData<E>);

impl<E: Endpoint> Tables<E> {
    const IO_ROUTINES: &'static fs::switch_io_routines_t = &fs::switch_io_routines_t {
        outgoing_channel: Some(outgoing_channel::<E>),
        read_frame: Some(read_frame::<E>),
        write_frame: Some(write_frame::<E>),
        kill_channel: Some(kill_channel::<E>),
        send_dtmf: Some(send_dtmf::<E>),
        receive_message: Some(receive_message::<E>),
        // SAFETY: all zeroes is a valid table: every other routine None, the padding null.
        ..unsafe { std::mem::zeroed() }
    };

    const STATE_HANDLERS: &'static fs::switch_state_handler_table_t = &fs::switch_state_handler_table_t {
        on_init: Some(on_init::<E>),
        on_hangup: Some(on_hangup::<E>),
        on_destroy: Some(on_destroy::<E>),
        // SAFETY: all zeroes is a valid table: every other handler None, no flags, the padding null.
        ..unsafe { std::mem::zeroed() }
    };

    /// For the interface's `io_routines`, which C declares mutable; FreeSWITCH only reads it.
    fn io_routines() -> *mut fs::switch_io_routines_t {
        Self::IO_ROUTINES as *const fs::switch_io_routines_t as *mut fs::switch_io_routines_t
    }

    /// For the interface's `state_handler`, which C declares mutable; FreeSWITCH only reads it.
    fn state_handlers() -> *mut fs::switch_state_handler_table_t {
        Self::STATE_HANDLERS as *const fs::switch_state_handler_table_t as *mut fs::switch_state_handler_table_t
    }
}

/// The state of a session of `E`'s interface, if it still has one.
fn private_of<'s, E: Endpoint>(session: Session<'s>) -> Option<&'s E> {
    // SAFETY: only sessions of an interface with `Tables<E>` reach `E`'s
    // trampolines, and every such session's private pointer is an `E` (see
    // the module's docs) from attach until on_destroy clears it.
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
        let Some(profile) = NonNull::new(outbound_profile) else {
            tracing::error!("originate gave no caller profile");
            return cause_code(HangupCause::DestinationOutOfOrder);
        };
        // SAFETY: originate's A-leg (or null), variables (or null), profile
        // and out-parameters, all live for the callback.
        let request = unsafe {
            OutgoingRequest::new(
                Session::from_raw(session),
                Variables::from_raw(var_event),
                profile,
                new_session,
                pool,
                flags,
            )
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
        // SAFETY: made by Box::into_raw in attach; the private pointer was its only copy.
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
        unsafe { *frame = published.as_ptr() };
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
