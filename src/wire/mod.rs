//! What crosses the network: the [`connection`] to a server (a
//! [`websocket`], or AudioSocket's TCP) and the [`protocol`] spoken on it.
//!
//! A WebSocket is opened by [`websocket::connect`] through `tcp`, `tls`
//! (its verifiers in `tls_trust`, its failures told in `tls_errors`) and
//! the HTTP `upgrade`; `tls_tests` try wss end to end. A listener's
//! client is read through a [`read_budget`] until its first message is in.

pub mod connection;
pub mod direct;
pub mod frame;
pub mod protocol;
pub mod reactor;
pub mod read_budget;
mod shared_tcp;
mod tcp;
mod tls;
mod tls_errors;
#[cfg(test)]
mod tls_tests;
mod tls_trust;
mod upgrade;
pub mod websocket;
