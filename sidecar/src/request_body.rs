//! A client's request body on its way to the app: timed, and reporting its end.
//!
//! A pause longer than `--request-body-timeout` between two pieces of the body ends
//! it with [`BodyTimeout`]; the proxy answers that request 408, the client's fault,
//! instead of waiting for the app's 504. The connection's watchdog learns whether
//! the body was read to its end (an idle connection is parked only once every body
//! was). The timer exists only once a read had to wait: a body that is already
//! there costs no allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::upstream::BoxError;
use crate::watchdog::ConnState;

/// The client paused its request body for longer than the timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing of its request body for {0:?}")]
pub(crate) struct BodyTimeout(pub(crate) Duration);

/// The client's body, timed and tracked.
pub(crate) struct RequestBody {
    inner: Incoming,
    conn: Arc<ConnState>,
    timeout: Duration,
    /// Set at the first read that has to wait; reset by every frame.
    timer: Option<Pin<Box<Sleep>>>,
    /// Reported to the watchdog already.
    ended: bool,
}

impl RequestBody {
    /// Tracks `inner`, a body that is not empty.
    pub(crate) fn new(inner: Incoming, conn: Arc<ConnState>, timeout: Duration) -> Self {
        conn.request_body_opened();
        Self {
            inner,
            conn,
            timeout,
            timer: None,
            ended: false,
        }
    }

    fn end(&mut self, complete: bool) {
        if !self.ended {
            self.ended = true;
            self.conn.request_body_closed(complete);
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.end(true);
                } else if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(Instant::now() + this.timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.end(false);
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => {
                this.end(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.end(false);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (a failed upstream request) was caused by [`BodyTimeout`].
pub(crate) fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause.is::<BodyTimeout>() {
            return true;
        }
        source = cause.source();
    }
    false
}
