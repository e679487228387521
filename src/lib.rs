//! mod_wsbridge: a FreeSWITCH endpoint that bridges calls to WebSocket audio
//! servers.
//!
//! Everything but [`freeswitch`] is plain Rust that knows nothing of
//! FreeSWITCH and is tested without it. [`freeswitch`] (built only where
//! FreeSWITCH was found) is the one unsafe layer: the module entry points,
//! the endpoint callbacks and thin wrappers over the C API.

pub mod admin;
pub mod cause;
pub mod comfort_noise;
pub mod config;
pub mod logging;
pub mod media;
pub mod options;
pub mod playout;
pub mod protocol;
pub mod reframe;
pub mod security;
pub mod session;
pub mod settings;
pub mod uplink;
pub mod websocket;

#[cfg(freeswitch)]
pub mod freeswitch;
