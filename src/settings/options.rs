//! The plain option structs that a call's tuning fills in and the lower
//! rooms read: media limits, the jitter buffer's range, TLS and the
//! connection's options.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use crate::settings::security::{may_send_credentials, HostPattern};
use crate::settings::{FirstMessageStyle, ServerUri};
use crate::settings::{
    Setting, CONNECT_TIMEOUT_MS, DEAD_PEER_TIMEOUT_MS, DOWNLINK_REACTOR, MAX_CONNECTING, MAX_MESSAGE_BYTES,
    MAX_TEXT_BYTES, PING_INTERVAL_MS, RECONNECT_MS, UPLINK_DIRECT,
};

#[derive(Debug, Clone, Copy)]
pub struct MediaLimits {
    /// Most server audio held for playout.
    pub playout_capacity: Duration,
    /// Stop reading the socket above this much queued audio...
    pub playout_high_water: Duration,
    /// ...and start again below this.
    pub playout_low_water: Duration,
    /// Most caller audio held while the server is slow to take it.
    pub uplink_backlog: Duration,
    /// The jitter buffer's target range; a minimum of 0 turns it off.
    pub jitter: JitterLimits,
    /// Caller audio per message to the server: a multiple of 20 ms.
    pub uplink_frame_ms: u32,
}

impl MediaLimits {
    /// A playout of `capacity`, with reading stopped above 5/6 of it and resumed below 2/3.
    pub fn for_capacity(capacity: Duration, uplink_backlog: Duration) -> Self {
        let capacity_ms = capacity.as_millis() as u64;
        MediaLimits {
            playout_capacity: capacity,
            playout_high_water: Duration::from_millis(capacity_ms * 5 / 6),
            playout_low_water: Duration::from_millis(capacity_ms * 2 / 3),
            uplink_backlog,
            jitter: JitterLimits::default(),
            uplink_frame_ms: crate::settings::FRAME_MS,
        }
    }
}

impl Default for MediaLimits {
    fn default() -> Self {
        use crate::settings::{PLAYOUT_MAX_MS, UPLINK_BACKLOG_MS};
        MediaLimits::for_capacity(
            Duration::from_millis(PLAYOUT_MAX_MS.integer_default()),
            Duration::from_millis(UPLINK_BACKLOG_MS.integer_default()),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterLimits {
    /// 0: play each frame as soon as it is complete (no pre-fill, no concealment).
    pub target_min_ms: f64,
    pub target_max_ms: f64,
}

impl JitterLimits {
    /// Each frame plays as soon as it is complete, as before the jitter buffer.
    pub const OFF: JitterLimits = JitterLimits { target_min_ms: 0.0, target_max_ms: 0.0 };
}

impl Default for JitterLimits {
    fn default() -> Self {
        use crate::settings::{PLAYOUT_TARGET_MAX_MS, PLAYOUT_TARGET_MS};
        JitterLimits {
            target_min_ms: PLAYOUT_TARGET_MS.integer_default() as f64,
            target_max_ms: PLAYOUT_TARGET_MAX_MS.integer_default() as f64,
        }
    }
}

/// How wss:// servers are checked, and who we are to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// Trust these CAs (a PEM bundle) instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and its key, both PEM.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any certificate. Logged loudly; for tests and labs only.
    pub insecure: bool,
    /// Trust only the server certificate with this SHA-256 fingerprint,
    /// whoever signed it (its dates and names are still checked).
    pub pin_sha256: Option<[u8; 32]>,
}

/// Which of the call's audio a stream carries: a call's leg sends `inbound`;
/// a fork sends what its mode takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tracks {
    #[default]
    Inbound,
    /// Both directions mixed into one track, `mixed` (Twilio has no such track).
    Mixed,
    /// `inbound` and `outbound`, as Twilio's `both_tracks`: each frame is the
    /// inbound μ-law then the outbound, sent as one media message each.
    Both,
}

/// What a fork streams, where it differs from a call's: the content type
/// its first message names, and its Twilio tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkLayout {
    pub content_type: String,
    pub tracks: Tracks,
}

#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// For TCP, TLS, the upgrade and the first message together.
    pub connect_timeout: Duration,
    /// How long a close handshake may take before the socket is dropped.
    pub close_timeout: Duration,
    /// Largest message of any kind; a larger one closes with 1009.
    pub max_message_bytes: usize,
    /// Largest text message.
    pub max_text_bytes: usize,
    /// Zero: no pings.
    pub ping_interval: Duration,
    /// Hang up when nothing at all comes from the server for this long; zero: never.
    pub dead_peer_timeout: Duration,
    pub first_message: FirstMessageStyle,
    pub tls: TlsOptions,
    /// Extra headers for the upgrade request, already validated.
    pub http_headers: Vec<(String, String)>,
    /// Most connection attempts in progress at once, module-wide.
    pub max_connecting: usize,
    /// How long a call may live without its WebSocket after a network failure; zero: hang up at once.
    pub reconnect: Duration,
    /// The `accountSid` a Twilio server is told.
    pub twilio_account_sid: String,
    /// A fork's layout on the wire; `None` for a call's leg.
    pub fork_layout: Option<ForkLayout>,
    /// What an `openai` server is told, and the functions the module carries out for it.
    pub agent: crate::settings::agent::AgentOptions,
    /// `allowed-hosts` when the call was planned: every address a server
    /// resolves to is checked against it (and the SIP-header rules) at
    /// every connect. Empty: any host.
    pub allowed_hosts: Vec<HostPattern>,
    /// Caller audio may be written to a plain `ws://` socket from the session thread.
    pub uplink_direct: bool,
    /// Server audio on such a socket is read by the module's reader thread, not the call's task.
    pub downlink_reactor: bool,
}

/// What the module tells one server about itself: its TLS options and the
/// extra upgrade headers.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerCredentials<'a> {
    pub tls: Cow<'a, TlsOptions>,
    pub http_headers: &'a [(String, String)],
    /// Credentials were set but are not sent to this server.
    pub withheld: bool,
}

impl ConnectionOptions {
    /// The TLS options and headers for `server`. The module's credentials
    /// (`http-headers`, the client certificate and key) go only to a server
    /// the operator chose, or one `allowed-hosts` names; a server a SIP
    /// header chose gets neither.
    pub fn credentials_for(&self, server: &ServerUri) -> ServerCredentials<'_> {
        let has_credentials =
            !self.http_headers.is_empty() || self.tls.cert_file.is_some() || self.tls.key_file.is_some();
        if !has_credentials || may_send_credentials(&self.allowed_hosts, server) {
            return ServerCredentials {
                tls: Cow::Borrowed(&self.tls),
                http_headers: &self.http_headers,
                withheld: false,
            };
        }
        let tls = TlsOptions { cert_file: None, key_file: None, ..self.tls.clone() };
        ServerCredentials { tls: Cow::Owned(tls), http_headers: &[], withheld: true }
    }
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        let ms = |setting: &Setting| Duration::from_millis(setting.integer_default());
        ConnectionOptions {
            connect_timeout: ms(&CONNECT_TIMEOUT_MS),
            close_timeout: Duration::from_secs(1),
            max_message_bytes: MAX_MESSAGE_BYTES.integer_default() as usize,
            max_text_bytes: MAX_TEXT_BYTES.integer_default() as usize,
            ping_interval: ms(&PING_INTERVAL_MS),
            dead_peer_timeout: ms(&DEAD_PEER_TIMEOUT_MS),
            first_message: FirstMessageStyle::Wsbridge,
            tls: TlsOptions::default(),
            http_headers: Vec::new(),
            max_connecting: MAX_CONNECTING.integer_default() as usize,
            reconnect: ms(&RECONNECT_MS),
            twilio_account_sid: format!("AC{}", "0".repeat(32)),
            fork_layout: None,
            agent: Default::default(),
            allowed_hosts: Vec::new(),
            uplink_direct: UPLINK_DIRECT.flag_default(),
            downlink_reactor: DOWNLINK_REACTOR.flag_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::security::parse_allowlist;
    use crate::settings::Origin;

    #[test]
    fn a_sip_chosen_server_gets_no_credentials_unless_allowed_hosts_names_it() {
        let options = ConnectionOptions {
            http_headers: vec![("Authorization".into(), "Bearer secret".into())],
            tls: TlsOptions {
                ca_file: Some("ca.pem".into()),
                cert_file: Some("client.pem".into()),
                key_file: Some("client.key".into()),
                ..TlsOptions::default()
            },
            allowed_hosts: parse_allowlist("bots.example.com").unwrap(),
            ..ConnectionOptions::default()
        };
        let operators = ServerUri::parse("wss://anywhere.example.net/").unwrap();
        let given = options.credentials_for(&operators);
        assert!(!given.withheld);
        assert_eq!((given.tls.as_ref(), given.http_headers), (&options.tls, options.http_headers.as_slice()));

        let from_sip = ServerUri { origin: Origin::SipHeader, ..operators };
        let withheld = options.credentials_for(&from_sip);
        assert!(withheld.withheld);
        assert!(withheld.http_headers.is_empty());
        assert_eq!((withheld.tls.cert_file.as_ref(), withheld.tls.key_file.as_ref()), (None, None));
        assert_eq!(withheld.tls.ca_file, options.tls.ca_file, "its certificate is still checked as configured");

        let named = ServerUri { origin: Origin::SipHeader, ..ServerUri::parse("wss://bots.example.com/").unwrap() };
        assert!(!options.credentials_for(&named).withheld);
        let bare = ConnectionOptions::default();
        assert!(!bare.credentials_for(&from_sip).withheld, "nothing to withhold: nothing said");
    }
}
