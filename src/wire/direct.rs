//! A plain `ws://` connection whose media skips the call's task both ways:
//! the session thread writes caller audio to the socket itself
//! ([`crate::audio::uplink_writer`]), and the module's downlink
//! [`super::reactor`] reads it, putting server audio straight into the
//! playout. The task still sees every other message, in order, through the
//! connection's inbox, and writes its own (text, pings, the close) through
//! the same uplink lock. One tungstenite [`WebSocketContext`] keeps the
//! protocol's state for both sides: pongs, the closing handshake, limits.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::reactor::{Reactor, Readable};
use crate::audio::media::CallMedia;
use crate::audio::uplink_writer::{Uplink, UplinkSocket};
use crate::support::sync::lock;

/// Messages the reader may hold for the task before it stops reading and
/// lets TCP push back on the server.
const INBOX_LIMIT: usize = 16;

/// What the session thread writes caller audio to.
struct AudioOut {
    tcp: Arc<std::net::TcpStream>,
}

impl UplinkSocket for AudioOut {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        (&*self.tcp).write(bytes)
    }

    fn frame_audio(&self, payload: &[u8], out: &mut Vec<u8>) {
        super::frame::audio_frame(payload, out);
    }
}

/// The socket as tungstenite reads and writes it: reads straight from the
/// socket, writes in order with the session thread's, through the uplink lock.
struct Wire {
    tcp: Arc<std::net::TcpStream>,
    uplink: Arc<Mutex<Uplink>>,
    id: u64,
    /// The last read took less than it could: the socket held no more, and
    /// until the reactor says otherwise a read would only answer `WouldBlock`.
    drained: AtomicBool,
}

impl Read for &Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Edge-triggered: bytes that came after the short read bring the reactor back.
        if self.drained.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let read = (&*self.tcp).read(buf)?;
        if read > 0 && read < buf.len() {
            self.drained.store(true, Ordering::Relaxed);
        }
        Ok(read)
    }
}

impl Write for &Wire {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        lock(&self.uplink).write_through(self.id, bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        lock(&self.uplink).flush(self.id)
    }
}

#[derive(Default)]
struct Inbox {
    messages: VecDeque<Result<Message, WsError>>,
    /// Nothing more will come: the stream ends once the messages are taken.
    ended: bool,
    /// The reader stopped at the limit; the task's next take resumes it.
    paused: bool,
}

pub struct DirectConnection {
    context: Mutex<WebSocketContext>,
    wire: Wire,
    inbox: Mutex<Inbox>,
    task: AtomicWaker,
    media: Arc<CallMedia>,
    /// Larger binary messages go to the task, which refuses them.
    max_audio_bytes: usize,
    /// Woken by the reactor when the socket may take writes again: the
    /// socket is in no tokio reactor, so arriving data wakes no runtime thread.
    writable: AtomicWaker,
    reactor: Arc<Reactor>,
    token: OnceLock<mio::Token>,
    /// The task asked for a close: the next flush finishes it.
    closing: AtomicBool,
    /// The task has asked for a message: until then nothing is read, as
    /// tungstenite read nothing before, so that a server's close cannot
    /// overtake the first message the task is still to send.
    reading: AtomicBool,
}

impl DirectConnection {
    /// The connection over `tcp`, upgraded already (`rest` is what followed
    /// the server's answer), read by `reactor` once the task first asks for a message. Caller audio
    /// goes directly once the task turns that on ([`CallMedia::set_direct_audio`]).
    pub fn start(
        tcp: std::net::TcpStream,
        rest: Vec<u8>,
        config: WebSocketConfig,
        max_audio_bytes: usize,
        media: Arc<CallMedia>,
        reactor: Arc<Reactor>,
    ) -> io::Result<Arc<DirectConnection>> {
        tcp.set_nonblocking(true)?;
        let fd = tcp.as_raw_fd();
        let tcp = Arc::new(tcp);
        let uplink = media.uplink_writer();
        let id = lock(&uplink).attach(Arc::new(AudioOut { tcp: tcp.clone() }));
        let connection = Arc::new(DirectConnection {
            context: Mutex::new(WebSocketContext::from_partially_read(rest, Role::Client, Some(config))),
            wire: Wire { tcp, uplink, id, drained: AtomicBool::new(false) },
            inbox: Mutex::new(Inbox::default()),
            task: AtomicWaker::new(),
            media,
            max_audio_bytes,
            writable: AtomicWaker::new(),
            reactor: reactor.clone(),
            token: OnceLock::new(),
            closing: AtomicBool::new(false),
            reading: AtomicBool::new(false),
        });
        let readable: Arc<dyn Readable> = connection.clone();
        // Not read until the task asks: poll_next kicks the reactor then.
        let token = reactor.register(fd, Arc::downgrade(&readable) as Weak<dyn Readable>)?;
        let _ = connection.token.set(token);
        Ok(connection)
    }

    /// A message for the task, in order; audio goes to the playout instead
    /// when nothing waits ahead of it and the playout has room.
    fn take(&self, message: Message) {
        self.media.heard_from_server();
        // tungstenite answered a ping already; the task has nothing to do with either.
        if matches!(message, Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) {
            return;
        }
        let mut inbox = lock(&self.inbox);
        if inbox.messages.is_empty() {
            if let Message::Binary(data) = &message {
                if data.len() <= self.max_audio_bytes
                    && self.media.takes_direct_downlink()
                    && self.media.queue_playout_now(data)
                {
                    return;
                }
            }
        }
        inbox.messages.push_back(Ok(message));
        drop(inbox);
        self.task.wake();
    }

    /// Nothing more will be read: after `error`, if any.
    fn end(&self, error: Option<WsError>) {
        let mut inbox = lock(&self.inbox);
        if !inbox.ended {
            inbox.messages.extend(error.map(Err));
            inbox.ended = true;
        }
        drop(inbox);
        self.task.wake();
    }

    /// The task's next message; `None` once the connection is over.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, WsError>>> {
        if !self.reading.swap(true, Ordering::AcqRel) {
            if let Some(token) = self.token.get() {
                self.reactor.kick(*token);
            }
        }
        let mut inbox = lock(&self.inbox);
        if let Some(next) = inbox.messages.pop_front() {
            let resume = inbox.paused && inbox.messages.len() < INBOX_LIMIT / 2;
            if resume {
                inbox.paused = false;
            }
            drop(inbox);
            if let (true, Some(token)) = (resume, self.token.get()) {
                self.reactor.kick(*token);
            }
            return Poll::Ready(Some(next));
        }
        if inbox.ended {
            return Poll::Ready(None);
        }
        // Registered under the inbox's lock: a message queued after this wakes it.
        self.task.register(cx.waker());
        Poll::Pending
    }

    /// Runs `write` on the protocol's state; when the socket refuses it,
    /// again once the reactor says the socket may take writes.
    fn poll_written(
        &self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut WebSocketContext, &mut &Wire) -> Result<(), WsError>,
    ) -> Poll<Result<(), WsError>> {
        // Registered before the write: a writable edge after a refusal wakes it.
        self.writable.register(cx.waker());
        let written = write(&mut lock(&self.context), &mut &self.wire);
        match written {
            Err(WsError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            // As tokio-tungstenite: a connection already closed has nothing left to send.
            Err(WsError::ConnectionClosed) => Poll::Ready(Ok(())),
            done => Poll::Ready(done),
        }
    }

    /// Queues `message` to be sent; [`poll_flush`](Self::poll_flush) sends it.
    pub fn start_send(&self, message: Message) -> Result<(), WsError> {
        match lock(&self.context).write(&mut &self.wire, message) {
            // Kept in tungstenite's buffer: the flush sends it.
            Err(WsError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
            done => done,
        }
    }

    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.poll_written(cx, |context, wire| context.flush(wire))
    }

    /// Sends a close (unless one was sent) and everything before it.
    pub fn poll_close(&self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let close_sent = self.closing.swap(true, Ordering::AcqRel);
        self.poll_written(cx, |context, wire| match close_sent {
            true => context.flush(wire),
            false => context.close(wire, None),
        })
    }
}

impl Readable for DirectConnection {
    fn on_readable(&self) {
        if !self.reading.load(Ordering::Acquire) {
            return;
        }
        let mut context = lock(&self.context);
        self.wire.drained.store(false, Ordering::Relaxed);
        loop {
            {
                let mut inbox = lock(&self.inbox);
                if inbox.ended {
                    return;
                }
                if inbox.messages.len() >= INBOX_LIMIT {
                    inbox.paused = true;
                    return;
                }
            }
            match context.read(&mut &self.wire) {
                Ok(message) => self.take(message),
                Err(WsError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return self.end(None),
                Err(error) => return self.end(Some(error)),
            }
        }
    }

    fn on_writable(&self) {
        self.writable.wake();
    }

    fn on_panic(&self, why: String) {
        self.end(Some(WsError::Io(io::Error::other(why))));
    }
}

impl Drop for DirectConnection {
    fn drop(&mut self) {
        if let Some(token) = self.token.get() {
            self.reactor.deregister(self.wire.tcp.as_raw_fd(), *token);
        }
        lock(&self.wire.uplink).detach(self.wire.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::playout::Downlink;
    use crate::settings::options::MediaLimits;
    use crate::settings::ContentType;
    use futures_util::{SinkExt, StreamExt};
    use std::time::{Duration, Instant};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::WebSocketStream;

    /// A direct connection to a tungstenite server on loopback, upgraded.
    async fn connected(
        media: &Arc<CallMedia>,
        reactor: &Arc<Reactor>,
    ) -> (Arc<DirectConnection>, WebSocketStream<tokio::net::TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_tungstenite::accept_async(tcp).await.unwrap()
        });
        let uri = crate::settings::ServerUri::parse(&format!("ws://127.0.0.1:{port}/")).unwrap();
        let connection = crate::wire::websocket::connect_direct(
            &uri,
            WebSocketConfig::default(),
            &[],
            &[],
            64 * 1024,
            media.clone(),
            reactor.clone(),
        )
        .await
        .unwrap();
        (connection, server.await.unwrap())
    }

    async fn wait_until(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        false
    }

    fn next(connection: &DirectConnection) -> Poll<Option<Result<Message, WsError>>> {
        connection.poll_next(&mut Context::from_waker(futures_util::task::noop_waker_ref()))
    }

    #[tokio::test]
    async fn server_audio_reaches_the_playout_without_the_task_and_text_keeps_its_place() {
        let reactor = Reactor::spawn(std::time::Duration::from_millis(2)).unwrap();
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let (connection, mut server) = connected(&media, &reactor).await;
        assert!(next(&connection).is_pending(), "the task asks for a message: reading starts");
        media.set_direct_audio(true);
        for n in 0..5u8 {
            server.send(Message::binary(vec![n; 320])).await.unwrap();
        }
        assert!(wait_until(|| media.stats.frames_received.load(std::sync::atomic::Ordering::Relaxed) == 5).await);
        assert!(next(&connection).is_pending(), "audio is not the task's to see");
        assert!(media.buffered_playout() >= Duration::from_millis(100), "five frames wait to be played");
        // Text, then audio behind it: the audio waits behind the text, for the task.
        server.send(Message::text("{\"type\":\"clear\"}")).await.unwrap();
        server.send(Message::binary(vec![9u8; 320])).await.unwrap();
        assert!(wait_until(|| lock(&connection.inbox).messages.len() == 2).await);
        match next(&connection) {
            Poll::Ready(Some(Ok(Message::Text(text)))) => assert_eq!(text.as_str(), "{\"type\":\"clear\"}"),
            other => panic!("expected the text first, got {other:?}"),
        }
        match next(&connection) {
            Poll::Ready(Some(Ok(Message::Binary(data)))) => assert_eq!(data[0], 9),
            other => panic!("expected the audio behind it, got {other:?}"),
        }
        let mut frame = vec![0i16; 160];
        for _ in 0..3 {
            media.next_downlink_frame(&mut frame);
        }
        assert_eq!(media.next_downlink_frame(&mut frame), Downlink::Audio);
        reactor.shut_down();
    }

    #[tokio::test]
    async fn a_close_sent_at_once_waits_until_the_task_has_sent_its_first_message() {
        let reactor = Reactor::spawn(std::time::Duration::from_millis(2)).unwrap();
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let (connection, mut server) = connected(&media, &reactor).await;
        server.send(Message::Close(None)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        connection.start_send(Message::text("first")).unwrap();
        std::future::poll_fn(|cx| connection.poll_flush(cx)).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), server.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "first"),
            other => panic!("expected the first message, got {other:?}"),
        }
        assert!(wait_until(|| matches!(next(&connection), Poll::Ready(Some(Ok(Message::Close(_)))))).await);
        reactor.shut_down();
    }

    #[tokio::test]
    async fn pings_are_answered_and_a_close_from_the_server_ends_the_stream() {
        let reactor = Reactor::spawn(std::time::Duration::from_millis(2)).unwrap();
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let (connection, mut server) = connected(&media, &reactor).await;
        assert!(next(&connection).is_pending(), "the task asks for a message: reading starts");
        server.send(Message::Ping("are you there".into())).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), server.next()).await.unwrap() {
            Some(Ok(Message::Pong(data))) => assert_eq!(&data[..], b"are you there"),
            other => panic!("expected the pong, got {other:?}"),
        }
        let close = CloseFrame { code: CloseCode::Away, reason: "bye".into() };
        server.send(Message::Close(Some(close))).await.unwrap();
        assert!(wait_until(|| !lock(&connection.inbox).messages.is_empty()).await);
        match next(&connection) {
            Poll::Ready(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(frame.reason.as_str(), "bye"),
            other => panic!("expected the close, got {other:?}"),
        }
        // tungstenite answered the close; the server sees it, then the end.
        match tokio::time::timeout(Duration::from_secs(5), server.next()).await.unwrap() {
            Some(Ok(Message::Close(_))) | None => {}
            other => panic!("expected the close reply, got {other:?}"),
        }
        drop(server);
        assert!(wait_until(|| matches!(next(&connection), Poll::Ready(None))).await, "the stream ends");
        reactor.shut_down();
    }

    #[tokio::test]
    async fn a_full_inbox_stops_the_reading_until_the_task_takes_from_it() {
        let reactor = Reactor::spawn(std::time::Duration::from_millis(2)).unwrap();
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let (connection, mut server) = connected(&media, &reactor).await;
        assert!(next(&connection).is_pending(), "the task asks for a message: reading starts");
        for n in 0..(INBOX_LIMIT * 3) {
            server.send(Message::text(format!("{n}"))).await.unwrap();
        }
        assert!(wait_until(|| lock(&connection.inbox).paused).await, "the reader stopped at the limit");
        assert_eq!(lock(&connection.inbox).messages.len(), INBOX_LIMIT);
        let mut taken = Vec::new();
        while taken.len() < INBOX_LIMIT * 3 {
            match next(&connection) {
                Poll::Ready(Some(Ok(Message::Text(text)))) => taken.push(text.as_str().parse::<usize>().unwrap()),
                Poll::Pending => tokio::time::sleep(Duration::from_millis(2)).await,
                other => panic!("unexpected {other:?}"),
            }
            assert!(lock(&connection.inbox).messages.len() <= INBOX_LIMIT, "never more than the limit");
        }
        assert_eq!(taken, (0..INBOX_LIMIT * 3).collect::<Vec<_>>(), "all of them, in order");
        reactor.shut_down();
    }

    #[tokio::test]
    async fn the_tasks_messages_and_the_session_threads_audio_reach_the_server_whole() {
        let reactor = Reactor::spawn(std::time::Duration::from_millis(2)).unwrap();
        let media = Arc::new(CallMedia::new(ContentType::l16(8000), MediaLimits::default(), None));
        let (connection, mut server) = connected(&media, &reactor).await;
        media.mark_open("test");
        media.set_direct_audio(true);
        let session = {
            let media = media.clone();
            std::thread::spawn(move || {
                for n in 0..200u16 {
                    let mut frame = vec![0u8; 320];
                    frame[..2].copy_from_slice(&n.to_le_bytes());
                    media.send_audio(&frame);
                }
            })
        };
        for n in 0..20 {
            connection.start_send(Message::text(format!("text {n}"))).unwrap();
            std::future::poll_fn(|cx| connection.poll_flush(cx)).await.unwrap();
        }
        session.join().unwrap();
        std::future::poll_fn(|cx| connection.poll_close(cx)).await.unwrap();
        let (mut frames, mut texts, mut last) = (0, 0, None);
        while let Some(Ok(message)) = server.next().await {
            match message {
                Message::Binary(data) => {
                    let n = u16::from_le_bytes([data[0], data[1]]);
                    assert!(last.is_none_or(|last| n == last + 1), "frames in order");
                    last = Some(n);
                    frames += 1;
                }
                Message::Text(_) => texts += 1,
                Message::Close(_) => break,
                _ => {}
            }
        }
        assert_eq!((frames, texts), (200, 20));
        reactor.shut_down();
    }
}
