//! Command-line and environment configuration, validated before any port is bound.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use lameduck_contract::defaults::{self, MIN_DRAIN_TOKEN_LEN};
use lameduck_contract::env;

pub use lameduck_contract::defaults::MIN_MAX_HEADER_SIZE;

/// How the sidecar decides whether the app can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCheck {
    /// The app accepts TCP connections.
    Tcp,
    /// `GET path` on the app answers 2xx or 3xx.
    Http {
        /// Path and query to request.
        path: String,
    },
    /// The standard gRPC health check (`grpc.health.v1.Health/Check`) answers
    /// `SERVING`, over HTTP/2 prior knowledge.
    Grpc {
        /// The service asked about; empty means the server as a whole.
        service: String,
    },
}

impl FromStr for AppCheck {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "tcp" {
            return Ok(Self::Tcp);
        }
        if s == "grpc" {
            return Ok(Self::Grpc {
                service: String::new(),
            });
        }
        if let Some(service) = s.strip_prefix("grpc:") {
            if service.is_empty() || service.contains(|c: char| c.is_whitespace() || c == '/') {
                return Err(format!(
                    "app check {s:?} is not valid: expected `grpc` or `grpc:package.Service`"
                ));
            }
            return Ok(Self::Grpc {
                service: service.to_owned(),
            });
        }
        match s.strip_prefix("http:") {
            Some(path) if path.starts_with('/') && !path.contains(char::is_whitespace) => {
                Ok(Self::Http {
                    path: path.to_owned(),
                })
            }
            _ => Err(format!(
                "app check {s:?} is not valid: expected `tcp`, `http:/path`, `grpc` or `grpc:SERVICE`"
            )),
        }
    }
}

impl std::fmt::Display for AppCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp => f.write_str("tcp"),
            Self::Http { path } => write!(f, "http:{path}"),
            Self::Grpc { service } if service.is_empty() => f.write_str("grpc"),
            Self::Grpc { service } => write!(f, "grpc:{service}"),
        }
    }
}

/// What the serving port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge) from clients; requests proxied one by one.
    Http,
    /// Any TCP protocol (Redis, PostgreSQL, brokers): connections spliced to the app
    /// byte for byte, drained by connection instead of by request.
    Tcp,
}

/// How requests reach the app (HTTP mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over a keep-alive pool, whatever the client spoke.
    Http1,
    /// HTTP/2 prior knowledge (h2c), multiplexed over a few connections: gRPC apps
    /// and other HTTP/2-only servers.
    H2c,
    /// The client's own protocol: HTTP/2 clients to the app over h2c, HTTP/1.1 clients
    /// over HTTP/1.1. The app must serve both on the same port.
    Auto,
}

/// The protocol one request goes to the app with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 prior knowledge.
    H2c,
}

impl UpstreamProtocol {
    /// The protocol a request from a client speaking `version` goes to the app with.
    pub fn wire(self, version: http::Version) -> Wire {
        match self {
            Self::Http1 => Wire::Http1,
            Self::H2c => Wire::H2c,
            Self::Auto if version == http::Version::HTTP_2 => Wire::H2c,
            Self::Auto => Wire::Http1,
        }
    }
}

/// One serving port and the app port behind it. The flags `--listen`, `--upstream`,
/// `--protocol` and `--upstream-protocol` give the first; each `--listener
/// LISTEN=UPSTREAM[/MODE]` one more (MODE: `http1` (default), `h2c`, `auto` or `tcp`).
/// Every listener shares the one drain and the one app check (which asks the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The app port behind it.
    pub upstream: SocketAddr,
    /// What the port speaks.
    pub protocol: Protocol,
    /// How requests reach the app (HTTP mode).
    pub upstream_protocol: UpstreamProtocol,
}

impl FromStr for Listener {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| format!("listener {s:?} is not valid: {why}");
        let (listen, rest) = s
            .split_once('=')
            .ok_or_else(|| invalid("expected LISTEN=UPSTREAM[/MODE]"))?;
        let (upstream, mode) = rest.split_once('/').unwrap_or((rest, "http1"));
        let address = |text: &str| {
            text.parse::<SocketAddr>()
                .map_err(|_| invalid(&format!("{text:?} is not an address (IP:PORT)")))
        };
        let (protocol, upstream_protocol) = match mode {
            "http1" => (Protocol::Http, UpstreamProtocol::Http1),
            "h2c" => (Protocol::Http, UpstreamProtocol::H2c),
            "auto" => (Protocol::Http, UpstreamProtocol::Auto),
            "tcp" => (Protocol::Tcp, UpstreamProtocol::Http1),
            other => {
                return Err(invalid(&format!(
                    "mode {other:?} is not one of http1, h2c, auto, tcp"
                )));
            }
        };
        Ok(Self {
            listen: address(listen)?,
            upstream: address(upstream)?,
            protocol,
            upstream_protocol,
        })
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match (self.protocol, self.upstream_protocol) {
            (Protocol::Tcp, _) => "tcp",
            (Protocol::Http, UpstreamProtocol::Http1) => "http1",
            (Protocol::Http, UpstreamProtocol::H2c) => "h2c",
            (Protocol::Http, UpstreamProtocol::Auto) => "auto",
        };
        write!(f, "{}={}/{mode}", self.listen, self.upstream)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e})"))
}

/// The drain proxy: fronts an unmodified app so the pod can be rolled without
/// dropping a request.
#[derive(Debug, Clone, Parser)]
#[command(name = "lameduck-sidecar", version)]
pub struct Args {
    /// Serving address: the pod's traffic arrives here.
    #[arg(long, env = env::LISTEN, default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// The app's address (loopback, in the same pod).
    #[arg(long, env = env::UPSTREAM, default_value = defaults::UPSTREAM)]
    pub upstream: SocketAddr,
    /// What the serving port speaks: `http`, or `tcp` for apps that are not HTTP.
    #[arg(long, env = env::PROTOCOL, value_enum, default_value = defaults::PROTOCOL)]
    pub protocol: Protocol,
    /// How requests reach the app: `http1`, `h2c` (HTTP/2 prior knowledge, for gRPC)
    /// or `auto` (the client's protocol; the app must serve both).
    #[arg(long, env = env::UPSTREAM_PROTOCOL, value_enum, default_value = defaults::UPSTREAM_PROTOCOL)]
    pub upstream_protocol: UpstreamProtocol,
    /// One more serving port for an app that serves several (an HTTP API beside a gRPC
    /// one): `LISTEN=UPSTREAM[/MODE]`, MODE `http1` (default), `h2c`, `auto` or `tcp`.
    /// Repeatable; the environment variable takes a comma-separated list.
    #[arg(long = "listener", env = env::LISTENERS, value_delimiter = ',')]
    pub listeners: Vec<Listener>,
    /// Admin address: /ready, /live, /metrics, /drain.
    #[arg(long, env = env::ADMIN, default_value = defaults::ADMIN)]
    pub admin: SocketAddr,
    /// How to tell the app can serve: `tcp`, `http:/path` (2xx or 3xx), or `grpc[:SERVICE]`
    /// (the gRPC health-checking protocol answers SERVING).
    #[arg(long, env = env::APP_CHECK, default_value = defaults::APP_CHECK)]
    pub app_check: AppCheck,
    /// Period of the app check once the app has been ready (every 100 ms before that).
    #[arg(long, env = env::APP_CHECK_PERIOD, default_value = defaults::APP_CHECK_PERIOD, value_parser = duration)]
    pub app_check_period: Duration,
    /// Timeout of one app check.
    #[arg(long, env = env::APP_CHECK_TIMEOUT, default_value = defaults::APP_CHECK_TIMEOUT, value_parser = duration)]
    pub app_check_timeout: Duration,
    /// Consecutive failed checks before the app counts as not ready.
    #[arg(long, env = env::APP_CHECK_FAILURE_THRESHOLD, default_value_t = defaults::APP_CHECK_FAILURE_THRESHOLD)]
    pub app_check_failure_threshold: u32,
    /// Consecutive passed checks before the app counts as ready again.
    #[arg(long, env = env::APP_CHECK_SUCCESS_THRESHOLD, default_value_t = defaults::APP_CHECK_SUCCESS_THRESHOLD)]
    pub app_check_success_threshold: u32,
    /// How long a request arriving before the app is ready waits for it (then 503).
    #[arg(long, env = env::STARTUP_HOLD, default_value = defaults::STARTUP_HOLD, value_parser = duration)]
    pub startup_hold: Duration,
    /// After the drain starts, keep accepting this long while telling clients to go away.
    #[arg(long, env = env::SHUTDOWN_DELAY, default_value = defaults::SHUTDOWN_DELAY, value_parser = duration)]
    pub shutdown_delay: Duration,
    /// Whether /ready stays 200 during the shutdown delay (`false`: 503 from the drain's
    /// start, for load balancers that probe pods directly).
    #[arg(long, env = env::READY_DURING_SHUTDOWN_DELAY, default_value_t = defaults::READY_DURING_SHUTDOWN_DELAY, action = clap::ArgAction::Set)]
    pub ready_during_shutdown_delay: bool,
    /// Once the listener is closed, how long in-flight requests may take before they are cut.
    #[arg(long, env = env::DRAIN_TIMEOUT, default_value = defaults::DRAIN_TIMEOUT, value_parser = duration)]
    pub drain_timeout: Duration,
    /// Bearer token that authorizes /drain from a non-loopback address (e.g. the kubelet's preStop).
    #[arg(long, env = env::DRAIN_TOKEN, hide_env_values = true)]
    pub drain_token: Option<String>,
    /// After the drain, wait up to this long for one more scrape of /metrics before exiting
    /// (only if /metrics was ever scraped; 0 exits at once).
    #[arg(long, env = env::FINAL_SCRAPE_TIMEOUT, default_value = defaults::FINAL_SCRAPE_TIMEOUT, value_parser = duration)]
    pub final_scrape_timeout: Duration,
    /// The pod's terminationGracePeriodSeconds (the injector sets it): the wait for a
    /// final scrape ends before the grace period runs out, counted from the drain's start.
    #[arg(long, env = env::GRACE_PERIOD, value_parser = duration)]
    pub grace_period: Option<Duration>,
    /// Pooled connections to the app idle longer than this are not reused.
    #[arg(long, env = env::UPSTREAM_IDLE_TIMEOUT, default_value = defaults::UPSTREAM_IDLE_TIMEOUT, value_parser = duration)]
    pub upstream_idle_timeout: Duration,
    /// Connect timeout to the app.
    #[arg(long, env = env::UPSTREAM_CONNECT_TIMEOUT, default_value = defaults::UPSTREAM_CONNECT_TIMEOUT, value_parser = duration)]
    pub upstream_connect_timeout: Duration,
    /// HTTP/1.1 connections to the app open at most; more requests wait in line for
    /// one (bounded by --upstream-timeout).
    #[arg(long, env = env::UPSTREAM_MAX_CONNECTIONS, default_value_t = defaults::UPSTREAM_MAX_CONNECTIONS)]
    pub upstream_max_connections: usize,
    /// Time to the app's response headers before answering 504.
    #[arg(long, env = env::UPSTREAM_TIMEOUT, default_value = defaults::UPSTREAM_TIMEOUT, value_parser = duration)]
    pub upstream_timeout: Duration,
    /// Time a client may take to send a request's headers, counted from its first byte.
    #[arg(long, env = env::HEADER_READ_TIMEOUT, default_value = defaults::HEADER_READ_TIMEOUT, value_parser = duration)]
    pub header_read_timeout: Duration,
    /// Keep-alive connections from clients idle this long are closed.
    #[arg(long, env = env::IDLE_TIMEOUT, default_value = defaults::IDLE_TIMEOUT, value_parser = duration)]
    pub idle_timeout: Duration,
    /// Longest pause in a client's request body; the sidecar then answers 408.
    #[arg(long, env = env::REQUEST_BODY_TIMEOUT, default_value = defaults::REQUEST_BODY_TIMEOUT, value_parser = duration)]
    pub request_body_timeout: Duration,
    /// Longest a client may leave a response unread (its connection is then closed).
    #[arg(long, env = env::RESPONSE_SEND_TIMEOUT, default_value = defaults::RESPONSE_SEND_TIMEOUT, value_parser = duration)]
    pub response_send_timeout: Duration,
    /// Client connections open at most, per serving port; more are refused (HTTP/1.1
    /// 503 and closed). 0: no limit.
    #[arg(long, env = env::MAX_CONNECTIONS, default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Largest accepted request head in bytes (431 beyond).
    #[arg(long, env = env::MAX_HEADER_SIZE, default_value_t = defaults::MAX_HEADER_SIZE)]
    pub max_header_size: usize,
    /// Threads serving requests; 0: one per CPU the process may use (its cgroup's CPU
    /// limit counts). With 1 the runtime is single-threaded, which is cheapest per
    /// request for a sidecar given one CPU or less.
    #[arg(long, env = env::WORKERS, default_value_t = defaults::WORKERS)]
    pub workers: usize,
    /// Log format.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Validate the configuration, print it and exit.
    #[arg(long)]
    pub check: bool,
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value} is not valid: {reason}")]
pub struct ConfigError {
    /// The flag.
    pub name: &'static str,
    /// The value given.
    pub value: String,
    /// Why it cannot work.
    pub reason: &'static str,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The serving port of `--listen` and `--upstream`; the app check asks its app port.
    pub listener: Listener,
    /// The serving ports of `--listener`, if any.
    pub extra_listeners: Vec<Listener>,
    /// Admin address.
    pub admin: SocketAddr,
    /// App check.
    pub app_check: AppCheck,
    /// App check period.
    pub app_check_period: Duration,
    /// App check timeout.
    pub app_check_timeout: Duration,
    /// Failures before not ready.
    pub app_check_failure_threshold: u32,
    /// Successes before ready.
    pub app_check_success_threshold: u32,
    /// Startup hold.
    pub startup_hold: Duration,
    /// Shutdown delay.
    pub shutdown_delay: Duration,
    /// `/ready` stays 200 during the shutdown delay.
    pub ready_during_shutdown_delay: bool,
    /// Drain timeout.
    pub drain_timeout: Duration,
    /// Drain token.
    pub drain_token: Option<String>,
    /// Wait for a scrape that carries the drain's outcome, up to this long.
    pub final_scrape_timeout: Duration,
    /// The pod's termination grace period, if known.
    pub grace_period: Option<Duration>,
    /// Upstream pool idle timeout.
    pub upstream_idle_timeout: Duration,
    /// Upstream connect timeout.
    pub upstream_connect_timeout: Duration,
    /// Upstream HTTP/1.1 connection limit.
    pub upstream_max_connections: usize,
    /// Upstream response-header timeout.
    pub upstream_timeout: Duration,
    /// Header read timeout.
    pub header_read_timeout: Duration,
    /// Downstream idle timeout.
    pub idle_timeout: Duration,
    /// Request body idle timeout.
    pub request_body_timeout: Duration,
    /// Response send idle timeout.
    pub response_send_timeout: Duration,
    /// Client connection cap (0: none).
    pub max_connections: usize,
    /// Max request head size.
    pub max_header_size: usize,
    /// Worker threads, resolved (at least 1).
    pub workers: usize,
}

/// Every serving address differs from the others and from the admin address, and no
/// listener forwards to a serving address (to itself).
fn check_addresses(listeners: &[Listener], admin: SocketAddr) -> Result<(), ConfigError> {
    let fixed = |a: &SocketAddr| a.port() != 0;
    for (index, listener) in listeners.iter().enumerate() {
        let name = if index == 0 { "--listen" } else { "--listener" };
        if fixed(&listener.listen) && listener.listen == admin {
            return Err(ConfigError {
                name: "--admin",
                value: admin.to_string(),
                reason: "the serving and admin addresses must differ",
            });
        }
        let earlier = &listeners[..index];
        if fixed(&listener.listen) && earlier.iter().any(|l| l.listen == listener.listen) {
            return Err(ConfigError {
                name,
                value: listener.to_string(),
                reason: "two listeners on the same address",
            });
        }
        let reaches = |listen: &SocketAddr, upstream: &SocketAddr| {
            fixed(listen)
                && listen.port() == upstream.port()
                && (listen.ip().is_unspecified() || listen.ip() == upstream.ip())
        };
        if listeners
            .iter()
            .any(|l| reaches(&l.listen, &listener.upstream))
        {
            return Err(ConfigError {
                name: if index == 0 {
                    "--upstream"
                } else {
                    "--listener"
                },
                value: listener.upstream.to_string(),
                reason: "the sidecar cannot forward to itself",
            });
        }
    }
    Ok(())
}

impl Config {
    /// Every serving port, `--listen`'s first.
    pub fn listeners(&self) -> impl Iterator<Item = &Listener> {
        std::iter::once(&self.listener).chain(&self.extra_listeners)
    }
}

/// The largest `--upstream-max-connections` (far above any open-file limit).
const MAX_UPSTREAM_CONNECTIONS: usize = 1_000_000;

fn positive(name: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(ConfigError {
            name,
            value: format!("{value:?}"),
            reason: "must be above zero",
        });
    }
    Ok(value)
}

impl Args {
    /// Checks every value that parsing alone cannot.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let first = Listener {
            listen: self.listen,
            upstream: self.upstream,
            protocol: self.protocol,
            upstream_protocol: self.upstream_protocol,
        };
        let listeners: Vec<Listener> = std::iter::once(first)
            .chain(self.listeners.iter().copied())
            .collect();
        check_addresses(&listeners, self.admin)?;
        for (name, value) in [
            (
                "--app-check-failure-threshold",
                self.app_check_failure_threshold,
            ),
            (
                "--app-check-success-threshold",
                self.app_check_success_threshold,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    name,
                    value: value.to_string(),
                    reason: "must be at least 1",
                });
            }
        }
        if first.protocol == Protocol::Tcp && !matches!(self.app_check, AppCheck::Tcp) {
            return Err(ConfigError {
                name: "--app-check",
                value: self.app_check.to_string(),
                reason: "a tcp-mode sidecar can only check that the app accepts connections (`tcp`)",
            });
        }
        if !(1..=MAX_UPSTREAM_CONNECTIONS).contains(&self.upstream_max_connections) {
            return Err(ConfigError {
                name: "--upstream-max-connections",
                value: self.upstream_max_connections.to_string(),
                reason: "must be between 1 and 1000000",
            });
        }
        if self.max_header_size < MIN_MAX_HEADER_SIZE {
            return Err(ConfigError {
                name: "--max-header-size",
                value: self.max_header_size.to_string(),
                reason: "must be at least 8192",
            });
        }
        if self
            .drain_token
            .as_deref()
            .is_some_and(|t| t.len() < MIN_DRAIN_TOKEN_LEN)
        {
            return Err(ConfigError {
                name: "--drain-token",
                value: "<hidden>".to_owned(),
                reason: "must be at least 16 characters",
            });
        }
        Ok(Config {
            listener: first,
            extra_listeners: self.listeners,
            admin: self.admin,
            app_check: self.app_check,
            app_check_period: positive("--app-check-period", self.app_check_period)?,
            app_check_timeout: positive("--app-check-timeout", self.app_check_timeout)?,
            app_check_failure_threshold: self.app_check_failure_threshold,
            app_check_success_threshold: self.app_check_success_threshold,
            startup_hold: self.startup_hold,
            shutdown_delay: self.shutdown_delay,
            ready_during_shutdown_delay: self.ready_during_shutdown_delay,
            drain_timeout: positive("--drain-timeout", self.drain_timeout)?,
            drain_token: self.drain_token,
            final_scrape_timeout: self.final_scrape_timeout,
            grace_period: self.grace_period,
            upstream_idle_timeout: positive("--upstream-idle-timeout", self.upstream_idle_timeout)?,
            upstream_connect_timeout: positive(
                "--upstream-connect-timeout",
                self.upstream_connect_timeout,
            )?,
            upstream_max_connections: self.upstream_max_connections,
            upstream_timeout: positive("--upstream-timeout", self.upstream_timeout)?,
            header_read_timeout: positive("--header-read-timeout", self.header_read_timeout)?,
            idle_timeout: positive("--idle-timeout", self.idle_timeout)?,
            request_body_timeout: positive("--request-body-timeout", self.request_body_timeout)?,
            response_send_timeout: positive("--response-send-timeout", self.response_send_timeout)?,
            max_connections: self.max_connections,
            max_header_size: self.max_header_size,
            workers: match self.workers {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["lameduck-sidecar"];
        all.extend_from_slice(args);
        Args::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.shutdown_delay, Duration::from_secs(15));
        assert_eq!(config.app_check, AppCheck::Tcp);
    }

    #[test]
    fn bad_values_are_named() {
        let error = parse(&["--app-check", "grpc:"]).expect_err("bad check");
        assert!(error.contains("\"grpc:\""), "{error}");
        let error = parse(&["--protocol", "tcp", "--app-check", "http:/"]).expect_err("tcp");
        assert!(
            error.starts_with("--app-check=http:/ is not valid"),
            "{error}"
        );
        let error = parse(&["--upstream-protocol", "h3"]).expect_err("h3");
        assert!(error.contains("'h3'"), "{error}");
        let error = parse(&["--drain-timeout", "0s"]).expect_err("zero");
        assert!(
            error.starts_with("--drain-timeout=0ns is not valid"),
            "{error}"
        );
        let error = parse(&["--admin", "0.0.0.0:8000"]).expect_err("same port");
        assert!(error.contains("--admin=0.0.0.0:8000"), "{error}");
        let error = parse(&["--max-header-size", "100"]).expect_err("small");
        assert!(error.contains("--max-header-size=100"), "{error}");
    }

    #[test]
    fn listeners_parse_and_clash_by_name() {
        let config = parse(&[
            "--listen=0.0.0.0:18080",
            "--upstream=127.0.0.1:8080",
            "--listener=0.0.0.0:18081=127.0.0.1:50051/h2c",
            "--listener=0.0.0.0:18082=127.0.0.1:6379/tcp",
        ])
        .expect("listeners");
        let listed: Vec<String> = config.listeners().map(ToString::to_string).collect();
        assert_eq!(
            listed,
            [
                "0.0.0.0:18080=127.0.0.1:8080/http1",
                "0.0.0.0:18081=127.0.0.1:50051/h2c",
                "0.0.0.0:18082=127.0.0.1:6379/tcp"
            ]
        );
        let error = parse(&["--listener=0.0.0.0:9=127.0.0.1:1/h3"]).expect_err("mode");
        assert!(error.contains("mode \"h3\""), "{error}");
        let error = parse(&["--listener=0.0.0.0:8000=127.0.0.1:1"]).expect_err("clash");
        assert!(
            error.contains("two listeners on the same address"),
            "{error}"
        );
        let error = parse(&["--listener=0.0.0.0:9000=127.0.0.1:8000"]).expect_err("loop");
        assert!(error.contains("cannot forward to itself"), "{error}");
        let error = parse(&["--listener=0.0.0.0:9901=127.0.0.1:1"]).expect_err("admin");
        assert!(error.starts_with("--admin=0.0.0.0:9901"), "{error}");
    }

    #[test]
    fn grpc_check_names_its_service() {
        let config = parse(&["--app-check", "grpc"]).expect("grpc check");
        assert_eq!(config.app_check.to_string(), "grpc");
        let config = parse(&["--app-check", "grpc:shop.Cart"]).expect("grpc check");
        assert_eq!(
            config.app_check,
            AppCheck::Grpc {
                service: "shop.Cart".to_owned()
            }
        );
    }

    #[test]
    fn auto_follows_the_client() {
        let auto = UpstreamProtocol::Auto;
        assert_eq!(auto.wire(http::Version::HTTP_2), Wire::H2c);
        assert_eq!(auto.wire(http::Version::HTTP_11), Wire::Http1);
        assert_eq!(
            UpstreamProtocol::H2c.wire(http::Version::HTTP_11),
            Wire::H2c
        );
        assert_eq!(
            UpstreamProtocol::Http1.wire(http::Version::HTTP_2),
            Wire::Http1
        );
    }

    #[test]
    fn http_check_keeps_its_path() {
        let config = parse(&["--app-check", "http:/readyz?full=1"]).expect("http check");
        assert_eq!(
            config.app_check,
            AppCheck::Http {
                path: "/readyz?full=1".to_owned()
            }
        );
    }
}
