//! A client connection's watchdog: two clocks hyper does not keep the way a drain
//! proxy needs them.
//!
//! - Header deadline: from the first byte of a request head to its end (slowloris).
//!   hyper's own HTTP/1 header timer also runs while a keep-alive connection sits idle,
//!   which would close idle connections far below any client's pool idle timeout.
//! - Idle deadline: a keep-alive connection with nothing in flight for the idle
//!   timeout is closed gracefully.
//!
//! - Send deadline: a write to the client blocked (the client reads nothing) for the
//!   response send timeout closes the connection; the app connection it holds is
//!   freed.
//!
//! - Park deadline (HTTP/1 only): a keep-alive connection with nothing in flight,
//!   nothing half-read and nothing unwritten for a moment gives hyper's state back
//!   (buffers, the request future's slot) and waits on the bare socket; see
//!   `crate::connection`.
//!
//! The IO reports reads and blocked writes, the requests report their start and end
//! and whether their body was read to its end; the connection's task asks for the
//! next deadline and sets its timer no later than that. An event wakes the task only
//! when the deadline it starts comes before that timer, so the requests of a busy
//! connection wake nobody: the timer fires early now and then and is set again.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a connection's watchdog needs to know, updated by the IO and the requests.
#[derive(Debug)]
pub(crate) struct ConnState {
    epoch: Instant,
    pub(crate) h2: AtomicBool,
    in_flight: AtomicUsize,
    /// Whether a request has started on this connection yet.
    first_request_seen: AtomicBool,
    /// Last time a request finished, ms since `epoch`.
    last_done_ms: AtomicU64,
    /// First byte of a pending request head, ms since `epoch` plus one; 0: none.
    head_started_ms: AtomicU64,
    /// Request bodies handed to the proxy and not yet read to their end.
    bodies_open: AtomicUsize,
    /// A request body was dropped before its end: hyper may still be reading (or
    /// discarding) it, so the connection is never parked.
    body_abandoned: AtomicBool,
    /// Since when writes to the client cannot complete (hyper holds unwritten
    /// bytes), ms since `epoch` plus one; 0: the last write completed.
    write_blocked_ms: AtomicU64,
    /// When the connection's task has its timer set, ms since `epoch` plus one; 0:
    /// not set. An event wakes the task only when the deadline it starts comes before
    /// that timer: a busy connection's requests wake nobody.
    armed_ms: AtomicU64,
    /// How far past an event its deadline lies (ms): a request head's first byte,
    /// the end of the last request in flight, a write that blocks. 0 until the
    /// connection's task sets them: every event wakes it.
    header_after_ms: AtomicU64,
    done_after_ms: AtomicU64,
    send_after_ms: AtomicU64,
    pub(crate) wake: Notify,
}

impl ConnState {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            h2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            first_request_seen: AtomicBool::new(false),
            last_done_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            bodies_open: AtomicUsize::new(0),
            body_abandoned: AtomicBool::new(false),
            write_blocked_ms: AtomicU64::new(0),
            armed_ms: AtomicU64::new(0),
            header_after_ms: AtomicU64::new(0),
            done_after_ms: AtomicU64::new(0),
            send_after_ms: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Tells the events how far past them their deadlines lie (`park_after`: the
    /// HTTP/1 park), so that they wake the task only when it has to set its timer
    /// sooner.
    pub(crate) fn set_deadline_hints(&self, timeouts: &Timeouts, park_after: Option<Duration>) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2);
        let done = park_after.map_or(timeouts.idle, |park| park.min(timeouts.idle));
        self.header_after_ms
            .store(ms(timeouts.header), Ordering::Relaxed);
        self.done_after_ms.store(ms(done), Ordering::Relaxed);
        self.send_after_ms
            .store(ms(timeouts.send), Ordering::Relaxed);
    }

    /// The task's timer is set for `at` (`None`: not set). The caller reads the
    /// state again afterwards: an event either sees this or is seen (both sides store,
    /// fence, then load).
    pub(crate) fn armed(&self, at: Option<Instant>) {
        let ms = at.map_or(0, |at| self.ms(at) + 1);
        self.armed_ms.store(ms, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// An event at `now_ms` whose deadline lies `after` later: wakes the task if its
    /// timer is not set or set later than that deadline.
    fn wake_if_sooner(&self, now_ms: u64, after: &AtomicU64) {
        fence(Ordering::SeqCst);
        let deadline = now_ms.saturating_add(after.load(Ordering::Relaxed));
        let armed = self.armed_ms.load(Ordering::Relaxed);
        if armed == 0 || deadline < armed - 1 {
            self.wake.notify_one();
        }
    }

    /// Bytes arrived from the client.
    pub(crate) fn on_read(&self) {
        if self.h2.load(Ordering::Relaxed)
            || self.in_flight.load(Ordering::Acquire) > 0
            || self.head_started_ms.load(Ordering::Relaxed) != 0
        {
            return;
        }
        let now = self.now_ms();
        if self
            .head_started_ms
            .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.wake_if_sooner(now, &self.header_after_ms);
        }
    }

    /// A request head was parsed and handed to the proxy.
    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started_ms.store(0, Ordering::Release);
        if !self.first_request_seen.load(Ordering::Acquire)
            && !self.first_request_seen.swap(true, Ordering::AcqRel)
        {
            self.wake.notify_one();
        }
    }

    /// Whether a request has started on this connection.
    pub(crate) fn first_request_seen(&self) -> bool {
        self.first_request_seen.load(Ordering::Acquire)
    }

    /// A request's response ended (or was abandoned).
    pub(crate) fn request_done(&self) {
        let now = self.now_ms();
        self.last_done_ms.store(now, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.wake_if_sooner(now, &self.done_after_ms);
    }

    /// A request body that is not empty was handed to the proxy.
    pub(crate) fn request_body_opened(&self) {
        self.bodies_open.fetch_add(1, Ordering::AcqRel);
    }

    /// That body was read to its end (`complete`) or dropped before it.
    pub(crate) fn request_body_closed(&self, complete: bool) {
        if !complete {
            self.body_abandoned.store(true, Ordering::Release);
        }
        self.bodies_open.fetch_sub(1, Ordering::AcqRel);
    }

    /// A write to the client completed (`false`) or could not (`true`).
    pub(crate) fn on_write(&self, blocked: bool) {
        let since = self.write_blocked_ms.load(Ordering::Relaxed);
        if blocked && since == 0 {
            let now = self.now_ms();
            self.write_blocked_ms.store(now + 1, Ordering::Relaxed);
            self.wake_if_sooner(now, &self.send_after_ms);
        } else if !blocked && since != 0 {
            self.write_blocked_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the HTTP/1 connection is between requests with nothing half-done: no
    /// request in flight, no byte of a next head, every request body read to its
    /// end and every response byte written.
    pub(crate) fn parkable(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started_ms.load(Ordering::Acquire) == 0
            && self.bodies_open.load(Ordering::Acquire) == 0
            && !self.body_abandoned.load(Ordering::Acquire)
            && self.write_blocked_ms.load(Ordering::Relaxed) == 0
            && !self.h2.load(Ordering::Relaxed)
    }

    /// The next watchdog deadline and what it means. With `park_after`, an idle
    /// connection that is [`parkable`](Self::parkable) is parked that long after its
    /// last request ended (unless the idle deadline comes first).
    pub(crate) fn next_deadline(
        &self,
        timeouts: &Timeouts,
        park_after: Option<Duration>,
    ) -> Option<Deadline> {
        let blocked = self.write_blocked_ms.load(Ordering::Relaxed);
        let send = (blocked != 0).then(|| Deadline::Send(self.at(blocked - 1) + timeouts.send));
        let other = self.request_deadline(timeouts, park_after);
        match (send, other) {
            (Some(send), Some(other)) if other.at() < send.at() => Some(other),
            (Some(send), _) => Some(send),
            (None, other) => other,
        }
    }

    fn request_deadline(
        &self,
        timeouts: &Timeouts,
        park_after: Option<Duration>,
    ) -> Option<Deadline> {
        let head = self.head_started_ms.load(Ordering::Acquire);
        if head != 0 {
            return Some(Deadline::Header(self.at(head - 1) + timeouts.header));
        }
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let last = self.at(self.last_done_ms.load(Ordering::Acquire));
            let idle = Deadline::Idle(last + timeouts.idle);
            return Some(match park_after {
                Some(after) if after < timeouts.idle && self.parkable() => {
                    Deadline::Park(last + after)
                }
                _ => idle,
            });
        }
        None
    }

    /// An HTTP/2 connection's first-request clock ran out: it is being shut down
    /// gracefully, and the clock must not fire again.
    pub(crate) fn clear_head_clock(&self) {
        self.head_started_ms.store(0, Ordering::Release);
    }

    /// When the connection goes idle-closed, counted from its last request.
    pub(crate) fn idle_deadline(&self, idle_timeout: Duration) -> Instant {
        self.at(self.last_done_ms.load(Ordering::Acquire)) + idle_timeout
    }
}

/// The watchdog's clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// From the first byte of a request head to its end.
    pub(crate) header: Duration,
    /// Keep-alive idle.
    pub(crate) idle: Duration,
    /// A blocked write to the client.
    pub(crate) send: Duration,
}

/// The next thing the watchdog enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// The pending request head must be complete by then.
    Header(Instant),
    /// Nothing in flight: the connection is idle-closed then.
    Idle(Instant),
    /// Nothing in flight or half-done: the HTTP/1 connection is parked then.
    Park(Instant),
    /// The client has read nothing since a write blocked: closed then.
    Send(Instant),
}

impl Deadline {
    pub(crate) fn at(self) -> Instant {
        match self {
            Deadline::Header(at) | Deadline::Idle(at) | Deadline::Park(at) | Deadline::Send(at) => {
                at
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(3600);
    const SEND: Duration = Duration::from_secs(60);
    const TIMEOUTS: Timeouts = Timeouts {
        header: HEADER,
        idle: IDLE,
        send: SEND,
    };

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_waits_for_the_idle_timeout_not_the_header_one() {
        let state = ConnState::new();
        let opened = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            state.next_deadline(&TIMEOUTS, None),
            Some(Deadline::Idle(opened + IDLE))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_clock_starts_at_the_first_byte_and_stops_at_the_head() {
        let state = ConnState::new();
        tokio::time::sleep(Duration::from_secs(7)).await;
        let first_byte = Instant::now();
        state.on_read();
        tokio::time::sleep(Duration::from_secs(2)).await;
        state.on_read();
        assert_eq!(
            state.next_deadline(&TIMEOUTS, None),
            Some(Deadline::Header(first_byte + HEADER)),
            "later bytes of the same head do not move it"
        );
        state.request_started();
        assert_eq!(
            state.next_deadline(&TIMEOUTS, None),
            None,
            "in flight: no deadline"
        );
        state.on_read();
        assert_eq!(
            state.next_deadline(&TIMEOUTS, None),
            None,
            "bytes behind a request in flight are its body"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done = Instant::now();
        state.request_done();
        assert_eq!(
            state.next_deadline(&TIMEOUTS, None),
            Some(Deadline::Idle(done + IDLE))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_have_no_header_clock() {
        let state = ConnState::new();
        state.h2.store(true, Ordering::Relaxed);
        state.on_read();
        assert!(matches!(
            state.next_deadline(&TIMEOUTS, None),
            Some(Deadline::Idle(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_connection_with_nothing_half_done_is_parked() {
        const PARK: Option<Duration> = Some(Duration::from_millis(200));
        let state = ConnState::new();
        state.request_started();
        state.request_body_opened();
        state.request_done();
        let done = Instant::now();
        assert_eq!(
            state.next_deadline(&TIMEOUTS, PARK),
            Some(Deadline::Idle(done + IDLE)),
            "a request body not yet read to its end"
        );
        state.request_body_closed(true);
        assert_eq!(
            state.next_deadline(&TIMEOUTS, PARK),
            Some(Deadline::Park(done + Duration::from_millis(200)))
        );
        state.on_write(true);
        assert!(!state.parkable(), "bytes hyper could not write yet");
        state.on_write(false);
        assert!(state.parkable());
        state.on_read();
        assert!(!state.parkable(), "a next head has started");

        let abandoned = ConnState::new();
        abandoned.request_started();
        abandoned.request_body_opened();
        abandoned.request_body_closed(false);
        abandoned.request_done();
        assert!(
            !abandoned.parkable(),
            "hyper may still be discarding the rest of a dropped body"
        );
        assert!(matches!(
            abandoned.next_deadline(&TIMEOUTS, PARK),
            Some(Deadline::Idle(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_is_closed_at_the_send_timeout_even_mid_request() {
        let state = ConnState::new();
        state.request_started();
        assert_eq!(state.next_deadline(&TIMEOUTS, None), None);
        let blocked = Instant::now();
        state.on_write(true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        state.on_write(true);
        assert_eq!(
            state.next_deadline(&TIMEOUTS, None),
            Some(Deadline::Send(blocked + SEND)),
            "counted from the first blocked write"
        );
        state.on_write(false);
        assert_eq!(state.next_deadline(&TIMEOUTS, None), None);
    }

    /// Whether the connection's task was woken (a notification is waiting).
    async fn woken(state: &ConnState) -> bool {
        tokio::time::timeout(Duration::ZERO, state.wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn events_wake_the_task_only_when_their_deadline_comes_before_its_timer() {
        let state = ConnState::new();
        let park = Duration::from_millis(200);
        state.set_deadline_hints(&TIMEOUTS, Some(park));
        state.on_read();
        assert!(woken(&state).await, "no timer set: every event wakes");
        state.request_started();
        assert!(woken(&state).await, "the first request always wakes");

        // The timer is set sooner than anything these events start.
        state.armed(Some(Instant::now() + Duration::from_millis(100)));
        state.request_done();
        assert!(!woken(&state).await, "the park deadline is 200 ms away");
        state.on_read();
        assert!(!woken(&state).await, "the header deadline is 10 s away");
        state.request_started();
        state.on_write(true);
        assert!(!woken(&state).await, "the send deadline is 60 s away");
        state.on_write(false);

        // The timer is set later: each deadline that comes sooner wakes.
        state.armed(Some(Instant::now() + Duration::from_secs(7200)));
        state.request_done();
        assert!(
            woken(&state).await,
            "the park deadline comes before the timer"
        );
        state.on_read();
        assert!(woken(&state).await, "so does the header deadline");
        state.request_started();
        state.on_write(true);
        assert!(woken(&state).await, "and the send deadline");
    }
}
