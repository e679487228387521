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
        }
    }
}

impl fmt::Display for HangupCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
