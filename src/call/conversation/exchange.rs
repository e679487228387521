//! The conversation while it is up: server messages read into the call,
//! caller audio and text written out, and the silence that means a dead peer.

use super::*;

/// Returns once the server has been silent for `limit` (whoever read it:
/// the task, or the downlink reactor); never when `limit` is zero.
async fn wait_dead(media: &CallMedia, limit: Duration) -> Duration {
    if limit.is_zero() {
        return std::future::pending().await;
    }
    loop {
        let silent = media.server_silent_for();
        if silent >= limit {
            return silent;
        }
        tokio::time::sleep(limit - silent).await;
    }
}

/// Moves audio and messages both ways until one side ends the session.
pub(super) async fn exchange(
    sink: &mut Sink,
    stream: &mut Stream,
    unsent: &mut VecDeque<ToServer>,
    media: &CallMedia,
    control: &impl CallControl,
    options: &ConnectionOptions,
    dialect: &mut Dialect,
) -> Ended {
    media.heard_from_server();
    // Without pings, a server that only listens sends nothing, and is not dead for it.
    let dead_peer_timeout = if dialect.pings { options.dead_peer_timeout } else { Duration::ZERO };
    let Dialect { encoder, decoder, .. } = dialect;
    // Where the connection lets it (plain ws://, audio in binary messages as queued), the
    // session thread writes caller audio itself while the conversation is up.
    media.set_direct_audio(true);
    let ended = tokio::select! {
        _ = media.caller_gone() => Ended::CallerGone,
        end = read_loop(stream, media, control, options, decoder.as_ref()) => Ended::Read(end),
        error = write_loop(sink, unsent, media, control, options.ping_interval, encoder.as_mut()) => Ended::Write(error),
        silent = wait_dead(media, dead_peer_timeout) => Ended::DeadPeer(silent),
    };
    // From here on caller audio waits in the queue: for a close, or for a new connection.
    media.set_direct_audio(false);
    ended
}

pub(super) async fn read_loop(
    stream: &mut (impl StreamExt<Item = Result<Message, WsError>> + Unpin),
    media: &CallMedia,
    control: &impl CallControl,
    options: &ConnectionOptions,
    decoder: &dyn Decoder,
) -> ReadEnd {
    let mut message_events = EventBudget::per_call();
    loop {
        // Flow control: while the playout is full, leave data in the socket so TCP pushes back.
        media.wait_for_playout_room().await;
        let next = stream.next().await;
        media.heard_from_server();
        match next {
            None => return ReadEnd::Eof,
            Some(Err(WsError::Capacity(error))) => return ReadEnd::TooBig(error.to_string()),
            Some(Err(error)) => return ReadEnd::Error(error),
            Some(Ok(Message::Close(frame))) => return ReadEnd::Closed(frame),
            Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => {
                let text = match &message {
                    Message::Binary(data) if data.len() > options.max_message_bytes => {
                        return ReadEnd::TooBig(format!("a binary message of {} bytes", data.len()));
                    }
                    Message::Text(text) if text.len() > options.max_text_bytes => {
                        return ReadEnd::TooBig(format!("a text message of {} bytes", text.len()));
                    }
                    Message::Text(text) => Some(text.clone()),
                    _ => None,
                };
                match decoder.decode(message) {
                    FromServer::Audio(data) => queue_audio(media, &data).await,
                    FromServer::Reply(reply) => {
                        media.begin_reply(reply.reply, reply.turn_began);
                        queue_audio(media, &reply.data).await;
                    }
                    FromServer::Agent(event) => agent::act_on(event, media, control, decoder, &options.agent).await,
                    inbound => {
                        // Audio carried as text (Twilio's media) is not announced.
                        if let Some(text) = text {
                            if may_announce(&mut message_events, text.len()) {
                                control.event(CallEvent::Message { body: text.to_string() });
                            }
                        }
                        act_on(inbound, media, control);
                    }
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Queues server audio for playout and counts the whole frames received.
async fn queue_audio(media: &CallMedia, data: &[u8]) {
    media.queue_playout(data).await;
    media.count_received_bytes(data.len());
}

/// A server flooding text must not flood FreeSWITCH's event system.
pub(super) const MESSAGE_EVENTS_PER_SECOND: u32 = 100;

/// All calls together: at most this many `wsbridge::message` events a second...
const MODULE_MESSAGE_EVENTS_PER_SECOND: u32 = 500;
/// ...and this many bytes of their bodies, so that 100 calls sending 64 KiB
/// texts cannot push 6 MB a second through FreeSWITCH's event system.
const MODULE_MESSAGE_EVENT_BYTES_PER_SECOND: usize = 2 << 20;

static MODULE_MESSAGE_EVENTS: std::sync::Mutex<EventBudget> = std::sync::Mutex::new(EventBudget::new(
    MODULE_MESSAGE_EVENTS_PER_SECOND,
    MODULE_MESSAGE_EVENT_BYTES_PER_SECOND,
    "servers sent more text than the module's event budget (500 events, 2 MiB a second)",
));

/// A budget of message events, by count and by body bytes, a second at a
/// time; what is over is counted and logged when the second ends.
pub(super) struct EventBudget {
    events_per_second: u32,
    bytes_per_second: usize,
    /// Said before the count of skipped events.
    over: &'static str,
    window: Option<BudgetWindow>,
}

struct BudgetWindow {
    started: std::time::Instant,
    events: u32,
    bytes: usize,
    dropped: u64,
}

impl EventBudget {
    pub(super) const fn new(events_per_second: u32, bytes_per_second: usize, over: &'static str) -> Self {
        EventBudget { events_per_second, bytes_per_second, over, window: None }
    }

    /// One call's: a count only.
    fn per_call() -> Self {
        EventBudget::new(MESSAGE_EVENTS_PER_SECOND, usize::MAX, "the server sent too many text messages")
    }

    pub(super) fn allow_at(&mut self, now: std::time::Instant, bytes: usize) -> bool {
        let current = self.window.get_or_insert(BudgetWindow { started: now, events: 0, bytes: 0, dropped: 0 });
        if now.duration_since(current.started) >= Duration::from_secs(1) {
            if current.dropped > 0 {
                tracing::warn!("{}; {} wsbridge::message events skipped", self.over, current.dropped);
            }
            *current = BudgetWindow { started: now, events: 0, bytes: 0, dropped: 0 };
        }
        if current.events >= self.events_per_second || current.bytes.saturating_add(bytes) > self.bytes_per_second {
            current.dropped += 1;
            return false;
        }
        current.events += 1;
        current.bytes += bytes;
        true
    }
}

/// Whether a message of `bytes` may be announced, within the call's budget and the module's.
fn may_announce(call_budget: &mut EventBudget, bytes: usize) -> bool {
    let now = std::time::Instant::now();
    call_budget.allow_at(now, bytes) && crate::support::sync::lock(&MODULE_MESSAGE_EVENTS).allow_at(now, bytes)
}

pub(super) fn act_on(inbound: FromServer, media: &CallMedia, control: &impl CallControl) {
    let control_message = match inbound {
        FromServer::Control(control_message) => control_message,
        FromServer::Audio(_) | FromServer::Reply(_) | FromServer::Agent(_) => return,
        FromServer::Ignored(why) => {
            tracing::debug!("ignoring a message from the server: {why}");
            return;
        }
    };
    match control_message {
        Control::Clear => {
            tracing::debug!("server: clear");
            media.clear_playout();
        }
        Control::Mark { name } => {
            if !media.add_mark(name) {
                tracing::warn!("server: too many marks pending; mark refused");
            }
        }
        Control::Dtmf { digits, duration_ms } => {
            tracing::debug!("server: DTMF {digits} ({duration_ms} ms)");
            control.send_dtmf(&digits, duration_ms);
        }
        Control::Hangup { cause } => {
            let cause = cause.unwrap_or_else(|| HangupCause::NormalClearing.name().to_string());
            tracing::info!("server asked to hang up ({cause})");
            control.hangup_named(&cause);
        }
    }
}

/// Sends caller audio and text as it is queued, and pings; returns only on a send error.
pub(super) async fn write_loop(
    sink: &mut (impl SinkExt<Message, Error = WsError> + Unpin),
    batch: &mut VecDeque<ToServer>,
    media: &CallMedia,
    control: &impl CallControl,
    ping_interval: Duration,
    encoder: &mut dyn Encoder,
) -> WsError {
    let mut pings = (!ping_interval.is_zero()).then(|| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    // What a broken connection left unsent goes first on the new one.
    if let Err(error) = send_batch(sink, batch, control, encoder).await {
        return error;
    }
    media.uplink_written();
    loop {
        let ping_due = async {
            match pings.as_mut() {
                Some(interval) => interval.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = media.next_uplink_batch(batch) => {}
            _ = ping_due => {
                if let Err(error) = sink.send(Message::Ping(Default::default())).await {
                    return error;
                }
                continue;
            }
        }
        if let Err(error) = send_batch(sink, batch, control, encoder).await {
            return error;
        }
        media.uplink_written();
    }
}

/// Sends every item of `batch`, then flushes once. An item leaves the batch
/// only once the sink has taken it, so a send cut short loses nothing.
pub(super) async fn send_batch(
    sink: &mut (impl SinkExt<Message, Error = WsError> + Unpin),
    batch: &mut VecDeque<ToServer>,
    control: &impl CallControl,
    encoder: &mut dyn Encoder,
) -> Result<(), WsError> {
    while let Some(item) = batch.front() {
        // Encoded again if a failed send leaves the item for the next connection.
        if let Some(message) = encoder.encode(item) {
            sink.feed(message).await?;
            if let Some(follower) = encoder.take_pending() {
                sink.feed(follower).await?;
            }
        }
        match batch.pop_front() {
            Some(ToServer::Mark { name, cleared }) => control.event(CallEvent::Mark { name, cleared }),
            Some(ToServer::AfterPlayout(action)) => agent::carry_out(action, control),
            _ => {}
        }
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_counts_events_and_bytes_and_renews_each_second() {
        let mut budget = EventBudget::new(3, 100, "test");
        let start = std::time::Instant::now();
        assert!(budget.allow_at(start, 40) && budget.allow_at(start, 40));
        assert!(!budget.allow_at(start, 40), "over the bytes");
        assert!(budget.allow_at(start, 20));
        assert!(!budget.allow_at(start, 1), "over the count");
        let later = start + Duration::from_millis(1001);
        assert!(budget.allow_at(later, 100), "a new second");
        let mut call = EventBudget::per_call();
        let allowed = (0..150).filter(|_| call.allow_at(start, 65536)).count();
        assert_eq!(allowed, MESSAGE_EVENTS_PER_SECOND as usize, "a call's budget counts events, whatever their size");
    }
}
