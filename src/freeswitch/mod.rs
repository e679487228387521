//! The FreeSWITCH side of the module, built only where FreeSWITCH was found.
//!
//! [`ffi`] is the one unsafe layer (and where panics stop); everything else
//! here is safe Rust:
//! - this file: what the module declares at load and undoes at shutdown;
//! - [`endpoint`]: the `wsbridge` leg of each call; [`listener`]: calls from the WebSocket side;
//! - [`fork`]: streaming a call that is up, one [`fork_stream`] per fork;
//! - [`registry`]: everything that runs on a channel, and the counters; [`commands`]: the API;
//! - [`config_store`]: wsbridge.conf in force; [`reload`]: reading it anew and applying it;
//! - [`drain`]: taking the node out of rotation; [`events`]: CUSTOM events;
//! - [`runtime`]: the tokio runtime all calls share.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod commands;
mod config_store;
mod drain;
mod endpoint;
mod events;
#[allow(unsafe_code)] // the one unsafe layer
pub mod ffi;
mod fork;
mod fork_stream;
mod listener;
mod registry;
mod reload;
mod runtime;

use std::ffi::CStr;
use std::time::Duration;

use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::logging::{LogSink, SinkLayer};
use ffi::{LogLevel, Module, ModuleInterface};

ffi::declare_module!(mod_wsbridge_module_interface, Wsbridge);

pub(crate) use crate::support::sync::lock;

/// Sends the module's `tracing` lines to FreeSWITCH's log.
struct FreeSwitchLog;

impl LogSink for FreeSwitchLog {
    fn log(&self, level: Level, uuid: Option<&str>, file: &str, line: u32, text: &str) {
        let level = match level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warning,
            Level::INFO => LogLevel::Info,
            _ => LogLevel::Debug,
        };
        ffi::log(level, uuid, file, line, text);
    }
}

fn install_logging() {
    let subscriber = tracing_subscriber::registry().with(SinkLayer::new(FreeSwitchLog));
    // Already set when FreeSWITCH kept the library mapped across a reload: the old one still works.
    let _ = tracing::subscriber::set_global_default(subscriber);
    std::panic::set_hook(Box::new(|info| tracing::error!("{info}")));
}

struct Wsbridge;

impl Module for Wsbridge {
    const NAME: &'static CStr = c"mod_wsbridge";

    fn load(interface: &ModuleInterface) -> Result<(), String> {
        install_logging();
        let config = reload::read_and_apply();
        let threads = config.runtime_threads;
        runtime::start(&config).map_err(|error| format!("cannot start the WebSocket runtime: {error}"))?;
        events::reserve_subclasses()?;
        interface.add_endpoint::<endpoint::WsbridgeCall>(c"wsbridge")?;
        interface.add_api::<commands::Wsbridge>()?;
        interface.add_api::<commands::WsbridgeDebug>()?;
        interface.add_api::<commands::UuidWsbridgeFunctionResult>()?;
        interface.add_api::<fork::UuidWsbridgeFork>()?;
        interface.add_application::<fork::WsbridgeForkApp>()?;
        interface.bind::<reload::OnReloadXml>(Self::NAME)?;
        interface.bind::<drain::OnShutdownRequested>(Self::NAME)?;
        listener::start(&config.listener);
        tracing::info!("mod_wsbridge {} loaded; {threads} runtime thread(s)", env!("CARGO_PKG_VERSION"));
        Ok(())
    }

    fn shutdown() -> bool {
        listener::stop();
        ffi::retire_endpoint();
        ffi::unbind::<reload::OnReloadXml>();
        ffi::unbind::<drain::OnShutdownRequested>();
        events::free_subclasses();
        let stopped = runtime::stop(Duration::from_secs(2));
        if stopped {
            tracing::info!("mod_wsbridge stopped");
        } else {
            tracing::warn!("WebSocket threads are still running; mod_wsbridge stays in memory");
        }
        stopped
    }
}
