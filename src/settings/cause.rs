//! Hangup causes the module uses, named as FreeSWITCH names them.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HangupCause {
    NormalClearing,
    DestinationOutOfOrder,
    NetworkOutOfOrder,
    InvalidUrl,
    InvalidIeContents,
    MandatoryIeLengthError,
    ServiceNotImplemented,
    /// The server broke the protocol (e.g. an oversized message).
    ProtocolError,
    /// The server stopped answering pings.
    RecoveryOnTimerExpire,
    /// The URI is outside the allowlist, or came from where policy forbids.
    OutgoingCallBarred,
    /// A panic inside the module.
    Crash,
    /// A call from the WebSocket side reached its token's `max-seconds`.
    AllottedTimeout,
    /// The choices of `drain-cause`: what a draining node refuses new calls with.
    NormalTemporaryFailure,
    SwitchCongestion,
    NormalCircuitCongestion,
    UserBusy,
    CallRejected,
}

impl HangupCause {
    /// The name `switch_channel_str2cause` understands.
    pub fn name(self) -> &'static str {
        match self {
            HangupCause::NormalClearing => "NORMAL_CLEARING",
            HangupCause::DestinationOutOfOrder => "DESTINATION_OUT_OF_ORDER",
            HangupCause::NetworkOutOfOrder => "NETWORK_OUT_OF_ORDER",
            HangupCause::InvalidUrl => "INVALID_URL",
            HangupCause::InvalidIeContents => "INVALID_IE_CONTENTS",
            HangupCause::MandatoryIeLengthError => "MANDATORY_IE_LENGTH_ERROR",
            HangupCause::ServiceNotImplemented => "SERVICE_NOT_IMPLEMENTED",
            HangupCause::ProtocolError => "PROTOCOL_ERROR",
            HangupCause::RecoveryOnTimerExpire => "RECOVERY_ON_TIMER_EXPIRE",
            HangupCause::OutgoingCallBarred => "OUTGOING_CALL_BARRED",
            HangupCause::Crash => "CRASH",
            HangupCause::AllottedTimeout => "ALLOTTED_TIMEOUT",
            HangupCause::NormalTemporaryFailure => "NORMAL_TEMPORARY_FAILURE",
            HangupCause::SwitchCongestion => "SWITCH_CONGESTION",
            HangupCause::NormalCircuitCongestion => "NORMAL_CIRCUIT_CONGESTION",
            HangupCause::UserBusy => "USER_BUSY",
            HangupCause::CallRejected => "CALL_REJECTED",
        }
    }

    /// The causes `drain-cause` may name. mod_sofia answers the first three
    /// with SIP 503 (which a dispatcher retries on another node), USER_BUSY
    /// with 486 and CALL_REJECTED with 603.
    pub const DRAIN_CHOICES: [HangupCause; 5] = [
        HangupCause::NormalTemporaryFailure,
        HangupCause::SwitchCongestion,
        HangupCause::NormalCircuitCongestion,
        HangupCause::UserBusy,
        HangupCause::CallRejected,
    ];

    /// The drain cause called `name` (any case), if it is one of [`Self::DRAIN_CHOICES`].
    pub fn drain_choice(name: &str) -> Option<HangupCause> {
        Self::DRAIN_CHOICES.into_iter().find(|cause| cause.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for HangupCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
