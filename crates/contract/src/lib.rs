//! The contract between the lameduck sidecar and everything that configures it: the
//! environment variables it reads, their defaults, the admin paths, the names of its
//! container and ports in a pod, and the exit codes of the project's binaries.
//!
//! The sidecar's clap flags take their `env =` and defaults from here, and the
//! injector, the lint and the lab write and read the same names, so the two sides
//! cannot drift apart. It is for names and values only: no logic, no dependencies.

/// Environment variables the sidecar reads, one per flag.
pub mod env {
    /// Serving address.
    pub const LISTEN: &str = "LAMEDUCK_LISTEN";
    /// The app's address.
    pub const UPSTREAM: &str = "LAMEDUCK_UPSTREAM";
    /// Admin address.
    pub const ADMIN: &str = "LAMEDUCK_ADMIN";
    /// The app check (`tcp` or `http:/path`).
    pub const APP_CHECK: &str = "LAMEDUCK_APP_CHECK";
    /// App check period.
    pub const APP_CHECK_PERIOD: &str = "LAMEDUCK_APP_CHECK_PERIOD";
    /// App check timeout.
    pub const APP_CHECK_TIMEOUT: &str = "LAMEDUCK_APP_CHECK_TIMEOUT";
    /// Failed checks before the app counts as not ready.
    pub const APP_CHECK_FAILURE_THRESHOLD: &str = "LAMEDUCK_APP_CHECK_FAILURE_THRESHOLD";
    /// Passed checks before the app counts as ready again.
    pub const APP_CHECK_SUCCESS_THRESHOLD: &str = "LAMEDUCK_APP_CHECK_SUCCESS_THRESHOLD";
    /// How long a request may wait for the app to start.
    pub const STARTUP_HOLD: &str = "LAMEDUCK_STARTUP_HOLD";
    /// How long to keep accepting once the drain starts.
    pub const SHUTDOWN_DELAY: &str = "LAMEDUCK_SHUTDOWN_DELAY";
    /// Whether `/ready` stays 200 during the shutdown delay.
    pub const READY_DURING_SHUTDOWN_DELAY: &str = "LAMEDUCK_READY_DURING_SHUTDOWN_DELAY";
    /// How long in-flight requests may take once the listener is closed.
    pub const DRAIN_TIMEOUT: &str = "LAMEDUCK_DRAIN_TIMEOUT";
    /// Bearer token that authorizes `/drain` from outside the pod.
    pub const DRAIN_TOKEN: &str = "LAMEDUCK_DRAIN_TOKEN";
    /// How long to wait for the scrape that carries the drain's outcome.
    pub const FINAL_SCRAPE_TIMEOUT: &str = "LAMEDUCK_FINAL_SCRAPE_TIMEOUT";
    /// The pod's termination grace period (the injector sets it).
    pub const GRACE_PERIOD: &str = "LAMEDUCK_GRACE_PERIOD";
    /// Idle timeout of pooled connections to the app.
    pub const UPSTREAM_IDLE_TIMEOUT: &str = "LAMEDUCK_UPSTREAM_IDLE_TIMEOUT";
    /// Connect timeout to the app.
    pub const UPSTREAM_CONNECT_TIMEOUT: &str = "LAMEDUCK_UPSTREAM_CONNECT_TIMEOUT";
    /// Time to the app's response headers.
    pub const UPSTREAM_TIMEOUT: &str = "LAMEDUCK_UPSTREAM_TIMEOUT";
    /// HTTP/1.1 connections to the app open at most.
    pub const UPSTREAM_MAX_CONNECTIONS: &str = "LAMEDUCK_UPSTREAM_MAX_CONNECTIONS";
    /// Time a client may take to send a request head.
    pub const HEADER_READ_TIMEOUT: &str = "LAMEDUCK_HEADER_READ_TIMEOUT";
    /// Downstream keep-alive idle timeout.
    pub const IDLE_TIMEOUT: &str = "LAMEDUCK_IDLE_TIMEOUT";
    /// Longest pause in a client's request body.
    pub const REQUEST_BODY_TIMEOUT: &str = "LAMEDUCK_REQUEST_BODY_TIMEOUT";
    /// Longest time a client may leave the response unread.
    pub const RESPONSE_SEND_TIMEOUT: &str = "LAMEDUCK_RESPONSE_SEND_TIMEOUT";
    /// Client connections open at most (0: no limit).
    pub const MAX_CONNECTIONS: &str = "LAMEDUCK_MAX_CONNECTIONS";
    /// Largest accepted request head.
    pub const MAX_HEADER_SIZE: &str = "LAMEDUCK_MAX_HEADER_SIZE";
    /// What the serving port speaks: `http` (HTTP/1.1 and HTTP/2) or `tcp` (layer 4).
    pub const PROTOCOL: &str = "LAMEDUCK_PROTOCOL";
    /// How requests reach the app: `http1`, `h2c` (HTTP/2 prior knowledge) or `auto`.
    pub const UPSTREAM_PROTOCOL: &str = "LAMEDUCK_UPSTREAM_PROTOCOL";
    /// More serving ports, comma-separated `LISTEN=UPSTREAM[/MODE]`
    /// (MODE `http1`, `h2c`, `auto` or `tcp`).
    pub const LISTENERS: &str = "LAMEDUCK_LISTENERS";
    /// Threads serving requests (0: one per CPU the process may use).
    pub const WORKERS: &str = "LAMEDUCK_WORKERS";
    /// Log format (`text` or `json`).
    pub const LOG_FORMAT: &str = "LAMEDUCK_LOG_FORMAT";
    /// Log filter, in `tracing-subscriber`'s `EnvFilter` syntax.
    pub const LOG: &str = "LAMEDUCK_LOG";

    /// The variables whose values are durations (the lab scales them).
    pub const DURATIONS: [&str; 13] = [
        APP_CHECK_PERIOD,
        APP_CHECK_TIMEOUT,
        STARTUP_HOLD,
        SHUTDOWN_DELAY,
        DRAIN_TIMEOUT,
        FINAL_SCRAPE_TIMEOUT,
        GRACE_PERIOD,
        UPSTREAM_IDLE_TIMEOUT,
        UPSTREAM_CONNECT_TIMEOUT,
        UPSTREAM_TIMEOUT,
        HEADER_READ_TIMEOUT,
        REQUEST_BODY_TIMEOUT,
        RESPONSE_SEND_TIMEOUT,
    ];
}

/// The sidecar's defaults, as its flags spell them.
pub mod defaults {
    /// Serving address (the pod's traffic arrives here).
    pub const LISTEN: &str = "0.0.0.0:8000";
    /// The app's address.
    pub const UPSTREAM: &str = "127.0.0.1:8080";
    /// Admin address (`/ready`, `/live`, `/metrics`, `/drain`).
    pub const ADMIN: &str = "0.0.0.0:9901";
    /// What the serving port speaks.
    pub const PROTOCOL: &str = "http";
    /// How requests reach the app.
    pub const UPSTREAM_PROTOCOL: &str = "http1";
    /// App check.
    pub const APP_CHECK: &str = "tcp";
    /// App check period once the app has been ready.
    pub const APP_CHECK_PERIOD: &str = "1s";
    /// App check timeout.
    pub const APP_CHECK_TIMEOUT: &str = "1s";
    /// Consecutive failures before the app counts as not ready.
    pub const APP_CHECK_FAILURE_THRESHOLD: u32 = 3;
    /// Consecutive successes before the app counts as ready again.
    pub const APP_CHECK_SUCCESS_THRESHOLD: u32 = 1;
    /// How long a request may wait for the app to start.
    pub const STARTUP_HOLD: &str = "30s";
    /// How long to keep accepting after the drain starts (covers endpoint propagation).
    pub const SHUTDOWN_DELAY: &str = "15s";
    /// How long in-flight requests may take once the listener is closed.
    pub const DRAIN_TIMEOUT: &str = "30s";
    /// `/ready` stays 200 during the shutdown delay: a terminating endpoint is
    /// `ready: false` in its EndpointSlice whatever the probe says, and staying
    /// `serving` keeps kube-proxy's fallback to terminating endpoints.
    pub const READY_DURING_SHUTDOWN_DELAY: bool = true;
    /// After the drain, how long to wait for one more scrape of `/metrics` before
    /// exiting, so the drain's outcome reaches Prometheus (skipped when nothing ever
    /// scraped). Covers the 30 s scrape interval common with prometheus-operator.
    pub const FINAL_SCRAPE_TIMEOUT: &str = "30s";
    /// Idle pooled upstream connections are dropped after this (below Node.js' 5 s).
    pub const UPSTREAM_IDLE_TIMEOUT: &str = "4s";
    /// Connect timeout to the app: long enough to survive two dropped SYNs (Linux
    /// retransmits after 1 s and 3 s), which is what a burst past the app's accept
    /// backlog costs; Envoy's default is the same.
    pub const UPSTREAM_CONNECT_TIMEOUT: &str = "5s";
    /// HTTP/1.1 connections to the app open at most; further requests wait for one
    /// (Envoy's default circuit-breaker limit is the same).
    pub const UPSTREAM_MAX_CONNECTIONS: usize = 1024;
    /// Time to the app's response headers before answering 504.
    pub const UPSTREAM_TIMEOUT: &str = "60s";
    /// Time a client may take to send a request's headers, from its first byte.
    pub const HEADER_READ_TIMEOUT: &str = "10s";
    /// Downstream keep-alive idle timeout: above every common proxy's upstream idle
    /// timeout (ingress-nginx 60 s, AWS ALB 60 s, GCLB 600 s), as Envoy's 1 h default is.
    pub const IDLE_TIMEOUT: &str = "1h";
    /// Longest pause between two pieces of a request body before the sidecar answers
    /// 408 (the client stalled, not the app); below the upstream timeout so that a
    /// stalled upload is never reported as the app's 504.
    pub const REQUEST_BODY_TIMEOUT: &str = "30s";
    /// Longest a write to a client may stay blocked (the client reads nothing) before
    /// the connection is closed, as nginx's `send_timeout`.
    pub const RESPONSE_SEND_TIMEOUT: &str = "60s";
    /// Client connections open at most; 0 means no limit (as Envoy and Linkerd).
    pub const MAX_CONNECTIONS: usize = 0;
    /// Largest accepted request head in bytes; larger gets 431.
    pub const MAX_HEADER_SIZE: usize = 32 * 1024;
    /// The smallest accepted request-head limit (hyper's smallest read buffer).
    pub const MIN_MAX_HEADER_SIZE: usize = 8192;
    /// The shortest drain token accepted.
    pub const MIN_DRAIN_TOKEN_LEN: usize = 16;
    /// Worker threads: 0 means one per CPU the process may use (its cgroup's CPU
    /// limit counts); with one, the sidecar runs a single-threaded runtime.
    pub const WORKERS: usize = 0;
}

/// Paths on the sidecar's admin port.
pub mod admin {
    /// 200 while the pod should receive traffic.
    pub const READY: &str = "/ready";
    /// 200 while the process runs.
    pub const LIVE: &str = "/live";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// Starts the drain; answers once it is done (the app's preStop hook).
    pub const DRAIN: &str = "/drain";
}

/// Names the sidecar has inside a pod.
pub mod pod {
    /// The sidecar container's name.
    pub const SIDECAR_CONTAINER: &str = "lameduck-sidecar";
    /// The sidecar's admin port name (the PodMonitor scrapes it).
    pub const ADMIN_PORT_NAME: &str = "lameduck-admin";
    /// The app's serving port's name once the sidecar has taken over its old one.
    pub const APP_PORT_NAME: &str = "lameduck-app";
}

/// Exit codes of the project's binaries.
pub mod exit {
    /// A run that failed (an error, failed requests, or lint findings).
    pub const FAILURE: u8 = 1;
    /// `lameduck load`: the in-flight cap was reached, so the rate was not held.
    pub const RATE_NOT_HELD: u8 = 3;
    /// A bad command line or configuration (`EX_USAGE`).
    pub const USAGE: u8 = 64;
    /// Stopped by a signal (SIGINT, or a second signal during the drain): 128 + 2.
    pub const INTERRUPTED: u8 = 130;
}
