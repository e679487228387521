//! Legs of the module's endpoint: the endpoint type and its interface, as
//! registered at load (`register_endpoint`); the outbound leg originate
//! asks for ([`OutgoingRequest`], [`NewLeg`]); the inbound leg of a call from
//! the WebSocket side ([`start_inbound`]).
//!
//! One endpoint type per module: the first type registered is the only one
//! ever registered (again, when the module is loaded anew), a different one
//! is refused (`one_endpoint_type`). Every request is typed by the
//! endpoint type and gets the interface only through `interface_of`, which
//! checks that type; so a leg of the interface always holds the state of the
//! type its callbacks were made for (see [`super::endpoint_interface`]).

use std::any::TypeId;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Mutex;

use freeswitch_sys as fs;

use super::{c_string, copy_c_str, ChannelState, Session, Variables, SUCCESS};
use crate::freeswitch::lock;
use crate::settings::cause::HangupCause;

// ---------------------------------------------------------------- registration

/// An endpoint type, as the registration tells types apart (and names them in a refusal).
#[derive(Debug, Clone, Copy)]
pub(super) struct EndpointType {
    id: TypeId,
    name: &'static str,
}

impl EndpointType {
    pub(super) fn of<E: 'static>() -> EndpointType {
        EndpointType { id: TypeId::of::<E>(), name: std::any::type_name::<E>() }
    }
}

/// The rule: one endpoint type per module. Registering the type registered
/// already is fine (a reload); any other type is refused.
fn one_endpoint_type(registered: Option<EndpointType>, asked: EndpointType) -> Result<(), String> {
    match registered {
        Some(registered) if registered.id != asked.id => Err(format!(
            "one endpoint type per module: {} is registered, so {} is refused",
            registered.name, asked.name
        )),
        _ => Ok(()),
    }
}

/// The endpoint type and, until it is retired, the interface made for it.
struct Registration<P> {
    endpoint_type: Option<EndpointType>,
    interface: Option<P>,
}

impl<P: Copy> Registration<P> {
    const fn new() -> Self {
        Registration { endpoint_type: None, interface: None }
    }

    /// Makes and records `asked`'s interface, unless [`one_endpoint_type`]
    /// refuses the type: then `make` is not called.
    fn register(&mut self, asked: EndpointType, make: impl FnOnce() -> Result<P, String>) -> Result<(), String> {
        one_endpoint_type(self.endpoint_type, asked)?;
        let interface = make()?;
        self.endpoint_type = Some(asked);
        self.interface = Some(interface);
        Ok(())
    }

    /// The interface for `asked`: none for any other type, nor once retired.
    fn interface_for(&self, asked: EndpointType) -> Option<P> {
        let registered = self.endpoint_type.is_some_and(|registered| registered.id == asked.id);
        self.interface.filter(|_| registered)
    }

    fn retire(&mut self) {
        self.interface = None;
    }
}

/// The endpoint interface FreeSWITCH created for us at load.
#[derive(Clone, Copy)]
pub(super) struct InterfacePtr(pub(super) NonNull<fs::switch_endpoint_interface_t>);

// SAFETY: FreeSWITCH's interface, live while the module is loaded; Rust only
// hands the pointer back to FreeSWITCH, which locks the interface itself.
unsafe impl Send for InterfacePtr {}

static REGISTERED: Mutex<Registration<InterfacePtr>> = Mutex::new(Registration::new());

/// Registers the endpoint type `asked` with the interface `make` creates;
/// `make` runs only for a type [`one_endpoint_type`] accepts.
pub(super) fn register_endpoint(
    asked: EndpointType,
    make: impl FnOnce() -> Result<InterfacePtr, String>,
) -> Result<(), String> {
    lock(&REGISTERED).register(asked, make)
}

/// Stops routing new calls to the endpoint (calls up keep their callbacks).
pub fn retire_endpoint() {
    lock(&REGISTERED).retire();
}

/// The interface registered for `E`, if `E` is the endpoint type and not retired.
fn interface_of<E: 'static>() -> Option<*mut fs::switch_endpoint_interface_t> {
    lock(&REGISTERED).interface_for(EndpointType::of::<E>()).map(|interface| interface.0.as_ptr())
}

/// Stores `call` as the state of a new leg of `E`'s interface; on_destroy frees it.
fn attach<E: 'static>(session: Session<'_>, call: Box<E>) {
    let call = Box::into_raw(call) as *mut c_void;
    // SAFETY: live session of the interface registered for `E` (see interface_of),
    // whose callbacks read this pointer as an `E`.
    unsafe {
        fs::switch_core_session_set_private_class(session.as_ptr(), call, fs::switch_pvt_class_t::SWITCH_PVT_PRIMARY)
    };
}

// ---------------------------------------------------------------- outbound legs

/// What outgoing_channel was handed, for the endpoint type `E`.
pub struct OutgoingRequest<'a, E> {
    a_leg: Option<Session<'a>>,
    variables: Variables<'a>,
    profile: NonNull<fs::switch_caller_profile_t>,
    new_session: *mut *mut fs::switch_core_session_t,
    pool: *mut *mut fs::switch_memory_pool_t,
    flags: fs::switch_originate_flag_t,
    endpoint: PhantomData<fn() -> E>,
}

impl<'a, E: 'static> OutgoingRequest<'a, E> {
    /// # Safety
    /// The profile and the out-parameters are originate's, live for `'a`.
    pub(super) unsafe fn new(
        a_leg: Option<Session<'a>>,
        variables: Variables<'a>,
        profile: NonNull<fs::switch_caller_profile_t>,
        new_session: *mut *mut fs::switch_core_session_t,
        pool: *mut *mut fs::switch_memory_pool_t,
        flags: fs::switch_originate_flag_t,
    ) -> Self {
        OutgoingRequest { a_leg, variables, profile, new_session, pool, flags, endpoint: PhantomData }
    }

    pub fn a_leg(&self) -> Option<Session<'a>> {
        self.a_leg
    }

    pub fn variables(&self) -> Variables<'a> {
        self.variables
    }

    /// The caller profile's destination number, as originate wrote it.
    pub fn destination(&self) -> Option<String> {
        // SAFETY: the profile is originate's, live for the callback.
        unsafe { copy_c_str(self.profile.as_ref().destination_number) }
    }

    /// Requests the outbound leg, already handed to originate.
    pub fn request_leg(&self) -> Result<NewLeg<'a, E>, HangupCause> {
        let endpoint = interface_of::<E>().ok_or(HangupCause::DestinationOutOfOrder)?;
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
        Ok(NewLeg { session, new_session: self.new_session, profile: self.profile, endpoint: PhantomData })
    }
}

/// The leg outgoing_channel is building, of the endpoint type `E`.
pub struct NewLeg<'a, E> {
    session: Session<'a>,
    new_session: *mut *mut fs::switch_core_session_t,
    profile: NonNull<fs::switch_caller_profile_t>,
    endpoint: PhantomData<fn() -> E>,
}

impl<'a, E: 'static> NewLeg<'a, E> {
    pub fn session(&self) -> Session<'a> {
        self.session
    }

    /// Hands the leg its call state; on_destroy frees it from now on.
    pub fn attach(&self, call: Box<E>) {
        attach(self.session, call);
    }

    /// Gives the leg a copy of originate's caller profile, marked as ours.
    pub fn adopt_caller_profile(&self) {
        // SAFETY: clones originate's profile into the new session's pool.
        let profile = unsafe { fs::switch_caller_profile_clone(self.session.as_ptr(), self.profile.as_ptr()) };
        // SAFETY: null or the clone, owned by the new session's pool.
        if let Some(profile) = unsafe { profile.as_mut() } {
            profile.source = c"mod_wsbridge".as_ptr();
            // SAFETY: live channel; the profile lives in the session's pool.
            unsafe { fs::switch_channel_set_caller_profile(self.session.channel().as_ptr(), profile) };
        }
    }

    /// Destroys the half-built leg; its on_destroy frees the call, if attached.
    pub fn destroy(self) {
        // SAFETY: the session we created and nobody else holds; this nulls originate's pointer.
        unsafe { fs::wsb_session_destroy(self.new_session) };
    }
}

// ---------------------------------------------------------------- inbound legs

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

/// Creates an inbound leg of the endpoint `E` with `build`'s state, a caller
/// profile in the XML dialplan, and its session thread, as mod_loopback's B
/// side and mod_verto do. Returns the leg's UUID; from then on the leg is
/// FreeSWITCH's, reached only through [`super::LocatedSession`].
pub fn start_inbound<E: 'static>(
    request: &InboundRequest<'_>,
    build: impl FnOnce(Session<'_>) -> Result<E, String>,
) -> Result<String, String> {
    let endpoint = interface_of::<E>().ok_or("mod_wsbridge is unloading")?;
    let leg = Unlaunched::request(endpoint)?;
    let session = leg.session();
    attach(session, Box::new(build(session)?));
    enter_dialplan(session, request)?;
    let uuid = session.uuid();
    leg.launch()?;
    Ok(uuid)
}

/// Names the inbound leg, gives it its caller profile and variables, and
/// readies it for the dialplan.
fn enter_dialplan(session: Session<'_>, request: &InboundRequest<'_>) -> Result<(), String> {
    let channel = session.channel();
    channel.set_name(request.channel_name);
    let (context, destination, name, number, address) = (
        c_string(request.context),
        c_string(request.destination),
        c_string(request.caller_id_name),
        c_string(request.caller_id_number),
        c_string(request.network_address),
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
        return Err("FreeSWITCH could not create a caller profile".into());
    }
    // SAFETY: live channel; the profile lives in the session's pool.
    unsafe { fs::switch_channel_set_caller_profile(channel.as_ptr(), profile) };
    for (name, value) in request.variables {
        channel.set_variable(name, value);
    }
    channel.set_audio_flag();
    channel.set_state(ChannelState::Init);
    Ok(())
}

/// An inbound session made here and not yet handed to its thread: only this
/// code holds it, and dropping it destroys it (on_destroy frees the state
/// attached, if any).
struct Unlaunched(NonNull<fs::switch_core_session_t>);

impl Unlaunched {
    fn request(endpoint: *mut fs::switch_endpoint_interface_t) -> Result<Unlaunched, String> {
        // SAFETY: our endpoint interface; a null pool makes FreeSWITCH create the session's own.
        let raw = unsafe {
            fs::switch_core_session_request_uuid(
                endpoint,
                fs::switch_call_direction_t::SWITCH_CALL_DIRECTION_INBOUND,
                fs::switch_originate_flag_enum_t::SOF_NONE.0 as fs::switch_originate_flag_t,
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        let raw = NonNull::new(raw).ok_or("FreeSWITCH could not create a session (max-sessions?)")?;
        // SAFETY: the new session has one stream like any leg.
        unsafe { fs::switch_core_session_add_stream(raw.as_ptr(), std::ptr::null_mut()) };
        Ok(Unlaunched(raw))
    }

    fn session(&self) -> Session<'_> {
        // SAFETY: live until dropped or launched, both of which take self.
        unsafe { Session::from_non_null(self.0) }
    }

    /// Starts the session's thread, which owns the session from then on.
    /// When it cannot start, the session is destroyed.
    fn launch(self) -> Result<(), String> {
        // SAFETY: a complete session; once its thread runs, the thread owns it.
        if unsafe { fs::switch_core_session_thread_launch(self.0.as_ptr()) } != SUCCESS {
            return Err("FreeSWITCH could not start the session's thread".into());
        }
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for Unlaunched {
    fn drop(&mut self) {
        let mut raw = self.0.as_ptr();
        // SAFETY: not launched, so the session is ours alone; nothing else points at it.
        unsafe { fs::wsb_session_destroy(&mut raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct First;
    struct Second;

    #[test]
    fn one_endpoint_type_per_module() {
        let mut registration: Registration<u32> = Registration::new();
        let (first, second) = (EndpointType::of::<First>(), EndpointType::of::<Second>());
        assert_eq!(registration.register(first, || Ok(1)), Ok(()));
        assert_eq!(registration.interface_for(first), Some(1));

        let mut made = false;
        let refused = registration.register(second, || {
            made = true;
            Ok(2)
        });
        let why = refused.unwrap_err();
        assert!(why.contains("one endpoint type per module"), "{why}");
        assert!(!made, "no interface is made for a refused type");
        assert_eq!(registration.interface_for(second), None, "a second type never gets the interface");
        assert_eq!(registration.interface_for(first), Some(1), "the first type keeps it");

        registration.retire();
        assert_eq!(registration.interface_for(first), None, "retired: no new legs");
        assert!(registration.register(second, || Ok(2)).is_err(), "still refused once retired");
        assert_eq!(registration.register(first, || Ok(3)), Ok(()), "the same type again, as on a reload");
        assert_eq!(registration.interface_for(first), Some(3));
    }

    #[test]
    fn the_rule_is_pure() {
        let (first, second) = (EndpointType::of::<First>(), EndpointType::of::<Second>());
        assert!(one_endpoint_type(None, first).is_ok());
        assert!(one_endpoint_type(Some(first), first).is_ok());
        assert!(one_endpoint_type(Some(first), second).is_err());
    }
}
