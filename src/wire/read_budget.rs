//! A stream that reads at most so many bytes until told otherwise: a
//! listener's client gets what its upgrade request and its first message
//! may take, and no more is read (nor buffered by tungstenite, whatever a
//! frame header claims) before the first message is accepted.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::websocket::Io;

/// No limit.
const UNLIMITED: usize = usize::MAX;

/// What is left of a stream's budget; shared with the stream.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    left: Arc<AtomicUsize>,
    /// What an exhausted budget is reported as.
    over: Arc<std::sync::Mutex<String>>,
}

impl ReadBudget {
    /// Wraps `inner` so that it reads at most `bytes` (`over` says what that means, for the error).
    pub fn wrap(inner: Box<dyn Io>, bytes: usize, over: &str) -> (Box<dyn Io>, ReadBudget) {
        let budget = ReadBudget { left: Arc::new(AtomicUsize::new(bytes)), over: Arc::new(over.to_string().into()) };
        (Box::new(Budgeted { inner, budget: budget.clone(), scratch: Vec::new() }), budget)
    }

    /// From now on, at most `bytes` more.
    pub fn set(&self, bytes: usize, over: &str) {
        *crate::support::sync::lock(&self.over) = over.to_string();
        self.left.store(bytes, Ordering::Release);
    }

    /// No limit any more.
    pub fn lift(&self) {
        self.left.store(UNLIMITED, Ordering::Release);
    }

    pub fn left(&self) -> usize {
        self.left.load(Ordering::Acquire)
    }
}

struct Budgeted {
    inner: Box<dyn Io>,
    budget: ReadBudget,
    /// Where a budgeted read lands first, so that it can be cut to the budget.
    scratch: Vec<u8>,
}

impl AsyncRead for Budgeted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let left = self.budget.left();
        if left == UNLIMITED {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if left == 0 {
            let over = crate::support::sync::lock(&self.budget.over).clone();
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, over)));
        }
        // Only while budgeted (a few KiB before the first message): a copy, no unsafe.
        let this = &mut *self;
        this.scratch.resize(left.min(buf.remaining()), 0);
        let mut limited = ReadBuf::new(&mut this.scratch);
        let polled = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
        if let Poll::Ready(Ok(())) = polled {
            let read = limited.filled().len();
            buf.put_slice(limited.filled());
            let _ = this.budget.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now != UNLIMITED).then(|| now.saturating_sub(read))
            });
        }
        polled
    }
}

impl AsyncWrite for Budgeted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_stop_at_the_budget_until_it_is_lifted() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (mut stream, budget) = ReadBudget::wrap(Box::new(server), 100, "over 100 bytes");
        let mut client = client;
        client.write_all(&[7u8; 1000]).await.unwrap();
        let mut read = Vec::new();
        let mut chunk = [0u8; 64];
        let error = loop {
            match stream.read(&mut chunk).await {
                Ok(n) => read.extend_from_slice(&chunk[..n]),
                Err(error) => break error,
            }
        };
        assert_eq!(read.len(), 100, "no more than the budget is read");
        assert_eq!(error.to_string(), "over 100 bytes");
        budget.set(10, "over 10 more");
        assert_eq!(stream.read(&mut chunk).await.unwrap(), 10);
        assert_eq!(stream.read(&mut chunk).await.unwrap_err().to_string(), "over 10 more");
        budget.lift();
        let mut rest = vec![0u8; 890];
        stream.read_exact(&mut rest).await.unwrap();
        assert!(rest.iter().all(|b| *b == 7), "nothing was lost at the cuts");
        stream.write_all(b"writes are not counted").await.unwrap();
    }
}
