//! The `wsbridge.conf` in force: read at load, on `reloadxml` and on
//! `reload mod_wsbridge`. New calls read it; calls up keep what they planned with.

use std::sync::{Arc, RwLock};

use super::ffi::{self, EventKind, EventListener};
use crate::diagnostics::logging;
use crate::settings::ModuleConfig;

static CONFIG: RwLock<Option<Arc<ModuleConfig>>> = RwLock::new(None);

/// The settings in force.
pub fn config() -> Arc<ModuleConfig> {
    CONFIG.read().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default()
}

/// (Re)reads `wsbridge.conf`; a missing file means built-in defaults.
pub fn load() {
    let params = ffi::config_params(c"wsbridge.conf").unwrap_or_else(|| {
        tracing::info!("no wsbridge.conf; using built-in defaults");
        Vec::new()
    });
    let (config, problems) = ModuleConfig::from_params(&params);
    for problem in problems {
        tracing::warn!("wsbridge.conf: {problem}");
    }
    logging::set_debug(config.debug);
    crate::wire::websocket::clear_tls_cache();
    tracing::info!("wsbridge.conf: {} settings loaded", params.len());
    let drain = config.drain;
    *CONFIG.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(config));
    super::drain::follow_config(drain);
}

/// Re-reads the file on `reloadxml`.
pub struct OnReloadXml;

impl EventListener for OnReloadXml {
    const EVENT: EventKind = EventKind::ReloadXml;

    fn on_event() {
        load();
    }
}
