//! One call's life: its [`plan`] (from variables to the server it reaches),
//! its [`conversation`] with the server, [`admission`] of calls from the
//! WebSocket side (the client's [`first_message`], its token's
//! [`token_usage`], its address's [`address_guard`]), [`fork_plan`] for streaming a call that is up,
//! [`drain_state`] and the [`api`]'s arguments and output.

pub mod address_guard;
pub mod admission;
pub mod api;
pub mod conversation;
pub mod drain_state;
pub mod first_message;
pub mod fork_plan;
pub mod plan;
pub mod token_usage;
