//! The FreeSWITCH side of the module: entry points, the endpoint and the
//! thin wrappers over the C API. Built only where FreeSWITCH was found.

mod admin;
pub mod api;
mod endpoint;
mod guard;
mod runtime;

use std::sync::atomic::Ordering;
use std::time::Duration;

use freeswitch_sys as fs;
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

use crate::logging::{LogSink, SinkLayer};
use guard::guard;

const SUCCESS: fs::switch_status_t = fs::switch_status_t::SWITCH_STATUS_SUCCESS;

type ApiFunction = unsafe extern "C" fn(
    *const std::ffi::c_char,
    *mut fs::switch_core_session_t,
    *mut fs::switch_stream_handle_t,
) -> fs::switch_status_t;

/// The symbol FreeSWITCH looks up after loading `mod_wsbridge.so`.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mod_wsbridge_module_interface: fs::switch_loadable_module_function_table_t =
    fs::switch_loadable_module_function_table_t {
        switch_api_version: fs::SWITCH_API_VERSION as i32,
        load: Some(load),
        shutdown: Some(shutdown),
        runtime: None,
        flags: fs::switch_module_flag_enum_t::SMODF_NONE.0 as fs::switch_module_flag_t,
    };

struct FreeSwitchLog;

impl LogSink for FreeSwitchLog {
    fn log(&self, level: Level, uuid: Option<&str>, text: &str) {
        let level = match level {
            Level::ERROR => fs::switch_log_level_t::SWITCH_LOG_ERROR,
            Level::WARN => fs::switch_log_level_t::SWITCH_LOG_WARNING,
            Level::INFO => fs::switch_log_level_t::SWITCH_LOG_INFO,
            _ => fs::switch_log_level_t::SWITCH_LOG_DEBUG,
        };
        api::log(level, uuid, text);
    }
}

fn install_logging() {
    let subscriber = tracing_subscriber::registry().with(SinkLayer::new(FreeSwitchLog));
    // Already set when FreeSWITCH kept the library mapped across a reload: the old one still works.
    let _ = tracing::subscriber::set_global_default(subscriber);
    std::panic::set_hook(Box::new(|info| tracing::error!("{info}")));
}

unsafe extern "C" fn load(
    module_interface: *mut *mut fs::switch_loadable_module_interface_t,
    pool: *mut fs::switch_memory_pool_t,
) -> fs::switch_status_t {
    guard("load", fs::switch_status_t::SWITCH_STATUS_FALSE, || {
        install_logging();
        admin::load_config();
        let threads = admin::config().runtime_threads;
        if let Err(error) = runtime::start(threads) {
            tracing::error!("cannot start the WebSocket runtime: {error}");
            return fs::switch_status_t::SWITCH_STATUS_FALSE;
        }
        admin::reserve_event_subclasses();
        // SAFETY: FreeSWITCH hands us the slot and the module's pool.
        unsafe {
            *module_interface = fs::switch_loadable_module_create_module_interface(pool, c"mod_wsbridge".as_ptr());
            let endpoint = fs::switch_loadable_module_create_interface(
                *module_interface,
                fs::switch_module_interface_name_t::SWITCH_ENDPOINT_INTERFACE,
            ) as *mut fs::switch_endpoint_interface_t;
            (*endpoint).interface_name = c"wsbridge".as_ptr();
            (*endpoint).io_routines = endpoint::IO_ROUTINES.as_ptr();
            (*endpoint).state_handler = endpoint::STATE_HANDLERS.as_ptr();
            endpoint::ENDPOINT.store(endpoint, Ordering::Release);
            for (name, description, function) in [
                (c"wsbridge", c"mod_wsbridge status and control", admin::api_wsbridge as ApiFunction),
                (c"wsbridge_debug", c"mod_wsbridge debug logging (the original's command)", admin::api_wsbridge_debug),
            ] {
                let api = fs::switch_loadable_module_create_interface(
                    *module_interface,
                    fs::switch_module_interface_name_t::SWITCH_API_INTERFACE,
                ) as *mut fs::switch_api_interface_t;
                (*api).interface_name = name.as_ptr();
                (*api).desc = description.as_ptr();
                (*api).syntax = c"status | list [json] | kill <uuid> [cause] | debug on|off".as_ptr();
                (*api).function = Some(function);
            }
            fs::switch_event_bind(
                c"mod_wsbridge".as_ptr(),
                fs::switch_event_types_t::SWITCH_EVENT_RELOADXML,
                std::ptr::null(),
                Some(admin::on_reloadxml),
                std::ptr::null_mut(),
            );
        }
        tracing::info!("mod_wsbridge {} loaded; {threads} runtime thread(s)", env!("CARGO_PKG_VERSION"));
        SUCCESS
    })
}

unsafe extern "C" fn shutdown() -> fs::switch_status_t {
    guard("shutdown", fs::switch_status_t::SWITCH_STATUS_NOUNLOAD, || {
        endpoint::ENDPOINT.store(std::ptr::null_mut(), Ordering::Release);
        // SAFETY: bound at load.
        unsafe { fs::switch_event_unbind_callback(Some(admin::on_reloadxml)) };
        admin::free_event_subclasses();
        if runtime::stop(Duration::from_secs(2)) {
            tracing::info!("mod_wsbridge stopped");
            SUCCESS
        } else {
            tracing::warn!("WebSocket threads are still running; mod_wsbridge stays in memory");
            fs::switch_status_t::SWITCH_STATUS_NOUNLOAD
        }
    })
}
