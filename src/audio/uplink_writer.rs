//! The uplink's one lock: the caller-to-server queue, and the write side of
//! the connection when the session thread may write caller audio itself.
//!
//! On a plain `ws://` connection whose protocol sends caller audio as
//! binary messages as they are, the session thread that has a frame frames
//! it and writes it to the socket right there, in one non-blocking send,
//! under this lock. Everything the call's task writes on that connection
//! (text, pings, pongs, the close) goes through the same lock
//! ([`Uplink::write_through`]), so frames never interleave. Whatever the
//! socket does not take at once is kept in order in a backlog that only the
//! task drains, when the socket is writable; while anything waits (queued
//! items, items the task holds, a backlog) caller audio is queued as before,
//! which keeps the order and the backpressure of the queue.

use std::io;
use std::sync::Arc;

use crate::audio::uplink::UplinkQueue;

/// A connection's socket as the uplink writes to it: it never blocks.
pub trait UplinkSocket: Send + Sync {
    /// Writes what the socket takes now; `WouldBlock` when it takes nothing.
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize>;
    /// One message of caller audio as the wire carries it, into `out` (cleared first).
    fn frame_audio(&self, payload: &[u8], out: &mut Vec<u8>);
}

/// Past this much backlog the task's writes wait for the socket, as its
/// writes into a full socket did before.
const MAX_BACKLOG_BYTES: usize = 64 * 1024;

/// One connection's write side.
struct Outlet {
    id: u64,
    socket: Arc<dyn UplinkSocket>,
    /// Bytes of the stream, in order, that the socket has not taken yet.
    backlog: Vec<u8>,
    /// Where the backlog's untaken bytes start.
    taken: usize,
    /// Caller audio may be written from the session thread.
    audio: bool,
}

impl Outlet {
    fn has_backlog(&self) -> bool {
        self.taken < self.backlog.len()
    }

    /// Writes the backlog until the socket stops taking it; true when none is left.
    fn drain(&mut self) -> io::Result<bool> {
        while self.has_backlog() {
            match self.socket.try_write(&self.backlog[self.taken..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.taken += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        self.backlog.clear();
        self.taken = 0;
        Ok(true)
    }

    /// Keeps `bytes` after what the backlog holds.
    fn keep(&mut self, bytes: &[u8]) {
        if self.taken > 0 && self.taken == self.backlog.len() {
            self.backlog.clear();
            self.taken = 0;
        }
        self.backlog.extend_from_slice(bytes);
    }
}

/// What [`Uplink::send_direct`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// Not written: queue it.
    NotNow,
    /// All in the socket.
    Sent,
    /// Written in part; the rest waits in the backlog for the task to flush.
    SentInPart,
}

/// The queue and the connection's write side, under one lock.
pub struct Uplink {
    pub queue: UplinkQueue,
    /// The task holds items taken off the queue that are not all in the stream yet.
    held: bool,
    outlet: Option<Outlet>,
    /// The frame being written, kept from frame to frame.
    frame: Vec<u8>,
    next_id: u64,
}

fn replaced() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection's uplink was replaced by a newer connection")
}

impl Uplink {
    pub fn new(queue: UplinkQueue) -> Self {
        Uplink { queue, held: false, outlet: None, frame: Vec::new(), next_id: 1 }
    }

    // ---- the session thread ----

    /// Writes one message of caller audio to the socket now, when nothing
    /// is waiting ahead of it and the socket takes at least part of it.
    pub fn send_direct(&mut self, payload: &[u8]) -> Direct {
        let Some(outlet) = self.outlet.as_mut() else { return Direct::NotNow };
        if !outlet.audio || outlet.has_backlog() || self.held || !self.queue.is_empty() {
            return Direct::NotNow;
        }
        outlet.socket.frame_audio(payload, &mut self.frame);
        match outlet.socket.try_write(&self.frame) {
            Ok(n) if n == self.frame.len() => Direct::Sent,
            Ok(0) => Direct::NotNow,
            Ok(n) => {
                outlet.keep(&self.frame[n..]);
                Direct::SentInPart
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Direct::NotNow,
            // A broken socket: the task finds out on its own side; audio waits in the queue meanwhile.
            Err(_) => {
                outlet.audio = false;
                Direct::NotNow
            }
        }
    }

    // ---- the task ----

    /// A new connection's write side; returns its id. Any older one's
    /// backlog is dropped with it: those bytes were for a socket now gone.
    pub fn attach(&mut self, socket: Arc<dyn UplinkSocket>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.outlet = Some(Outlet { id, socket, backlog: Vec::new(), taken: 0, audio: false });
        id
    }

    /// The connection `id` is gone.
    pub fn detach(&mut self, id: u64) {
        if self.outlet.as_ref().is_some_and(|outlet| outlet.id == id) {
            self.outlet = None;
        }
    }

    /// Lets the session thread write caller audio to the connection, or stops it.
    pub fn set_direct_audio(&mut self, on: bool) {
        if let Some(outlet) = self.outlet.as_mut() {
            outlet.audio = on;
        }
    }

    /// Items were taken off the queue for the socket.
    pub fn set_held(&mut self, held: bool) {
        self.held = held;
    }

    pub fn has_backlog(&self) -> bool {
        self.outlet.as_ref().is_some_and(Outlet::has_backlog)
    }

    fn outlet(&mut self, id: u64) -> io::Result<&mut Outlet> {
        self.outlet.as_mut().filter(|outlet| outlet.id == id).ok_or_else(replaced)
    }

    /// The task's bytes for connection `id`, behind the backlog: all taken
    /// (the socket's share written, the rest kept), or `WouldBlock` with
    /// none taken while the backlog is over its bound.
    pub fn write_through(&mut self, id: u64, bytes: &[u8]) -> io::Result<usize> {
        let outlet = self.outlet(id)?;
        if !outlet.drain()? && outlet.backlog.len() - outlet.taken >= MAX_BACKLOG_BYTES {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let written = match outlet.has_backlog() {
            true => 0,
            false => match outlet.socket.try_write(bytes) {
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                Err(error) => return Err(error),
            },
        };
        outlet.keep(&bytes[written..]);
        Ok(bytes.len())
    }

    /// Writes the backlog of connection `id`; `WouldBlock` while some is left.
    pub fn flush(&mut self, id: u64) -> io::Result<()> {
        match self.outlet(id)?.drain()? {
            true => Ok(()),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A socket that takes at most `room` bytes, then would block until given more room.
    #[derive(Default)]
    struct Socket {
        room: Mutex<usize>,
        wire: Mutex<Vec<u8>>,
        broken: Mutex<bool>,
    }

    impl Socket {
        fn with_room(room: usize) -> Arc<Socket> {
            Arc::new(Socket { room: Mutex::new(room), ..Socket::default() })
        }
        fn give(&self, room: usize) {
            *self.room.lock().unwrap() += room;
        }
        fn wire(&self) -> Vec<u8> {
            self.wire.lock().unwrap().clone()
        }
    }

    impl UplinkSocket for Socket {
        fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
            if *self.broken.lock().unwrap() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let mut room = self.room.lock().unwrap();
            let n = bytes.len().min(*room);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            *room -= n;
            self.wire.lock().unwrap().extend_from_slice(&bytes[..n]);
            Ok(n)
        }
        fn frame_audio(&self, payload: &[u8], out: &mut Vec<u8>) {
            out.clear();
            out.push(b'[');
            out.extend_from_slice(payload);
            out.push(b']');
        }
    }

    fn uplink_on(socket: &Arc<Socket>) -> (Uplink, u64) {
        let mut uplink = Uplink::new(UplinkQueue::new(50));
        let id = uplink.attach(socket.clone());
        uplink.set_direct_audio(true);
        (uplink, id)
    }

    #[test]
    fn a_frame_goes_straight_to_the_socket_when_nothing_waits() {
        let socket = Socket::with_room(1000);
        let (mut uplink, _) = uplink_on(&socket);
        assert_eq!(uplink.send_direct(b"ab"), Direct::Sent);
        assert_eq!(uplink.send_direct(b"cd"), Direct::Sent);
        assert_eq!(socket.wire(), b"[ab][cd]");
        assert!(!uplink.has_backlog());
    }

    #[test]
    fn a_partial_write_keeps_the_rest_for_the_task_and_later_frames_queue() {
        let socket = Socket::with_room(3);
        let (mut uplink, id) = uplink_on(&socket);
        assert_eq!(uplink.send_direct(b"abcd"), Direct::SentInPart);
        assert!(uplink.has_backlog());
        assert_eq!(uplink.send_direct(b"ef"), Direct::NotNow, "behind a backlog: queued");
        assert!(matches!(uplink.flush(id), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
        socket.give(2);
        assert!(uplink.flush(id).is_err(), "one byte still waits");
        socket.give(100);
        uplink.flush(id).unwrap();
        assert_eq!(socket.wire(), b"[abcd]");
        assert_eq!(uplink.send_direct(b"gh"), Direct::Sent, "direct again once drained");
        assert_eq!(socket.wire(), b"[abcd][gh]");
    }

    #[test]
    fn the_tasks_writes_never_interleave_with_a_frame() {
        let socket = Socket::with_room(2);
        let (mut uplink, id) = uplink_on(&socket);
        assert_eq!(uplink.send_direct(b"abc"), Direct::SentInPart);
        // A pong from the task: taken whole, behind the frame's rest.
        assert_eq!(uplink.write_through(id, b"<pong>").unwrap(), 6);
        socket.give(100);
        uplink.flush(id).unwrap();
        assert_eq!(socket.wire(), b"[abc]<pong>");
        // The task's bytes are taken whole even when the socket takes part.
        *socket.room.lock().unwrap() = 1;
        assert_eq!(uplink.write_through(id, b"xyz").unwrap(), 3);
        assert_eq!(uplink.send_direct(b"q"), Direct::NotNow, "not while the task's bytes wait");
        socket.give(100);
        uplink.flush(id).unwrap();
        assert_eq!(socket.wire(), b"[abc]<pong>xyz");
    }

    #[test]
    fn a_full_backlog_makes_the_task_wait_without_taking_anything() {
        let socket = Socket::with_room(0);
        let (mut uplink, id) = uplink_on(&socket);
        let big = vec![7u8; MAX_BACKLOG_BYTES];
        assert_eq!(uplink.write_through(id, &big).unwrap(), big.len());
        let blocked = uplink.write_through(id, b"more").unwrap_err();
        assert_eq!(blocked.kind(), io::ErrorKind::WouldBlock);
        socket.give(usize::MAX / 2);
        assert_eq!(uplink.write_through(id, b"more").unwrap(), 4);
        uplink.flush(id).unwrap();
        assert_eq!(socket.wire().len(), MAX_BACKLOG_BYTES + 4);
    }

    #[test]
    fn nothing_goes_direct_while_items_wait_or_are_held_or_audio_is_off() {
        let socket = Socket::with_room(1000);
        let (mut uplink, _) = uplink_on(&socket);
        uplink.queue.push_control(crate::audio::uplink::ToServer::Cleared);
        assert_eq!(uplink.send_direct(b"a"), Direct::NotNow, "a queued item goes first");
        let mut batch = std::collections::VecDeque::new();
        uplink.queue.take_all(&mut batch);
        uplink.set_held(true);
        assert_eq!(uplink.send_direct(b"a"), Direct::NotNow, "the task's batch goes first");
        uplink.set_held(false);
        uplink.set_direct_audio(false);
        assert_eq!(uplink.send_direct(b"a"), Direct::NotNow, "audio off");
        uplink.set_direct_audio(true);
        assert_eq!(uplink.send_direct(b"a"), Direct::Sent);
    }

    #[test]
    fn a_broken_socket_stops_direct_audio_and_a_new_connection_starts_clean() {
        let socket = Socket::with_room(100);
        let (mut uplink, old) = uplink_on(&socket);
        *socket.broken.lock().unwrap() = true;
        assert_eq!(uplink.send_direct(b"x"), Direct::NotNow);
        *socket.broken.lock().unwrap() = false;
        assert_eq!(uplink.send_direct(b"x"), Direct::NotNow, "off once the socket failed");
        uplink.set_direct_audio(true);
        *socket.room.lock().unwrap() = 2;
        assert_eq!(uplink.send_direct(b"abcd"), Direct::SentInPart);
        let fresh = Socket::with_room(100);
        let new = uplink.attach(fresh.clone());
        assert_eq!(uplink.write_through(old, b"late").unwrap_err().kind(), io::ErrorKind::NotConnected);
        uplink.detach(old);
        assert_eq!(uplink.write_through(new, b"hello").unwrap(), 5);
        assert_eq!(uplink.send_direct(b"x"), Direct::NotNow, "off until the task turns it on");
        uplink.set_direct_audio(true);
        assert_eq!(uplink.send_direct(b"x"), Direct::Sent);
        assert_eq!(fresh.wire(), b"hello[x]", "nothing of the old connection's backlog");
        uplink.detach(new);
        assert_eq!(uplink.send_direct(b"x"), Direct::NotNow);
    }
}
