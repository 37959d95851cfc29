//! `Expect: 100-continue` passed through: the app, not the sidecar, asks the client
//! for the body.
//!
//! hyper's server answers `100 Continue` by itself the first time a request body is
//! read, so a proxy that forwards the body at once asks every client for its body
//! before the app has looked at the head: a client sends 2 MB only to be refused
//! with 413. Instead the request body sent to the app waits behind a [`Gate`] that
//! opens when the app sends its own `100 Continue` (hyper's client reports it), or
//! after [`WAIT_FOR_APP`] for apps that never send one (as curl waits 1 s). When the
//! app answers with a final status first, the client is never asked for the body;
//! the app connection, with a request half-sent, is then closed rather than reused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{HeaderMap, Request, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::upstream::{Body, BoxError};

/// How long the body waits for the app's `100 Continue` before it is sent anyway.
pub(crate) const WAIT_FOR_APP: Duration = Duration::from_secs(1);

const WAITING: u8 = 0;
const OPEN: u8 = 1;
const ABORTED: u8 = 2;

/// Whether the client sent `Expect: 100-continue`.
pub(crate) fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Holds a request body until the app asks for it.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl Gate {
    /// The app asked for the body (or it was waited for long enough).
    fn open(&self) {
        if self
            .state
            .compare_exchange(WAITING, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    /// The app answered without asking for the body, and its answer has been relayed:
    /// the body is never sent, which ends the half-sent request's connection. Returns
    /// whether the body was held back (the connection must not be reused).
    pub(crate) fn abort_if_waiting(&self) -> bool {
        let aborted = self
            .state
            .compare_exchange(WAITING, ABORTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if aborted {
            self.waker.wake();
        }
        aborted
    }
}

/// Puts `request`'s body behind a gate the app's `100 Continue` opens.
pub(crate) fn gate(request: &mut Request<Body>) -> Arc<Gate> {
    let gate = Arc::new(Gate::default());
    let opener = gate.clone();
    hyper::ext::on_informational(request, move |response| {
        if response.status() == http::StatusCode::CONTINUE {
            opener.open();
        }
    });
    let body = std::mem::replace(request.body_mut(), crate::upstream::empty());
    *request.body_mut() = Gated {
        inner: body,
        gate: gate.clone(),
        timer: None,
    }
    .boxed_unsync();
    gate
}

/// A request body that yields nothing until its gate opens.
struct Gated {
    inner: Body,
    gate: Arc<Gate>,
    /// Started when the app's connection first asks for the body (after any hold
    /// for a starting app), not when the request arrived.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error that ends a body the app never asked for.
#[derive(Debug, thiserror::Error)]
#[error("the app answered before asking for the request body")]
struct NotAskedFor;

impl HttpBody for Gated {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.gate.state.load(Ordering::Acquire) {
                OPEN => return Pin::new(&mut this.inner).poll_frame(cx),
                ABORTED => return Poll::Ready(Some(Err(Box::new(NotAskedFor)))),
                _ => {}
            }
            this.gate.waker.register(cx.waker());
            if this.gate.state.load(Ordering::Acquire) != WAITING {
                continue;
            }
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(WAIT_FOR_APP)));
            if timer.as_mut().poll(cx).is_ready() {
                this.gate.open();
                continue;
            }
            return Poll::Pending;
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_body() -> Request<Body> {
        Request::new(crate::upstream::full("payload"))
    }

    #[tokio::test(start_paused = true)]
    async fn the_body_waits_for_the_apps_continue() {
        let mut request = with_body();
        let gate = gate(&mut request);
        let mut body = request.into_body();
        let frame = tokio::time::timeout(Duration::from_millis(500), body.frame()).await;
        assert!(frame.is_err(), "nothing before the app asks");
        gate.open();
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), "payload");
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_that_never_asks_gets_the_body_a_second_after_asking_for_it() {
        let mut request = with_body();
        let _gate = gate(&mut request);
        // A hold for a starting app does not count against the wait.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let started = tokio::time::Instant::now();
        let frame = request.into_body().frame().await.expect("frame");
        assert!(frame.is_ok());
        assert_eq!(started.elapsed(), WAIT_FOR_APP);
    }

    #[tokio::test]
    async fn a_body_the_app_never_asked_for_ends_in_an_error() {
        let mut request = with_body();
        let gate = gate(&mut request);
        assert!(gate.abort_if_waiting());
        let frame = request.into_body().frame().await.expect("frame");
        assert!(frame.is_err());
        assert!(!gate.abort_if_waiting(), "only once");
    }

    #[test]
    fn only_100_continue_is_an_expectation() {
        let mut headers = HeaderMap::new();
        assert!(!expects_continue(&headers));
        headers.insert(header::EXPECT, "100-Continue".parse().expect("value"));
        assert!(expects_continue(&headers));
        headers.insert(header::EXPECT, "something-else".parse().expect("value"));
        assert!(!expects_continue(&headers));
    }
}
