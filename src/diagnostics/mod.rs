//! What the module tells about itself: [`logging`] into FreeSWITCH's log,
//! and [`poll_watch`], the runtime's heartbeat and slow polls.

pub mod logging;
pub mod poll_watch;
