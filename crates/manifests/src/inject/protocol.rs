//! Which protocol a serving port speaks, and the evidence for it.
//!
//! In order, the first that says something decides: the pod template annotation
//! `lameduck.dev/protocol`; the port's `appProtocol` on the container or on a Service
//! that targets it; the port's name on such a Service or on the container, by the
//! common `<protocol>[-<suffix>]` convention; a gRPC probe on the port (`grpc:` or an
//! exec of `grpc_health_probe`); a well-known server-speaks-first port; else HTTP.
//!
//! Evidence that contradicts the deciding one (a Service naming a port `http-api`
//! that has a gRPC probe), or an `appProtocol` this module does not know, is an error
//! naming the annotation that settles it: a port is never wrapped in a mode nobody
//! vouched for. h2c and gRPC agree (a gRPC server is an h2c server).

use serde_json::Value;

use super::ANNOTATION_PROTOCOL;

/// Ports whose clients wait for the server to speak first (SMTP, MySQL, Galera,
/// PostgreSQL, Redis, Elasticsearch transport, memcached): never HTTP.
pub(super) const SERVER_SPEAKS_FIRST_PORTS: [u16; 8] =
    [25, 587, 3306, 4444, 5432, 6379, 9300, 11211];

/// How the sidecar fronts one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    /// HTTP/1.1 to the app.
    Http,
    /// HTTP/2 prior knowledge to the app.
    H2c,
    /// gRPC: h2c to the app, and the gRPC health check when the app has a gRPC probe.
    Grpc,
    /// A layer-4 drain: connections spliced to the app.
    Tcp,
    /// Not fronted: clients reach the app directly.
    Skip,
}

impl PortProtocol {
    /// The annotation's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::H2c => "h2c",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
            Self::Skip => "skip",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "http" => Self::Http,
            "h2c" => Self::H2c,
            "grpc" => Self::Grpc,
            "tcp" => Self::Tcp,
            "skip" => Self::Skip,
            _ => return None,
        })
    }

    /// The sidecar listener's mode (`LISTEN=UPSTREAM/MODE`).
    pub(super) fn listener_mode(self) -> &'static str {
        match self {
            Self::Http | Self::Skip => "http1",
            Self::H2c | Self::Grpc => "h2c",
            Self::Tcp => "tcp",
        }
    }

    /// Whether two pieces of evidence agree.
    pub(crate) fn agrees_with(self, other: Self) -> bool {
        let h2 = |p| matches!(p, Self::H2c | Self::Grpc);
        self == other || (h2(self) && h2(other))
    }
}

/// By the `<protocol>[-<suffix>]` naming convention of Service and container ports
/// (Istio's, and what Linkerd and most charts follow); `None`: the name says nothing.
pub(crate) fn by_name(name: &str) -> Option<PortProtocol> {
    if name == "grpc-web" || name.starts_with("grpc-web-") {
        // gRPC-Web is plain HTTP/1.1-compatible HTTP.
        return Some(PortProtocol::Http);
    }
    let prefix = name.split('-').next().unwrap_or(name);
    Some(match prefix {
        "grpc" => PortProtocol::Grpc,
        "http2" | "h2c" => PortProtocol::H2c,
        "http" => PortProtocol::Http,
        // TLS cannot be proxied as HTTP without its keys; spliced, it drains by connection.
        "https" | "tls" | "tcp" | "redis" | "mysql" | "postgres" | "postgresql" | "mongo"
        | "mongodb" => PortProtocol::Tcp,
        _ => return None,
    })
}

/// By an `appProtocol` value; `Err` when the value is not one this knows.
pub(crate) fn by_app_protocol(value: &str) -> Result<PortProtocol, ()> {
    Ok(match value.to_ascii_lowercase().as_str() {
        "http" | "kubernetes.io/ws" | "grpc-web" => PortProtocol::Http,
        "kubernetes.io/h2c" | "h2c" | "http2" => PortProtocol::H2c,
        "grpc" => PortProtocol::Grpc,
        "https" | "tls" | "kubernetes.io/wss" | "tcp" | "redis" | "mysql" | "postgres"
        | "postgresql" | "mongo" | "mongodb" => PortProtocol::Tcp,
        _ => return Err(()),
    })
}

/// Why a port got its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// The pod template annotation.
    Annotation,
    /// `appProtocol` on the container port or on a Service port.
    AppProtocol {
        /// `container port` or `Service NAME`.
        on: String,
        /// The value.
        value: String,
    },
    /// The port's name on a Service or on the container.
    PortName {
        /// `container port` or `Service NAME`.
        on: String,
        /// The name.
        name: String,
    },
    /// A gRPC probe on the port.
    GrpcProbe(GrpcProbe),
    /// A well-known server-speaks-first port number.
    WellKnownPort,
    /// Nothing said otherwise.
    Default,
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Annotation => write!(f, "annotation {ANNOTATION_PROTOCOL}"),
            Self::AppProtocol { on, value } => write!(f, "appProtocol {value} on {on}"),
            Self::PortName { on, name } => write!(f, "port name {name:?} on {on}"),
            Self::GrpcProbe(probe) => write!(f, "{}", probe.kind),
            Self::WellKnownPort => f.write_str("a well-known port of a non-HTTP protocol"),
            Self::Default => f.write_str("nothing says otherwise"),
        }
    }
}

/// A gRPC health probe found on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcProbe {
    /// What kind: a `grpc:` probe or an exec of `grpc_health_probe`, and which probe.
    pub kind: String,
    /// The health service asked about (empty: the server as a whole).
    pub service: String,
    /// It is the readiness probe.
    pub readiness: bool,
}

/// The gRPC probe of `container` on port `number`, if any (readiness first).
pub(crate) fn grpc_probe(container: &Value, number: u16) -> Option<GrpcProbe> {
    for probe in ["readinessProbe", "startupProbe", "livenessProbe"] {
        let Some(handler) = container.get(probe) else {
            continue;
        };
        let readiness = probe == "readinessProbe";
        if let Some(grpc) = handler.get("grpc")
            && grpc.get("port").and_then(Value::as_u64) == Some(u64::from(number))
        {
            return Some(GrpcProbe {
                kind: format!("a grpc {probe}"),
                service: grpc
                    .get("service")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                readiness,
            });
        }
        let command: Vec<&str> = handler
            .pointer("/exec/command")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if let Some(probe_args) = health_probe_args(&command)
            && probe_args.port == Some(number)
        {
            return Some(GrpcProbe {
                kind: format!("an exec grpc_health_probe {probe}"),
                service: probe_args.service,
                readiness,
            });
        }
    }
    None
}

struct HealthProbeArgs {
    port: Option<u16>,
    service: String,
}

/// The `-addr` port and `-service` of a `grpc_health_probe` command line (also when
/// run through `sh -c`).
fn health_probe_args(command: &[&str]) -> Option<HealthProbeArgs> {
    let words: Vec<&str> = command
        .iter()
        .flat_map(|part| part.split_whitespace())
        .collect();
    let start = words.iter().position(|w| {
        let program = w.rsplit('/').next().unwrap_or(w);
        program == "grpc_health_probe" || program == "grpc-health-probe"
    })?;
    let mut found = HealthProbeArgs {
        port: None,
        service: String::new(),
    };
    let mut rest = words[start + 1..].iter();
    while let Some(word) = rest.next() {
        let flag = word.trim_start_matches('-');
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (flag, rest.next().map(|v| (*v).to_owned())),
        };
        let value = value.unwrap_or_default();
        match name {
            "addr" => found.port = value.rsplit(':').next().and_then(|p| p.parse().ok()),
            "service" => found.service = value,
            _ => {}
        }
    }
    Some(found)
}

/// Everything known about one serving port.
pub(super) struct Facts<'a> {
    /// The container that declares it.
    pub(super) container: &'a Value,
    /// Its declaration.
    pub(super) declared: &'a Value,
    /// Its number.
    pub(super) number: u16,
    /// The Service ports that target it: (Service name, Service port).
    pub(super) services: Vec<(String, Value)>,
}

/// The protocol of one port and why, or why it cannot be told safely.
pub(super) fn classify(
    facts: &Facts<'_>,
    annotated: Option<PortProtocol>,
) -> Result<(PortProtocol, Evidence), String> {
    if let Some(protocol) = annotated {
        return Ok((protocol, Evidence::Annotation));
    }
    let mut said: Vec<(PortProtocol, Evidence)> = Vec::new();
    let container_port = "the container port".to_owned();
    let mut app_protocols = vec![(container_port.clone(), facts.declared)];
    app_protocols.extend(
        facts
            .services
            .iter()
            .map(|(name, port)| (format!("Service {name}"), port)),
    );
    for (on, port) in &app_protocols {
        if let Some(value) = port.get("appProtocol").and_then(Value::as_str) {
            let protocol = by_app_protocol(value).map_err(|()| {
                format!(
                    "appProtocol {value:?} on {on} is not one lameduck knows how to front; \
                     set {ANNOTATION_PROTOCOL} (http, h2c, grpc, tcp or skip)"
                )
            })?;
            let (on, value) = (on.clone(), value.to_owned());
            said.push((protocol, Evidence::AppProtocol { on, value }));
        }
    }
    let mut names: Vec<(String, &Value)> = facts
        .services
        .iter()
        .map(|(name, port)| (format!("Service {name}"), port))
        .collect();
    names.push((container_port, facts.declared));
    for (on, port) in names {
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if let Some(protocol) = by_name(name) {
            let name = name.to_owned();
            said.push((protocol, Evidence::PortName { on, name }));
        }
    }
    if let Some(probe) = grpc_probe(facts.container, facts.number) {
        said.push((PortProtocol::Grpc, Evidence::GrpcProbe(probe)));
    }
    let Some((decided, because)) = said.first().cloned() else {
        if SERVER_SPEAKS_FIRST_PORTS.contains(&facts.number) {
            return Ok((PortProtocol::Tcp, Evidence::WellKnownPort));
        }
        return Ok((PortProtocol::Http, Evidence::Default));
    };
    if let Some((other, why)) = said.iter().find(|(p, _)| !p.agrees_with(decided)) {
        return Err(format!(
            "{because} says {} but {why} says {}; set {ANNOTATION_PROTOCOL} to the one it speaks",
            decided.as_str(),
            other.as_str()
        ));
    }
    // A gRPC probe makes an h2c port a gRPC one (the health check can be used).
    if decided == PortProtocol::H2c
        && let Some((_, Evidence::GrpcProbe(probe))) = said
            .iter()
            .find(|(_, e)| matches!(e, Evidence::GrpcProbe(_)))
    {
        return Ok((PortProtocol::Grpc, Evidence::GrpcProbe(probe.clone())));
    }
    Ok((decided, because))
}

/// The annotation's value: one protocol for every serving port, or `PORT=PROTOCOL`
/// pairs separated by commas (PORT a name or number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Annotated {
    /// Every port.
    All(PortProtocol),
    /// Per port (ports not listed are classified as usual).
    Each(Vec<(String, PortProtocol)>),
}

impl Annotated {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let unknown = |p: &str| {
            format!(
                "{ANNOTATION_PROTOCOL}={text:?}: {p:?} is not one of http, h2c, grpc, tcp, skip"
            )
        };
        if !text.contains('=') {
            return PortProtocol::parse(text.trim())
                .map(Self::All)
                .ok_or_else(|| unknown(text.trim()));
        }
        text.split(',')
            .map(|pair| {
                let (port, protocol) = pair.split_once('=').ok_or_else(|| {
                    format!(
                        "{ANNOTATION_PROTOCOL}={text:?}: expected PROTOCOL or PORT=PROTOCOL,..."
                    )
                })?;
                let protocol =
                    PortProtocol::parse(protocol.trim()).ok_or_else(|| unknown(protocol.trim()))?;
                Ok((port.trim().to_owned(), protocol))
            })
            .collect::<Result<_, _>>()
            .map(Self::Each)
    }

    /// What the annotation says about the port `name`/`number`.
    pub(super) fn for_port(&self, name: Option<&str>, number: u16) -> Option<PortProtocol> {
        match self {
            Self::All(protocol) => Some(*protocol),
            Self::Each(pairs) => pairs
                .iter()
                .find(|(port, _)| Some(port.as_str()) == name || *port == number.to_string())
                .map(|(_, protocol)| *protocol),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn facts<'a>(container: &'a Value, services: Vec<(String, Value)>) -> Facts<'a> {
        Facts {
            container,
            declared: &container["ports"][0],
            number: u16::try_from(container["ports"][0]["containerPort"].as_u64().unwrap_or(0))
                .unwrap_or(0),
            services,
        }
    }

    fn protocol(container: &Value, services: Vec<(String, Value)>) -> Result<PortProtocol, String> {
        classify(&facts(container, services), None).map(|(p, _)| p)
    }

    #[test]
    fn names_follow_the_convention() {
        assert_eq!(by_name("grpc"), Some(PortProtocol::Grpc));
        assert_eq!(by_name("grpc-public"), Some(PortProtocol::Grpc));
        assert_eq!(by_name("grpc-web"), Some(PortProtocol::Http));
        assert_eq!(by_name("http2-api"), Some(PortProtocol::H2c));
        assert_eq!(by_name("h2c"), Some(PortProtocol::H2c));
        assert_eq!(by_name("http-api"), Some(PortProtocol::Http));
        assert_eq!(by_name("tcp-broker"), Some(PortProtocol::Tcp));
        assert_eq!(by_name("redis"), Some(PortProtocol::Tcp));
        assert_eq!(by_name("https"), Some(PortProtocol::Tcp));
        assert_eq!(by_name("web"), None);
        assert_eq!(by_name("metrics"), None);
    }

    #[test]
    fn the_order_of_evidence_is_kept() {
        let plain = json!({"ports": [{"containerPort": 8080}]});
        assert_eq!(protocol(&plain, vec![]), Ok(PortProtocol::Http));
        let redis = json!({"ports": [{"containerPort": 6379}]});
        assert_eq!(protocol(&redis, vec![]), Ok(PortProtocol::Tcp));
        let named = json!({"ports": [{"containerPort": 6379, "name": "http"}]});
        assert_eq!(
            protocol(&named, vec![]),
            Ok(PortProtocol::Http),
            "a name beats a number"
        );
        let service = ("api".to_owned(), json!({"name": "grpc", "port": 80}));
        assert_eq!(protocol(&plain, vec![service]), Ok(PortProtocol::Grpc));
        let h2 = (
            "api".to_owned(),
            json!({"appProtocol": "kubernetes.io/h2c", "port": 80}),
        );
        assert_eq!(protocol(&plain, vec![h2]), Ok(PortProtocol::H2c));
        let annotated = classify(&facts(&plain, vec![]), Some(PortProtocol::Skip));
        assert_eq!(annotated, Ok((PortProtocol::Skip, Evidence::Annotation)));
    }

    #[test]
    fn grpc_probes_are_found_and_make_h2c_grpc() {
        let exec = json!({
            "ports": [{"containerPort": 50051}],
            "readinessProbe": {"exec": {"command": ["/bin/grpc_health_probe", "-addr=:50051", "-service", "shop.Cart"]}},
        });
        let probe = grpc_probe(&exec, 50051).expect("exec probe");
        assert_eq!(probe.service, "shop.Cart");
        assert!(probe.readiness);
        assert_eq!(grpc_probe(&exec, 8080), None);
        assert_eq!(protocol(&exec, vec![]), Ok(PortProtocol::Grpc));
        let h2 = ("api".to_owned(), json!({"name": "http2", "port": 80}));
        assert_eq!(protocol(&exec, vec![h2]), Ok(PortProtocol::Grpc));
        let native = json!({
            "ports": [{"containerPort": 9000}],
            "livenessProbe": {"grpc": {"port": 9000}},
        });
        let probe = grpc_probe(&native, 9000).expect("grpc probe");
        assert!(!probe.readiness);
        assert_eq!(probe.service, "");
        let shell = json!({"readinessProbe": {"exec": {"command": ["sh", "-c", "grpc_health_probe -addr localhost:7000"]}}});
        assert!(grpc_probe(&shell, 7000).is_some());
    }

    #[test]
    fn contradictions_and_unknown_values_are_refused_with_the_fix() {
        let probe = json!({
            "ports": [{"containerPort": 50051}],
            "readinessProbe": {"grpc": {"port": 50051}},
        });
        let http = ("api".to_owned(), json!({"name": "http-api", "port": 80}));
        let error = protocol(&probe, vec![http]).expect_err("contradiction");
        assert!(
            error.contains("port name \"http-api\" on Service api says http"),
            "{error}"
        );
        assert!(error.contains(ANNOTATION_PROTOCOL), "{error}");
        let odd = (
            "api".to_owned(),
            json!({"appProtocol": "example.com/custom", "port": 80}),
        );
        let error = protocol(&probe, vec![odd]).expect_err("unknown");
        assert!(error.contains("\"example.com/custom\""), "{error}");
    }

    #[test]
    fn the_annotation_is_one_protocol_or_one_per_port() {
        assert_eq!(
            Annotated::parse("grpc"),
            Ok(Annotated::All(PortProtocol::Grpc))
        );
        let each = Annotated::parse("grpc=grpc, 9090=skip").expect("pairs");
        assert_eq!(each.for_port(Some("grpc"), 50051), Some(PortProtocol::Grpc));
        assert_eq!(
            each.for_port(Some("metrics"), 9090),
            Some(PortProtocol::Skip)
        );
        assert_eq!(each.for_port(Some("http"), 8080), None);
        assert!(
            Annotated::parse("quic")
                .expect_err("unknown")
                .contains("\"quic\"")
        );
    }
}
