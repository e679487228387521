//! The one place panics are stopped before they reach FreeSWITCH.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::cause::HangupCause;
use crate::freeswitch::api::Session;

fn describe(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".to_string())
}

/// Runs `body`; a panic is logged and becomes `failed`.
/// Every `extern "C"` entry point of the module goes through here.
pub fn guard<R>(callback: &str, failed: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let why = describe(payload.as_ref());
            // Logging could panic too (allocation); never let that escape.
            let _ = catch_unwind(|| tracing::error!("panic in {callback}: {why}"));
            failed
        }
    }
}

/// [`guard`] for callbacks on a live session: a panic also hangs the call up.
pub fn guard_session<R>(session: Option<Session>, callback: &str, failed: R, body: impl FnOnce() -> R) -> R {
    let mut panicked = true;
    let result = guard(callback, failed, || {
        let value = body();
        panicked = false;
        value
    });
    if panicked {
        if let Some(session) = session {
            let _ = catch_unwind(AssertUnwindSafe(|| session.channel().hangup(HangupCause::Crash)));
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
