//! The signals that end the sidecar, as a small trait so the exit sequence can be
//! driven by a test: SIGTERM (what Kubernetes sends to start a graceful shutdown) and
//! SIGINT, as one stream.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// A signal that starts (or, the second time, cuts short) the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM.
    Terminate,
    /// SIGINT.
    Interrupt,
}

impl Signal {
    /// The signal's name, for logs and as the drain's cause.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        }
    }
}

/// Where the sidecar's signals come from.
pub trait Signals: Send {
    /// The next signal; pending forever when there will be none.
    fn next(&mut self) -> impl Future<Output = Signal> + Send;
}

/// The process's own SIGTERM and SIGINT.
#[derive(Debug)]
pub struct UnixSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl UnixSignals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }
}

impl Signals for UnixSignals {
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Terminate,
            _ = self.interrupt.recv() => Signal::Interrupt,
        }
    }
}

/// Signals sent by a test (or any other task) through a channel.
impl Signals for tokio::sync::mpsc::UnboundedReceiver<Signal> {
    async fn next(&mut self) -> Signal {
        match self.recv().await {
            Some(signal) => signal,
            None => std::future::pending().await,
        }
    }
}
