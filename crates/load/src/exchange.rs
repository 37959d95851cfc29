//! One request and its response, shared by the HTTP/1.1 workers and the HTTP/2 path:
//! building the request, reading the response into its record, and the HTTP/2 path
//! itself (hyper's pooled client, which multiplexes).

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::record::{ErrorClass, GRPC_UNKNOWN, Record};
use crate::{Done, LoadConfig, SEQ_HEADER, micros, worker::Job};

/// Errors of the HTTP clients, classified by walking their sources.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Records a response's status and size, reading its body to the end; returns its
/// `x-pod` and `x-version` headers. For a gRPC call, also its `grpc-status` (in the
/// trailers, or in the headers of a trailers-only response; none at all is UNKNOWN).
pub(crate) async fn read_response(
    response: http::Response<hyper::body::Incoming>,
    record: &mut Record,
    grpc: bool,
) -> Result<(Option<HeaderValue>, Option<HeaderValue>), BoxError> {
    record.set_status(response.status().as_u16());
    let pod = owned(response.headers().get("x-pod"));
    let version = owned(response.headers().get("x-version"));
    let mut grpc_status = grpc_status(response.headers());
    let mut body = response.into_body();
    let mut bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
        } else if let Some(trailers) = frame.trailers_ref() {
            grpc_status = grpc_status.or_else(|| self::grpc_status(trailers));
        }
    }
    record.bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
    if grpc {
        record.set_grpc_status(grpc_status.unwrap_or(u32::from(GRPC_UNKNOWN)));
    }
    Ok((pod, version))
}

/// The `grpc-status` of a header or trailer block; unparsable counts as UNKNOWN.
fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(u32::from(GRPC_UNKNOWN)),
    )
}

/// A copy of a response header value: the value itself is a slice of the connection's
/// read buffer, and holding it while the record travels to the collector kept hyper
/// from reusing that buffer (a fresh buffer and a copy per response).
fn owned(value: Option<&HeaderValue>) -> Option<HeaderValue> {
    value.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
}

/// The request numbered `seq`, to `config.urls[target]`.
pub(crate) fn build_request(
    config: &LoadConfig,
    seq: usize,
    target: usize,
) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(config.body.clone()));
    *request.method_mut() = config.method.clone();
    let uri = &config.urls[target];
    *request.uri_mut() = if config.http2 {
        uri.clone()
    } else {
        // Connection workers speak to the origin directly: origin-form, Host set by them.
        uri.path_and_query()
            .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()))
    };
    let headers = request.headers_mut();
    headers.clone_from(&config.headers);
    headers.insert(
        HeaderName::from_static(SEQ_HEADER),
        HeaderValue::from(seq as u64),
    );
    if !config.keepalive && !config.http2 {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    request
}

/// hyper's pooled client, for HTTP/2 with prior knowledge.
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client(config: &LoadConfig) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90));
    if !config.keepalive {
        builder.pool_max_idle_per_host(0);
    }
    if config.http2 {
        builder.http2_only(true);
    }
    builder.build(connector)
}

/// Sends one request on the pooled client and records how it went.
pub(crate) async fn send(
    client: HttpClient,
    request: Request<Full<Bytes>>,
    job: &Job,
    start: Instant,
    timeout: Duration,
    grpc: bool,
) -> Done {
    let mut record = Record::new(
        job.scheduled_us,
        u8::try_from(job.target).unwrap_or(u8::MAX),
    );
    record.sent_us = micros(start.elapsed()).max(1);
    let mut pod = None;
    let mut version = None;
    let exchange = async {
        let response = client.request(request).await?;
        (pod, version) = read_response(response, &mut record, grpc).await?;
        Ok::<_, BoxError>(())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => record.set_error(ErrorClass::classify(error.as_ref())),
        Err(_) => record.set_error(ErrorClass::Timeout),
    }
    record.done_us = micros(start.elapsed());
    Done {
        seq: job.seq,
        record,
        pod,
        version,
    }
}
