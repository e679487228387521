//! The downlink reactor: one thread that reads every direct connection's
//! socket when it is ready, instead of a wake-up of the runtime and a poll
//! of the call's task for each message. A connection registers here
//! ([`super::direct`]); whatever it reads that the call's task must see is
//! handed on, and server audio goes straight to the playout.
//!
//! The thread is the module's, like the runtime: started at load, stopped
//! (and joined) at unload, before the module's code goes away.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::support::sync::lock;

/// A socket the reactor reads for.
pub trait Readable: Send + Sync {
    /// The socket is readable (or was kicked): read what it holds without blocking.
    fn on_readable(&self);
    /// The socket may take writes again.
    fn on_writable(&self) {}
    /// Reading it panicked: the connection must end, and its call hear why.
    fn on_panic(&self, why: String);
}

const WAKER: Token = Token(0);
/// Readiness events taken per wait; more wait for the next turn.
const EVENTS_PER_TURN: usize = 1024;

#[derive(Default)]
struct Registered {
    sockets: HashMap<Token, Weak<dyn Readable>>,
    /// To be read without waiting for the kernel: bytes already buffered, or reading resumed.
    kicked: Vec<Token>,
}

pub struct Reactor {
    registry: Registry,
    waker: Waker,
    registered: Mutex<Registered>,
    next_token: AtomicUsize,
    stopping: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

static REACTOR: Mutex<Option<Arc<Reactor>>> = Mutex::new(None);

/// Starts the module's reactor thread (once; again after [`stop`]), with
/// `batch` of rest after each turn.
pub fn start(batch: Duration) -> io::Result<()> {
    let mut current = lock(&REACTOR);
    if current.is_none() {
        *current = Some(Reactor::spawn(batch)?);
    }
    Ok(())
}

/// The running reactor; none before [`start`] or after [`stop`].
pub fn current() -> Option<Arc<Reactor>> {
    lock(&REACTOR).clone()
}

/// Stops the reactor thread and waits for it to exit. Connections still
/// registered are read no more: their calls end with the runtime.
pub fn stop() {
    let reactor = lock(&REACTOR).take();
    if let Some(reactor) = reactor {
        reactor.shut_down();
    }
}

impl Reactor {
    /// A reactor with its own thread, which rests `batch` after each turn
    /// that read something, so that the next turn finds many calls' messages.
    pub fn spawn(batch: Duration) -> io::Result<Arc<Reactor>> {
        let poll = Poll::new()?;
        let reactor = Arc::new(Reactor {
            registry: poll.registry().try_clone()?,
            waker: Waker::new(poll.registry(), WAKER)?,
            registered: Mutex::new(Registered::default()),
            next_token: AtomicUsize::new(1),
            stopping: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let running = reactor.clone();
        let thread =
            std::thread::Builder::new().name("wsbridge-read".into()).spawn(move || running.run(poll, batch))?;
        *lock(&reactor.thread) = Some(thread);
        Ok(reactor)
    }

    /// Stops the thread and joins it.
    pub fn shut_down(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }

    /// Reads `fd` for `socket` whenever the kernel says it is readable (and
    /// when [`kick`](Self::kick)ed), and tells it when the socket may take
    /// writes again; its token.
    pub fn register(&self, fd: RawFd, socket: Weak<dyn Readable>) -> io::Result<Token> {
        let token = Token(self.next_token.fetch_add(1, Ordering::Relaxed));
        lock(&self.registered).sockets.insert(token, socket);
        if let Err(error) = self.registry.register(&mut SourceFd(&fd), token, Interest::READABLE | Interest::WRITABLE) {
            lock(&self.registered).sockets.remove(&token);
            return Err(error);
        }
        Ok(token)
    }

    /// Reads `fd` no more. Called before the socket closes.
    pub fn deregister(&self, fd: RawFd, token: Token) {
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        lock(&self.registered).sockets.remove(&token);
    }

    /// Has the thread read `token`'s socket without waiting for the kernel to say it is ready.
    pub fn kick(&self, token: Token) {
        lock(&self.registered).kicked.push(token);
        // Fails only when the thread is gone, and then nothing reads anyway.
        let _ = self.waker.wake();
    }

    fn run(&self, mut poll: Poll, batch: Duration) {
        let mut events = Events::with_capacity(EVENTS_PER_TURN);
        let mut ready: Vec<(Arc<dyn Readable>, bool, bool)> = Vec::new();
        while !self.stopping.load(Ordering::Acquire) {
            if let Err(error) = poll.poll(&mut events, None) {
                if error.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("the downlink reactor cannot wait for sockets: {error}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                continue;
            }
            {
                let mut registered = lock(&self.registered);
                let kicked = std::mem::take(&mut registered.kicked);
                let events = events.iter().filter(|event| event.token() != WAKER);
                let events = events.map(|event| {
                    (
                        event.token(),
                        event.is_readable() || event.is_read_closed() || event.is_error(),
                        event.is_writable(),
                    )
                });
                for (token, readable, writable) in events.chain(kicked.into_iter().map(|token| (token, true, false))) {
                    if let Some(socket) = registered.sockets.get(&token).and_then(Weak::upgrade) {
                        ready.push((socket, readable, writable));
                    }
                }
            }
            let read_any = !ready.is_empty();
            for (socket, readable, writable) in ready.drain(..) {
                let turn = || {
                    if writable {
                        socket.on_writable();
                    }
                    if readable {
                        socket.on_readable();
                    }
                };
                if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(turn)) {
                    let why = crate::support::logging::describe_panic(payload.as_ref());
                    tracing::error!("panic reading a server's socket: {why}");
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| socket.on_panic(why)));
                }
            }
            // Audio comes every 20 ms per call: resting briefly lets one wake-up read many calls'.
            if read_any && !batch.is_zero() {
                std::thread::sleep(batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    struct Counting {
        tcp: TcpStream,
        bytes: AtomicUsize,
        reads: AtomicUsize,
    }

    impl Readable for Counting {
        fn on_readable(&self) {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let mut buffer = [0u8; 4096];
            while let Ok(n) = (&self.tcp).read(&mut buffer) {
                if n == 0 {
                    break;
                }
                self.bytes.fetch_add(n, Ordering::Relaxed);
            }
        }
        fn on_panic(&self, _why: String) {}
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let server = listener.accept().unwrap().0;
        client.set_nonblocking(true).unwrap();
        (client, server)
    }

    fn wait_until(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    #[test]
    fn every_registered_socket_is_read_as_data_arrives_and_none_after_it_leaves() {
        let reactor = Reactor::spawn(Duration::ZERO).unwrap();
        let mut sockets = Vec::new();
        for _ in 0..20 {
            let (client, server) = pair();
            let socket = Arc::new(Counting { tcp: client, bytes: 0.into(), reads: 0.into() });
            let weak: Weak<dyn Readable> = Arc::downgrade(&(socket.clone() as Arc<dyn Readable>));
            let token = reactor.register(socket.tcp.as_raw_fd(), weak).unwrap();
            sockets.push((socket, server, token));
        }
        for round in 1..=5 {
            for (_, server, _) in &mut sockets {
                server.write_all(&[7u8; 640]).unwrap();
            }
            assert!(wait_until(|| sockets.iter().all(|(s, _, _)| s.bytes.load(Ordering::Relaxed) == 640 * round)));
        }
        let (gone, mut server, token) = sockets.pop().unwrap();
        reactor.deregister(gone.tcp.as_raw_fd(), token);
        let reads = gone.reads.load(Ordering::Relaxed);
        server.write_all(&[1u8; 640]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(gone.reads.load(Ordering::Relaxed), reads, "a deregistered socket is not read");
        reactor.shut_down();
    }

    struct Panicking(AtomicUsize);

    impl Readable for Panicking {
        fn on_readable(&self) {
            panic!("reading went wrong");
        }
        fn on_panic(&self, _why: String) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_panic_reading_one_socket_is_told_to_it_and_the_thread_reads_on() {
        let reactor = Reactor::spawn(Duration::ZERO).unwrap();
        let (client, _server) = pair();
        let panicking = Arc::new(Panicking(0.into()));
        let weak: Weak<dyn Readable> = Arc::downgrade(&(panicking.clone() as Arc<dyn Readable>));
        let token = reactor.register(client.as_raw_fd(), weak).unwrap();
        reactor.kick(token);
        assert!(wait_until(|| panicking.0.load(Ordering::Relaxed) == 1), "the kick read it");
        let (client, mut server) = pair();
        let counting = Arc::new(Counting { tcp: client, bytes: 0.into(), reads: 0.into() });
        let weak: Weak<dyn Readable> = Arc::downgrade(&(counting.clone() as Arc<dyn Readable>));
        reactor.register(counting.tcp.as_raw_fd(), weak).unwrap();
        server.write_all(b"still read").unwrap();
        assert!(wait_until(|| counting.bytes.load(Ordering::Relaxed) == 10));
        reactor.shut_down();
    }
}
