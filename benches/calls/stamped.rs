#![allow(unsafe_code)] // recvmsg and setsockopt, in two commented blocks

//! The echo server's TCP stream, read with `recvmsg` so that every read carries
//! the kernel's receive time of its data (SO_TIMESTAMPNS): the uplink's jitter
//! is then timed when the frame reached the machine, not when the server's task
//! got round to it, and the server's own scheduling is not charged to the module.
//!
//! For TCP the kernel stamps a read with the arrival of the last segment it
//! consumed. Each read is capped at one caller frame on the wire, so while the
//! server keeps up (one frame waiting at a time, each in its own segment: the
//! module writes with TCP_NODELAY) a frame's stamp is its own segment's. Behind
//! a backlog, a read may end inside the next frame and carry its stamp, up to
//! one frame period late.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// SO_TIMESTAMPNS (SO_TIMESTAMPNS_OLD) and its control message type on Linux
/// with a 64-bit time_t; libc exports it for some targets only.
const SO_TIMESTAMPNS: libc::c_int = 35;
const SCM_TIMESTAMPNS: libc::c_int = SO_TIMESTAMPNS;

pub struct Stamped {
    tcp: TcpStream,
    /// The most recent read's kernel receive time, ns since the Unix epoch; 0 for none yet.
    stamp: Arc<AtomicU64>,
    read_cap: usize,
}

impl Stamped {
    /// Asks the kernel for receive timestamps; without them every stamp stays 0.
    pub fn new(tcp: TcpStream, read_cap: usize) -> (Stamped, Arc<AtomicU64>) {
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option value of the size given.
        let _ = unsafe {
            libc::setsockopt(
                tcp.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_TIMESTAMPNS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let stamp = Arc::new(AtomicU64::new(0));
        (Stamped { tcp, stamp: stamp.clone(), read_cap }, stamp)
    }
}

/// One `recvmsg`: the bytes read and, when the kernel gave one, their receive time in ns.
fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // Room for a few control messages, aligned as cmsghdr wants.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; all zeros is a valid, empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at one iovec over `buf` and at `control`, both alive and of the lengths given.
    let read = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    // Walk the control messages in safe code: cmsghdr is {len: usize, level: i32, type: i32}.
    let bytes: Vec<u8> = control.iter().flat_map(|word| word.to_ne_bytes()).collect();
    let end = (msg.msg_controllen as usize).min(bytes.len());
    let word = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
    let int = |at: usize| i32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut at = 0;
    let mut stamp = None;
    while at + 16 <= end {
        let len = word(at) as usize;
        if len < 16 {
            break;
        }
        if int(at + 8) == libc::SOL_SOCKET && int(at + 12) == SCM_TIMESTAMPNS && at + 32 <= end {
            // struct timespec { tv_sec: i64, tv_nsec: i64 }
            stamp = Some(word(at + 16) * 1_000_000_000 + word(at + 24));
        }
        at += len.next_multiple_of(8);
    }
    Ok((read as usize, stamp))
}

impl AsyncRead for Stamped {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let fd = this.tcp.as_raw_fd();
        loop {
            ready!(this.tcp.poll_read_ready(cx))?;
            let cap = this.read_cap.min(buf.remaining());
            let unfilled = &mut buf.initialize_unfilled()[..cap];
            match this.tcp.try_io(Interest::READABLE, || recv_stamped(fd, unfilled)) {
                Ok((read, stamp)) => {
                    if let Some(stamp) = stamp {
                        this.stamp.store(stamp, Ordering::Relaxed);
                    }
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Stamped {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
