//! What crosses the network: the [`connection`] to a server (a
//! [`websocket`], or AudioSocket's TCP) and the [`protocol`] spoken on it.

pub mod connection;
pub mod protocol;
pub mod websocket;
