//! A plain `ws://` connection's TCP socket, shared by the call's task and
//! its session thread. The task reads it (tungstenite, as before) and
//! writes through the call's uplink lock; the session thread writes caller
//! audio to it directly ([`crate::audio::uplink_writer`]), framed here.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::audio::uplink_writer::{Uplink, UplinkSocket};
use crate::support::sync::lock;

/// What the session thread writes to: the socket, and the framing of a
/// client's binary WebSocket message.
struct AudioOut {
    tcp: Arc<TcpStream>,
}

impl UplinkSocket for AudioOut {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        self.tcp.try_write(bytes)
    }

    fn frame_audio(&self, payload: &[u8], out: &mut Vec<u8>) {
        super::frame::audio_frame(payload, out);
    }
}

/// The task's side of the socket: tungstenite's reads, and its writes in
/// order with the session thread's.
pub struct SharedTcp {
    tcp: Arc<TcpStream>,
    uplink: Arc<Mutex<Uplink>>,
    id: u64,
}

impl SharedTcp {
    /// Makes `tcp` the uplink's connection; caller audio goes to it
    /// directly once the task turns that on ([`Uplink::set_direct_audio`]).
    pub fn attach(tcp: TcpStream, uplink: Arc<Mutex<Uplink>>) -> SharedTcp {
        let tcp = Arc::new(tcp);
        let id = lock(&uplink).attach(Arc::new(AudioOut { tcp: tcp.clone() }));
        SharedTcp { tcp, uplink, id }
    }

    /// Runs `write` under the uplink's lock until it stops answering `WouldBlock`,
    /// waiting for the socket to be writable in between.
    fn poll_locked<T>(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&mut Uplink) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            let written = write(&mut lock(&self.uplink));
            match written {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => ready!(self.tcp.poll_write_ready(cx))?,
                done => return Poll::Ready(done),
            }
        }
    }
}

impl Drop for SharedTcp {
    fn drop(&mut self) {
        lock(&self.uplink).detach(self.id);
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The readiness was stale and is cleared: wait for the next.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let id = self.id;
        self.poll_locked(cx, |uplink| uplink.write_through(id, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        self.poll_locked(cx, |uplink| uplink.flush(id))
    }

    /// Sends what waits; the socket closes when the last of it is dropped.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::uplink::UplinkQueue;
    use crate::audio::uplink_writer::Direct;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpSocket;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    /// A connection with small buffers, so that a few frames fill it.
    async fn pair() -> (TcpStream, TcpStream) {
        let listening = TcpSocket::new_v4().unwrap();
        listening.set_recv_buffer_size(8 * 1024).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(8 * 1024).unwrap();
        let client = socket.connect(listener.local_addr().unwrap()).await.unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    /// Frames from a session thread and tungstenite's own messages arrive
    /// whole and in order at a server that stops reading for a while, so
    /// that sends are cut short and the backlog fills and drains.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_frames_and_the_tasks_messages_arrive_whole_through_a_full_socket() {
        let (client, server) = pair().await;
        let uplink = Arc::new(Mutex::new(Uplink::new(UplinkQueue::new(100_000))));
        let shared = SharedTcp::attach(client, uplink.clone());
        let mut ws = WebSocketStream::from_raw_socket(shared, Role::Client, None).await;
        lock(&uplink).set_direct_audio(true);
        let session = {
            let uplink = uplink.clone();
            std::thread::spawn(move || {
                let (mut sent, mut queued) = (0u32, 0u32);
                for n in 0..3000u32 {
                    let frame = [n.to_le_bytes().as_slice(), &[7u8; 636]].concat();
                    match lock(&uplink).send_direct(&frame) {
                        Direct::NotNow => queued += 1,
                        _ => sent += 1,
                    }
                    if n % 50 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                (sent, queued)
            })
        };
        for n in 0..50 {
            ws.send(Message::text(format!("text {n}"))).await.unwrap();
        }
        let reader = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let mut server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
            let (mut frames, mut texts, mut last) = (0u32, 0u32, None);
            while let Some(Ok(message)) = server.next().await {
                match message {
                    Message::Binary(data) => {
                        assert_eq!(data.len(), 640);
                        let n = u32::from_le_bytes(data[..4].try_into().unwrap());
                        assert!(last.is_none_or(|last| n > last), "frames in order");
                        last = Some(n);
                        frames += 1;
                    }
                    Message::Text(_) => texts += 1,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            (frames, texts)
        });
        let (sent, queued) = session.join().unwrap();
        assert!(queued > 0, "the socket filled: some frames had to queue");
        ws.flush().await.unwrap();
        let _ = ws.close(None).await;
        let (frames, texts) = reader.await.unwrap();
        assert_eq!((frames, texts), (sent, 50));
    }
}
