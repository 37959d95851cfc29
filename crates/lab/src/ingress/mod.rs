//! What stands in front of the pods: the embedded ingress with ingress-nginx's
//! semantics, or the real nginx. Both follow the published endpoints through the same
//! [`lag::Lag`], and both report, per request, which pods it tried and how each try
//! went: the attribution's evidence.

pub(crate) mod embedded;
mod goaway;
pub(crate) mod lag;
pub(crate) mod nginx;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::endpoints::Endpoint;
use crate::timeline::Timeline;
use lag::Lag;

/// Which ingress stands in front of the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressKind {
    /// The embedded ingress with ingress-nginx's semantics.
    Embedded,
    /// The real nginx (Debian package), reloaded after the same lag.
    Nginx,
}

/// How one try went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Try {
    /// The connect failed: nothing was sent.
    ConnectFailed {
        /// The pod tried.
        pod: usize,
    },
    /// The request was sent and failed before a response.
    SentAndFailed {
        /// The pod it went to.
        pod: usize,
        /// On a connection an earlier request had used.
        reused: bool,
    },
    /// A response came back.
    Answered {
        /// The pod that answered.
        pod: usize,
        /// Its status.
        status: u16,
    },
}

impl Try {
    /// The pod this try went to.
    pub fn pod(&self) -> usize {
        match self {
            Try::ConnectFailed { pod }
            | Try::SentAndFailed { pod, .. }
            | Try::Answered { pod, .. } => *pod,
        }
    }
}

/// What the ingress did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When it arrived, on the timeline.
    pub at: Duration,
    /// Where the ingress sent it, in order.
    pub tries: Vec<Try>,
}

/// The ingress could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The embedded ingress could not bind its port.
    #[error("starting the embedded ingress")]
    Embedded(#[source] std::io::Error),
    /// nginx's configuration or working directory could not be written.
    #[error("preparing nginx's files in {dir}")]
    NginxFiles {
        /// The working directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The nginx program could not be started.
    #[error("starting nginx (Debian package nginx)")]
    NginxStart(#[source] std::io::Error),
}

/// A running ingress.
#[derive(Debug)]
pub(crate) enum Front {
    Embedded(embedded::Ingress),
    Nginx(Box<nginx::Nginx>),
}

impl Front {
    /// Starts `kind` following `endpoints` with `lag`; `http2`: clients speak HTTP/2
    /// (gRPC; the embedded ingress only).
    pub(crate) async fn start(
        kind: IngressKind,
        endpoints: watch::Receiver<Vec<Endpoint>>,
        lag: Lag,
        timeline: Arc<Timeline>,
        http2: bool,
    ) -> Result<Self, IngressError> {
        let view = lag.follow(endpoints);
        Ok(match kind {
            IngressKind::Embedded => Front::Embedded(
                embedded::start(view, timeline, http2)
                    .await
                    .map_err(IngressError::Embedded)?,
            ),
            IngressKind::Nginx => Front::Nginx(Box::new(nginx::start(view, timeline).await?)),
        })
    }

    /// Where clients send requests.
    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            Front::Embedded(ingress) => ingress.addr,
            Front::Nginx(nginx) => nginx.addr,
        }
    }

    /// Each request's tries, by the request's sequence number; `pods` maps pod
    /// addresses to pods.
    pub(crate) async fn entries(
        &self,
        timeline: &Timeline,
        pods: &HashMap<Ipv4Addr, usize>,
    ) -> HashMap<u64, Entry> {
        match self {
            Front::Embedded(ingress) => ingress.entries(),
            Front::Nginx(nginx) => nginx.entries(timeline, pods).await,
        }
    }

    /// Stops the ingress (nginx is asked to stop its workers and waited for).
    pub(crate) async fn stop(self) {
        if let Front::Nginx(nginx) = self {
            nginx.stop().await;
        }
    }
}
