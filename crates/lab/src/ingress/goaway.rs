//! Notices an HTTP/2 GOAWAY from a pod on the embedded ingress's upstream connection:
//! the server's frames are followed by their 9-byte headers (nothing is copied or
//! changed), so the ingress stops choosing a connection it was told to leave, as
//! nginx closes a kept-alive upstream connection that received GOAWAY.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The frame type of GOAWAY (RFC 9113 §6.8).
const GOAWAY: u8 = 0x7;
/// The length of a frame header.
const HEADER: usize = 9;

/// An upstream connection whose incoming frames are watched for GOAWAY.
#[derive(Debug)]
pub(crate) struct Watched<T> {
    io: T,
    seen: Arc<AtomicBool>,
    header: [u8; HEADER],
    have: usize,
    skip: usize,
}

impl<T> Watched<T> {
    /// Wraps `io`; `seen` turns true once a GOAWAY arrives.
    pub(crate) fn new(io: T, seen: Arc<AtomicBool>) -> Self {
        Self {
            io,
            seen,
            header: [0; HEADER],
            have: 0,
            skip: 0,
        }
    }

    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == HEADER {
                let [a, b, c, kind, ..] = self.header;
                self.skip = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                if kind == GOAWAY {
                    self.seen.store(true, Ordering::Relaxed);
                }
                self.have = 0;
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let filled = buf.filled();
            let fresh = filled.get(before..).unwrap_or_default();
            this.follow(fresh);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut bytes = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            0,
        ];
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_goaway_is_seen_across_split_reads_and_payloads_are_skipped() {
        let seen = Arc::new(AtomicBool::new(false));
        let mut watched = Watched::new((), seen.clone());
        // A DATA frame whose payload looks like a GOAWAY header must not count.
        let mut stream = frame(0x0, &frame(GOAWAY, &[0; 8]));
        stream.extend(frame(0x4, &[]));
        watched.follow(&stream);
        assert!(!seen.load(Ordering::Relaxed));
        let goaway = frame(GOAWAY, &[0, 0, 0, 1, 0, 0, 0, 0]);
        for byte in &goaway {
            watched.follow(std::slice::from_ref(byte));
        }
        assert!(seen.load(Ordering::Relaxed));
    }
}
