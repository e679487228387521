//! FreeSWITCH's event bus: the events the module listens to ([`EventKind`],
//! [`EventListener`], bound with [`ModuleInterface::bind`]) and the CUSTOM
//! events it fires ([`fire_custom_event`]) under subclasses it reserves.

use std::ffi::{c_char, c_int, CStr, CString};

use freeswitch_sys as fs;

use super::guard::guard;
use super::{c_string, ModuleInterface, Session, SUCCESS};

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

impl ModuleInterface {
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
