//! What every room leans on: [`logging`] into FreeSWITCH's log,
//! [`poll_watch`] (the runtime's heartbeat and slow polls), and [`sync`]'s
//! locks that outlive a panic.

pub mod logging;
pub mod poll_watch;
pub mod sync;
