//! Reading `wsbridge.conf` anew (at load and on `reloadxml`) and applying
//! what takes effect at once: debug logging, the TLS settings cached for new
//! connections, and the `drain` param. What is read only at load (the
//! runtime's threads and batch, the listener) waits for `reload mod_wsbridge`.

use std::sync::Arc;

use super::ffi::{EventKind, EventListener};
use super::{config_store, drain};
use crate::settings::ModuleConfig;
use crate::support::logging;

/// Reads `wsbridge.conf`, puts it in force and applies it; returns it.
pub fn read_and_apply() -> Arc<ModuleConfig> {
    let config = config_store::load();
    logging::set_debug(config.debug);
    crate::wire::websocket::clear_tls_cache();
    drain::follow_config(config.drain);
    config
}

/// Re-reads the file on `reloadxml`.
pub struct OnReloadXml;

impl EventListener for OnReloadXml {
    const EVENT: EventKind = EventKind::ReloadXml;

    fn on_event() {
        read_and_apply();
    }
}
