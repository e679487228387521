//! The one place panics are stopped before they reach FreeSWITCH. Every
//! `extern "C"` entry point of the module is a trampoline of this module
//! that runs its body through [`guard`] (or [`guard_session`]).

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::session::Channel;
use crate::settings::cause::HangupCause;
use crate::support::logging::describe_panic;

/// Runs `body`; a panic is logged and becomes `failed`.
pub(super) fn guard<R>(callback: &str, failed: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let why = describe_panic(payload.as_ref());
            // Logging could panic too (allocation); never let that escape.
            let _ = catch_unwind(|| tracing::error!("panic in {callback}: {why}"));
            failed
        }
    }
}

/// [`guard`] for callbacks on a live session: a panic also hangs the call up with CRASH.
pub(super) fn guard_session<R>(channel: Option<Channel<'_>>, callback: &str, failed: R, body: impl FnOnce() -> R) -> R {
    let mut panicked = true;
    let result = guard(callback, failed, || {
        let value = body();
        panicked = false;
        value
    });
    if panicked {
        if let Some(channel) = channel {
            let _ = catch_unwind(AssertUnwindSafe(|| channel.hangup(HangupCause::Crash)));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::guard;

    #[test]
    fn a_panic_becomes_the_failure_value_and_does_not_escape() {
        assert_eq!(guard("test callback", 7, || panic!("boom")), 7);
        assert_eq!(guard("test callback", 7, || panic!("{}", String::from("formatted"))), 7);
        assert_eq!(guard("test callback", 7, || 3), 3);
    }
}
