//! Reaching the server: each URI in turn, within the budget of attempts
//! in progress at once, and again after a network failure.

use super::*;

pub(super) static CONNECTING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts one connection attempt for as long as it lives.
pub(super) struct ConnectingSlot;

impl ConnectingSlot {
    fn take(limit: usize) -> Option<ConnectingSlot> {
        let before = CONNECTING.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            CONNECTING.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectingSlot)
    }
}

impl Drop for ConnectingSlot {
    fn drop(&mut self) {
        CONNECTING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every server in the order tried: the URI, then each fallback.
pub(super) fn servers(settings: &CallSettings) -> impl Iterator<Item = &ServerUri> {
    std::iter::once(&settings.uri).chain(&settings.fallbacks)
}

/// Why a server, or every server, was not reached.
#[derive(Debug)]
pub(super) struct Unreached {
    /// The address rules refused a server (see `security::check_address`):
    /// the call ends with `OUTGOING_CALL_BARRED` unless another server took it.
    pub(super) barred: bool,
    /// A model's server refused the API key (HTTP 401 or 403): the call ends with `CALL_REJECTED`.
    pub(super) refused: bool,
    pub(super) why: String,
}

/// One server: TCP (to an address checked now), TLS, the upgrade and the
/// first messages, within the connect timeout.
pub(super) async fn connect_one(
    server: &ServerUri,
    shown: &str,
    options: &ConnectionOptions,
    limit: Duration,
    dialect: &mut Dialect,
    media: &Arc<CallMedia>,
) -> Result<Connection, Unreached> {
    let speaks_to_a_model = dialect.speaks_to_a_model;
    let unreached = |error: websocket::ConnectError| match error {
        websocket::ConnectError::Barred(why) => Unreached { barred: true, refused: false, why },
        websocket::ConnectError::Refused(code, _) if speaks_to_a_model => Unreached {
            barred: false,
            refused: true,
            why: format!("{shown} refused the OpenAI API key (HTTP {code}); check openai-api-key or http-headers"),
        },
        error => Unreached { barred: false, refused: false, why: format!("cannot reach {shown}: {error}") },
    };
    let credentials = options.credentials_for(server);
    if credentials.withheld {
        tracing::info!(
            "{shown} came from a SIP header and allowed-hosts does not name it: http-headers and the TLS client \
             certificate are not sent to it"
        );
    }
    let opening = async {
        let mut connection = match server.scheme {
            Scheme::Tcp => connection::connect_audiosocket(server, &options.allowed_hosts).await.map_err(unreached)?,
            Scheme::Ws | Scheme::Wss => {
                let config = websocket::websocket_config(options);
                let (tls, headers) = (&credentials.tls, credentials.http_headers);
                // Caller audio may skip the task where the protocol sends it as it is queued,
                // and server audio where its binary messages are audio as they are.
                let direct = options.uplink_direct && dialect.encoder.audio_as_binary();
                let reactor = crate::wire::reactor::current().filter(|_| options.downlink_reactor);
                match (direct, reactor, server.scheme) {
                    (true, Some(reactor), Scheme::Ws) => {
                        let allowed = &options.allowed_hosts;
                        let audio_bytes = options.max_message_bytes;
                        let opened = websocket::connect_direct(
                            server,
                            config,
                            headers,
                            allowed,
                            audio_bytes,
                            media.clone(),
                            reactor,
                        );
                        Connection::Direct(opened.await.map_err(unreached)?)
                    }
                    _ => {
                        let direct = direct.then(|| media.uplink_writer());
                        let opened =
                            websocket::connect(server, config, tls, headers, &options.allowed_hosts, direct).await;
                        Connection::WebSocket(opened.map_err(unreached)?)
                    }
                }
            }
        };
        for message in dialect.open() {
            connection.send(message).await.map_err(|error| Unreached {
                barred: false,
                refused: false,
                why: format!("cannot reach {shown}: sending the first message failed: {error}"),
            })?;
        }
        Ok::<Connection, Unreached>(connection)
    };
    match timeout(limit, opening).await {
        Ok(result) => result,
        Err(_) => Err(Unreached {
            barred: false,
            refused: false,
            why: format!("no WebSocket session with {shown} within {} ms", limit.as_millis()),
        }),
    }
}

/// Tries each server in turn, each with its own connect timeout (cut to
/// `deadline` when given); the first that completes the session wins.
pub(super) async fn connect_any(
    settings: &CallSettings,
    options: &ConnectionOptions,
    deadline: Option<tokio::time::Instant>,
    dialect: &mut Dialect,
    media: &Arc<CallMedia>,
) -> Result<(Connection, String), Unreached> {
    let mut failures = Vec::new();
    let (mut barred, mut refused) = (false, false);
    for server in servers(settings) {
        let limit = match deadline {
            Some(deadline) => {
                options.connect_timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
            }
            None => options.connect_timeout,
        };
        if limit.is_zero() {
            break;
        }
        let shown = settings.shown(server);
        match connect_one(server, &shown, options, limit, dialect, media).await {
            Ok(connection) => return Ok((connection, shown)),
            Err(unreached) => {
                if !settings.fallbacks.is_empty() {
                    tracing::warn!("{}; trying the next server", unreached.why);
                }
                barred |= unreached.barred;
                refused |= unreached.refused;
                failures.push(unreached.why);
            }
        }
    }
    Err(Unreached { barred, refused, why: failures.join("; ") })
}

/// The cause a call that reached no server ends with: `OUTGOING_CALL_BARRED`
/// when the address rules refused one of them, else `otherwise`.
fn unreached_cause(unreached: &Unreached, otherwise: HangupCause) -> HangupCause {
    match (unreached.barred, unreached.refused) {
        (true, _) => HangupCause::OutgoingCallBarred,
        (false, true) => HangupCause::CallRejected,
        (false, false) => otherwise,
    }
}

/// Connects to the first server that answers, sends the first message and answers the call.
pub(super) async fn open(
    settings: &CallSettings,
    media: &Arc<CallMedia>,
    control: &impl CallControl,
    options: &ConnectionOptions,
    dialect: &mut Dialect,
) -> Result<(Connection, String), ConversationEnd> {
    let Some(slot) = ConnectingSlot::take(options.max_connecting) else {
        let uri = settings.shown(&settings.uri);
        return Err(failed(
            HangupCause::DestinationOutOfOrder,
            format!("{} connection attempts already in progress; not connecting to {uri}", options.max_connecting),
        ));
    };
    let (connection, uri) = tokio::select! {
        _ = media.caller_gone() => return Err(ConversationEnd::CallerHungUp),
        opened = connect_any(settings, options, None, dialect, media) => match opened {
            Ok(opened) => opened,
            Err(unreached) => {
                return Err(failed(unreached_cause(&unreached, HangupCause::DestinationOutOfOrder), unreached.why))
            }
        },
    };
    drop(slot);
    tracing::info!("connection to {uri} open ({}, {}); answering", settings.protocol.name(), settings.content_type);
    media.mark_open(&uri);
    control.event(CallEvent::Connect { uri: uri.clone(), connect_ms: media.connect_ms().unwrap_or(0) });
    if !control.answer() {
        media.stop_conversation();
    }
    Ok((connection, uri))
}

/// A network failure the call may survive, with the cause it hangs up with
/// when the reconnect budget runs out. A close frame is never one: the
/// server chose to end the call.
pub(super) struct Failure {
    pub(super) cause: HangupCause,
    pub(super) why: String,
}

pub(super) fn recoverable(ended: &Ended, options: &ConnectionOptions, uri: &str) -> Option<Failure> {
    if options.reconnect.is_zero() {
        return None;
    }
    network_failure(ended, uri)
}

/// How the connection failed, where the network (not the server's choice,
/// nor a protocol violation) ended it: the cause and the words for the log.
pub(super) fn network_failure(ended: &Ended, uri: &str) -> Option<Failure> {
    let (cause, why) = match ended {
        Ended::Read(ReadEnd::Eof) => {
            (HangupCause::NetworkOutOfOrder, format!("{uri} closed the connection without a close frame"))
        }
        _ if broken_protocol(ended).is_some() => return None,
        Ended::Read(ReadEnd::Error(error)) => {
            (HangupCause::NetworkOutOfOrder, format!("WebSocket to {uri} failed: {error}"))
        }
        Ended::Write(error) => (HangupCause::NetworkOutOfOrder, format!("sending to {uri} failed: {error}")),
        Ended::DeadPeer(silent) => (
            HangupCause::RecoveryOnTimerExpire,
            format!("nothing from {uri} for {} ms, pings unanswered", silent.as_millis()),
        ),
        Ended::CallerGone | Ended::Read(ReadEnd::Closed(_)) | Ended::Read(ReadEnd::TooBig(_)) => return None,
    };
    Some(Failure { cause, why })
}

/// The server broke the WebSocket protocol (a reset without a close is a network failure instead).
pub(super) fn broken_protocol(ended: &Ended) -> Option<&ProtocolError> {
    match ended {
        Ended::Read(ReadEnd::Error(WsError::Protocol(error)))
            if !matches!(error, ProtocolError::ResetWithoutClosingHandshake) =>
        {
            Some(error)
        }
        _ => None,
    }
}

/// Waits between reconnect attempts: at once, then 100, 250 and 500 ms, then every second.
pub(super) fn backoff(attempt: usize) -> Duration {
    const STEPS_MS: [u64; 4] = [0, 100, 250, 500];
    Duration::from_millis(STEPS_MS.get(attempt).copied().unwrap_or(1000))
}

/// Tries every server, again and again after [`backoff`], until one takes
/// the call or `deadline` passes. A server the address rules refuse (its
/// name now resolves where it may not go) ends the trying at once, with
/// `OUTGOING_CALL_BARRED`.
async fn attempt_until(
    deadline: tokio::time::Instant,
    settings: &CallSettings,
    options: &ConnectionOptions,
    failure: &Failure,
    dialect: &mut Dialect,
    media: &Arc<CallMedia>,
) -> Result<(Connection, String), ConversationEnd> {
    let mut last_error = failure.why.clone();
    for attempt in 0.. {
        let wait_until = (tokio::time::Instant::now() + backoff(attempt)).min(deadline);
        tokio::time::sleep_until(wait_until).await;
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        match connect_any(settings, options, Some(deadline), &mut *dialect, media).await {
            Ok(connected) => return Ok(connected),
            Err(barred) if barred.barred => {
                let why = format!("{}; reconnecting refused: {}", failure.why, barred.why);
                return Err(failed(unreached_cause(&barred, failure.cause), why));
            }
            Err(unreached) => last_error = unreached.why,
        }
    }
    let budget = options.reconnect.as_millis();
    let why = format!("{}; no server took the call back within {budget} ms ({last_error})", failure.why);
    Err(failed(failure.cause, why))
}

/// Reconnects after `failure` within the budget, trying every server each
/// time; then resends the first message and says `resumed`. Meanwhile the
/// caller hears what is queued and then comfort noise, and caller audio and
/// DTMF wait in the uplink queue.
pub(super) async fn reconnect(
    settings: &CallSettings,
    media: &Arc<CallMedia>,
    control: &impl CallControl,
    options: &ConnectionOptions,
    failure: Failure,
    dialect: &mut Dialect,
) -> Result<(Connection, String), ConversationEnd> {
    let gap_started = tokio::time::Instant::now();
    let deadline = gap_started + options.reconnect;
    let dropped_before = media.dropped_uplink_frames();
    tracing::warn!("{}; reconnecting for up to {} ms", failure.why, options.reconnect.as_millis());
    media.set_reconnecting(true);
    control.event(CallEvent::Reconnecting { why: failure.why.clone() });
    let attempts = attempt_until(deadline, settings, options, &failure, dialect, media);
    let connected = tokio::select! {
        _ = media.caller_gone() => Err(ConversationEnd::CallerHungUp),
        connected = attempts => connected,
    };
    media.set_reconnecting(false);
    let (mut connection, uri) = connected?;
    let gap_ms = gap_started.elapsed().as_millis() as u64;
    let reconnects = media.count_reconnect(gap_ms);
    let dropped = media.dropped_uplink_frames() - dropped_before;
    let resumed = protocol::wsbridge::resumed_event(control.call_id(), gap_ms, reconnects, dropped);
    if let Some(resumed) = dialect.resumed(resumed) {
        if let Err(error) = connection.send(resumed).await {
            return Err(failed(failure.cause, format!("sending resumed to {uri} failed: {error}")));
        }
    }
    media.set_server(&uri);
    tracing::info!("WebSocket to {uri} open again after {gap_ms} ms (reconnect {reconnects})");
    control.event(CallEvent::Reconnected { uri: uri.clone(), gap_ms, reconnects });
    Ok((connection, uri))
}
