//! mod_wsbridge: a FreeSWITCH endpoint that bridges calls to WebSocket audio
//! servers.
//!
//! Everything but [`freeswitch`] is plain Rust that knows nothing of
//! FreeSWITCH and is tested without it:
//! - [`settings`]: every setting, with one table of defaults;
//! - [`call_plan`]: from a call's variables to the server it reaches, or a refusal;
//! - [`drain`]: taking a node out of rotation;
//! - [`session`]: one call's conversation with its server, over a [`connection`]
//!   (a [`websocket`], or AudioSocket's TCP), in the call's [`protocol`];
//! - [`media`]: what a call's FreeSWITCH thread and its task share:
//!   [`playout`], [`uplink`], [`reframe`], [`comfort_noise`];
//! - [`inbound`]: calls from the WebSocket side, admitted before a channel exists;
//! - [`protocol`]: what is said on the wire (wsbridge, Twilio, Vonage,
//!   AudioSocket); [`command`]: the API's arguments.
//!
//! [`freeswitch`] (built only where FreeSWITCH was found) holds the module's
//! entry points and the endpoint; its `ffi` module is the one place with
//! unsafe code.

pub mod audio;
pub mod call;
pub mod diagnostics;
pub mod settings;
pub mod wire;

#[cfg(freeswitch)]
pub mod freeswitch;
