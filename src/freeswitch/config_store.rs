//! The `wsbridge.conf` in force: read at load, on `reloadxml` and on
//! `reload mod_wsbridge` (see [`super::reload`]). New calls read it; calls up
//! keep what they planned with.

use std::sync::{Arc, RwLock};

use super::ffi;
use crate::settings::ModuleConfig;

static CONFIG: RwLock<Option<Arc<ModuleConfig>>> = RwLock::new(None);

/// The settings in force.
pub fn config() -> Arc<ModuleConfig> {
    crate::support::sync::read(&CONFIG).clone().unwrap_or_default()
}

/// (Re)reads `wsbridge.conf`, a missing file meaning built-in defaults, and
/// puts it in force; returns it.
pub fn load() -> Arc<ModuleConfig> {
    let params = ffi::config_params(c"wsbridge.conf").unwrap_or_else(|| {
        tracing::info!("no wsbridge.conf; using built-in defaults");
        Vec::new()
    });
    let tokens = ffi::config_elements(c"wsbridge.conf", c"listen-tokens", c"token").unwrap_or_default();
    let (config, problems) = ModuleConfig::from_file(&params, &tokens);
    for problem in problems {
        tracing::warn!("wsbridge.conf: {problem}");
    }
    tracing::info!(
        "wsbridge.conf: {} settings loaded, {} listener token(s)",
        params.len(),
        config.listener.tokens.len()
    );
    let config = Arc::new(config);
    *crate::support::sync::write(&CONFIG) = Some(config.clone());
    config
}
