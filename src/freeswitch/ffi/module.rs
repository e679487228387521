//! The module itself: what FreeSWITCH hands `load` ([`ModuleInterface`]),
//! the [`Module`] trait with its `load` and `shutdown` trampolines and
//! `declare_module!`, dialplan [`Application`]s, [`ApiCommand`]s, the
//! configuration's params and elements ([`config_params`],
//! [`config_elements`]) and ACL lists ([`acl_allows`]).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::NonNull;

use freeswitch_sys as fs;

use super::guard::guard;
use super::{c_string, copy_c_str, Session, FALSE, SUCCESS};

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

unsafe extern "C" fn collect_attribute(context: *mut c_void, place: c_int, name: *const c_char, value: *const c_char) {
    guard("config element", (), || {
        // SAFETY: the Vec passed to wsb_config_elements, alive for the call.
        let elements = unsafe { &mut *(context as *mut Vec<Vec<(String, String)>>) };
        let place = usize::try_from(place).unwrap_or_default();
        while elements.len() <= place {
            elements.push(Vec::new());
        }
        // SAFETY: FreeSWITCH's attribute strings (or null), live for the callback.
        if let (Some(name), Some(value)) = unsafe { (copy_c_str(name), copy_c_str(value)) } {
            elements[place].push((name, value));
        }
    })
}

/// The attributes of each `<section><element .../>` of a configuration, in
/// order, as plain pairs (e.g. `<listen-tokens><token name=... />`); `None`
/// when the configuration is missing.
pub fn config_elements(name: &CStr, section: &CStr, element: &CStr) -> Option<Vec<Vec<(String, String)>>> {
    let mut elements: Vec<Vec<(String, String)>> = Vec::new();
    let context = &mut elements as *mut Vec<Vec<(String, String)>> as *mut c_void;
    // SAFETY: valid C strings; the callback only touches `elements`, which outlives the call.
    let found = unsafe {
        fs::wsb_config_elements(name.as_ptr(), section.as_ptr(), element.as_ptr(), Some(collect_attribute), context)
    };
    (found == 0).then_some(elements)
}

/// Whether `ip` (an address as text, IPv6 without brackets) is in the ACL
/// list `list` of acl.conf (or, as FreeSWITCH reads a name with a `/`, in
/// those CIDRs). A list FreeSWITCH does not know holds no address.
pub fn acl_allows(ip: &str, list: &str) -> bool {
    let (ip, list) = (c_string(ip), c_string(list));
    // SAFETY: valid C strings; FreeSWITCH only reads them, under its own lock.
    unsafe { fs::wsb_check_network_list_ip(ip.as_ptr(), list.as_ptr()) == 1 }
}

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
    pub(super) fn create_interface<T>(&self, kind: fs::switch_module_interface_name_t) -> Result<NonNull<T>, String> {
        // SAFETY: our module interface; FreeSWITCH allocates the interface from the module's pool.
        let raw = unsafe { fs::switch_loadable_module_create_interface(self.raw, kind) } as *mut T;
        NonNull::new(raw).ok_or_else(|| format!("FreeSWITCH could not create a {kind:?}"))
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
}

/// A FreeSWITCH module: what it declares at load and how it stops.
pub trait Module {
    const NAME: &'static CStr;
    fn load(interface: &ModuleInterface) -> Result<(), String>;
    /// True when nothing of the module is running any more, so it may be unloaded.
    fn shutdown() -> bool;
}

/// The module's `load`, for `declare_module!`.
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

/// The module's `shutdown`, for `declare_module!`.
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
                load: Some($crate::freeswitch::ffi::module::load::<$module>),
                shutdown: Some($crate::freeswitch::ffi::module::shutdown::<$module>),
                runtime: None,
                flags: freeswitch_sys::switch_module_flag_enum_t::SMODF_NONE.0 as freeswitch_sys::switch_module_flag_t,
            };
    };
}
pub(crate) use declare_module;
