//! Ending the conversation: what is said last, the close frame, and the
//! cause the call is hung up with.

use super::connect::{broken_protocol, network_failure, Failure};
use super::exchange::send_batch;
use super::*;

/// Closes the socket as the way it ended calls for, and says how it ended.
pub(super) async fn finish(
    ended: Ended,
    link: Link<'_>,
    media: &CallMedia,
    control: &impl CallControl,
    options: &ConnectionOptions,
    uri: &str,
) -> ConversationEnd {
    let Link { sink, stream, unsent, dialect } = link;
    match ended {
        Ended::CallerGone => {
            // The reason recorded first: a hangup's, or a fork's `stop`.
            let reason = media.record_close(1000, CALLER_HUNG_UP);
            // The caller's last frames were queued before the hangup: they go before the close.
            media.take_uplink(unsent);
            let _ = timeout(options.close_timeout, send_batch(sink, unsent, control, dialect.encoder.as_mut())).await;
            if let Some(goodbye) = dialect.closing() {
                let _ = timeout(options.close_timeout, sink.send(goodbye)).await;
            }
            close_and_wait(sink, stream, reason, options.close_timeout).await;
            ConversationEnd::CallerHungUp
        }
        Ended::Read(ReadEnd::Closed(frame)) => {
            // tungstenite has queued the close reply; flush it out.
            let _ = timeout(options.close_timeout, sink.close()).await;
            let (code, reason) = match frame {
                Some(frame) => (Some(u16::from(frame.code)), frame.reason.to_string()),
                None => (None, String::new()),
            };
            // 1005: "no status code was present", as RFC 6455 names it.
            media.record_close(code.unwrap_or(1005), &reason);
            ConversationEnd::ServerClosed { code, reason }
        }
        Ended::Read(ReadEnd::TooBig(why)) => {
            media.record_close(1009, "message too big");
            let close = CloseFrame { code: CloseCode::Size, reason: "message too big".into() };
            let _ = timeout(options.close_timeout, sink.send(Message::Close(Some(close)))).await;
            failed(HangupCause::ProtocolError, format!("{uri} sent {why}; closed with 1009"))
        }
        Ended::Read(ReadEnd::Eof) => {
            ConversationEnd::ServerClosed { code: None, reason: "connection closed without a close frame".into() }
        }
        ended => {
            if let Some(error) = broken_protocol(&ended) {
                return failed(HangupCause::ProtocolError, format!("{uri} broke the WebSocket protocol: {error}"));
            }
            if matches!(ended, Ended::DeadPeer(_)) {
                media.record_close(1001, "server stopped answering");
                let close = CloseFrame { code: CloseCode::Away, reason: "no answer to pings".into() };
                let _ = timeout(options.close_timeout, sink.send(Message::Close(Some(close)))).await;
            }
            let Failure { cause, why } = network_failure(&ended, uri).unwrap_or_else(|| Failure {
                cause: HangupCause::NetworkOutOfOrder,
                why: format!("the connection to {uri} failed"),
            });
            failed(cause, why)
        }
    }
}

/// Sends close 1000 with `reason`, then gives the server its chance to answer it.
async fn close_and_wait(sink: &mut Sink, stream: &mut Stream, reason: String, close_timeout: Duration) {
    let close = CloseFrame { code: CloseCode::Normal, reason: reason.into() };
    if timeout(close_timeout, sink.send(Message::Close(Some(close)))).await.is_ok() {
        let _ = timeout(close_timeout, async {
            while let Some(Ok(message)) = stream.next().await {
                if message.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}
