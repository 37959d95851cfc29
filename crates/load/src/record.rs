//! One record per scheduled request, compact in memory, written as JSON lines or CSV.

use std::io::{self, Write};

/// Why a request got no HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ErrorClass {
    /// The connection was refused (nothing listens).
    Refused = 1,
    /// The connect did not complete in time.
    ConnectTimeout = 2,
    /// The connection was reset.
    Reset = 3,
    /// The server closed the connection before a complete response.
    Eof = 4,
    /// No complete response within `--timeout`.
    Timeout = 5,
    /// A TLS failure (lameduck load speaks plain HTTP, so only reported by proxies).
    Tls = 6,
    /// Anything else.
    Other = 7,
}

impl ErrorClass {
    /// Every class, in report order.
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::Refused,
        ErrorClass::ConnectTimeout,
        ErrorClass::Reset,
        ErrorClass::Eof,
        ErrorClass::Timeout,
        ErrorClass::Tls,
        ErrorClass::Other,
    ];

    /// The name used in records and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Refused => "refused",
            ErrorClass::ConnectTimeout => "connect_timeout",
            ErrorClass::Reset => "reset",
            ErrorClass::Eof => "eof",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Tls => "tls",
            ErrorClass::Other => "other",
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|class| *class as u8 == value)
    }

    /// Classifies a client error by walking its source chain.
    pub fn classify(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut class = ErrorClass::Other;
        while let Some(current) = source {
            if let Some(io) = current.downcast_ref::<io::Error>() {
                return match io.kind() {
                    io::ErrorKind::ConnectionRefused => ErrorClass::Refused,
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe => ErrorClass::Reset,
                    io::ErrorKind::TimedOut => ErrorClass::ConnectTimeout,
                    io::ErrorKind::UnexpectedEof => ErrorClass::Eof,
                    // A wrapper: the error it wraps may say more. (`source()` of a custom
                    // io::Error skips the wrapped error itself, `get_ref()` does not.)
                    io::ErrorKind::Other => {
                        source = match io.get_ref() {
                            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                            None => current.source(),
                        };
                        continue;
                    }
                    _ => ErrorClass::Other,
                };
            }
            if let Some(hyper_error) = current.downcast_ref::<hyper::Error>()
                && (hyper_error.is_incomplete_message() || hyper_error.is_closed())
            {
                class = ErrorClass::Eof;
            }
            let text = current.to_string();
            if text.contains("connect timeout") || text.contains("connect timed out") {
                return ErrorClass::ConnectTimeout;
            }
            source = current.source();
        }
        class
    }
}

/// Marks "no value" in the compact fields.
const NONE_U16: u16 = u16::MAX;
const NONE_U8: u8 = u8::MAX;

/// gRPC's `UNKNOWN` status: what a call whose response carries no `grpc-status` gets.
pub const GRPC_UNKNOWN: u8 = 2;

/// One request, 40 bytes in memory. Times are microseconds since the run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// When the request was due (start + seq / rate).
    pub scheduled_us: u64,
    /// When it was handed to the connection (0 and `error` set if never sent).
    pub sent_us: u64,
    /// When the response body ended or the request failed.
    pub done_us: u64,
    /// Response body bytes.
    pub bytes: u32,
    status: u16,
    pod: u16,
    version: u16,
    target: u8,
    error: u8,
    grpc_status: u8,
}

impl Record {
    /// A record for a request that has not completed.
    pub fn new(scheduled_us: u64, target: u8) -> Self {
        Self {
            scheduled_us,
            sent_us: 0,
            done_us: 0,
            bytes: 0,
            status: NONE_U16,
            pod: NONE_U16,
            version: NONE_U16,
            target,
            error: 0,
            grpc_status: NONE_U8,
        }
    }

    /// The HTTP status, if a response arrived.
    pub fn status(&self) -> Option<u16> {
        (self.status != NONE_U16).then_some(self.status)
    }

    /// Sets the HTTP status.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// The transport error, if any.
    pub fn error(&self) -> Option<ErrorClass> {
        ErrorClass::from_u8(self.error)
    }

    /// Sets the transport error.
    pub fn set_error(&mut self, class: ErrorClass) {
        self.error = class as u8;
    }

    /// Index of the target URL.
    pub fn target(&self) -> usize {
        usize::from(self.target)
    }

    /// Interned `x-pod` index.
    pub fn pod(&self) -> Option<usize> {
        (self.pod != NONE_U16).then_some(usize::from(self.pod))
    }

    /// Interned `x-version` index.
    pub fn version(&self) -> Option<usize> {
        (self.version != NONE_U16).then_some(usize::from(self.version))
    }

    /// Sets the interned pod and version.
    pub fn set_origin(&mut self, pod: Option<u16>, version: Option<u16>) {
        self.pod = pod.unwrap_or(NONE_U16);
        self.version = version.unwrap_or(NONE_U16);
    }

    /// The call's `grpc-status`, for gRPC calls that got a response.
    pub fn grpc_status(&self) -> Option<u8> {
        (self.grpc_status != NONE_U8).then_some(self.grpc_status)
    }

    /// Sets the call's `grpc-status` (statuses above 254 are kept as `UNKNOWN`).
    pub fn set_grpc_status(&mut self, status: u32) {
        self.grpc_status = u8::try_from(status)
            .ok()
            .filter(|s| *s != NONE_U8)
            .unwrap_or(GRPC_UNKNOWN);
    }

    /// Whether the request succeeded: a 2xx or 3xx status, no transport error, and
    /// for a gRPC call `grpc-status: 0` (OK).
    pub fn ok(&self) -> bool {
        self.error().is_none()
            && matches!(self.status(), Some(200..=399))
            && matches!(self.grpc_status(), None | Some(0))
    }

    /// Latency from the scheduled time (includes any wait for a slot or a connection).
    pub fn latency_from_scheduled_us(&self) -> u64 {
        self.done_us.saturating_sub(self.scheduled_us)
    }

    /// Latency from the send time.
    pub fn latency_from_sent_us(&self) -> u64 {
        if self.sent_us == 0 {
            return 0;
        }
        self.done_us.saturating_sub(self.sent_us)
    }
}

/// Interned strings (pod names, versions): a handful of distinct values.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    values: Vec<String>,
}

impl Interner {
    /// The index of `value`, adding it if new; `None` once 65535 values exist.
    pub fn intern(&mut self, value: &str) -> Option<u16> {
        if let Some(index) = self.values.iter().position(|v| v == value) {
            return u16::try_from(index).ok();
        }
        let index = u16::try_from(self.values.len())
            .ok()
            .filter(|i| *i != NONE_U16)?;
        self.values.push(value.to_owned());
        Some(index)
    }

    /// The string at `index`.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.values.get(index).map(String::as_str)
    }
}

fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

fn json_string(out: &mut impl Write, value: Option<&str>) -> io::Result<()> {
    match value {
        None => out.write_all(b"null"),
        Some(s) => {
            let quoted = serde_json::to_string(s).map_err(io::Error::other)?;
            out.write_all(quoted.as_bytes())
        }
    }
}

/// Writes one record as a JSON object line.
pub fn write_json_line(
    out: &mut impl Write,
    seq: usize,
    record: &Record,
    strings: &Interner,
    targets: &[String],
) -> io::Result<()> {
    write!(out, "{{\"seq\":{seq},\"target\":",)?;
    json_string(out, targets.get(record.target()).map(String::as_str))?;
    write!(
        out,
        ",\"scheduled\":{:.6},\"sent\":",
        seconds(record.scheduled_us)
    )?;
    if record.sent_us == 0 {
        out.write_all(b"null")?;
    } else {
        write!(out, "{:.6}", seconds(record.sent_us))?;
    }
    write!(out, ",\"done\":{:.6},\"status\":", seconds(record.done_us))?;
    match record.status() {
        Some(status) => write!(out, "{status}")?,
        None => out.write_all(b"null")?,
    }
    out.write_all(b",\"error\":")?;
    json_string(out, record.error().map(ErrorClass::as_str))?;
    write!(out, ",\"bytes\":{},\"pod\":", record.bytes)?;
    json_string(out, record.pod().and_then(|i| strings.get(i)))?;
    out.write_all(b",\"version\":")?;
    json_string(out, record.version().and_then(|i| strings.get(i)))?;
    out.write_all(b",\"grpc_status\":")?;
    match record.grpc_status() {
        Some(status) => write!(out, "{status}")?,
        None => out.write_all(b"null")?,
    }
    out.write_all(b"}\n")
}

/// The CSV header line.
pub const CSV_HEADER: &str =
    "seq,target,scheduled,sent,done,status,error,bytes,pod,version,grpc_status\n";

fn csv_field(out: &mut impl Write, value: Option<&str>) -> io::Result<()> {
    let Some(value) = value else { return Ok(()) };
    if value.contains([',', '"', '\n', '\r']) {
        write!(out, "\"{}\"", value.replace('"', "\"\""))
    } else {
        out.write_all(value.as_bytes())
    }
}

/// Writes one record as a CSV line (empty fields for null).
pub fn write_csv_line(
    out: &mut impl Write,
    seq: usize,
    record: &Record,
    strings: &Interner,
    targets: &[String],
) -> io::Result<()> {
    write!(out, "{seq},")?;
    csv_field(out, targets.get(record.target()).map(String::as_str))?;
    write!(out, ",{:.6},", seconds(record.scheduled_us))?;
    if record.sent_us != 0 {
        write!(out, "{:.6}", seconds(record.sent_us))?;
    }
    write!(out, ",{:.6},", seconds(record.done_us))?;
    if let Some(status) = record.status() {
        write!(out, "{status}")?;
    }
    out.write_all(b",")?;
    csv_field(out, record.error().map(ErrorClass::as_str))?;
    write!(out, ",{},", record.bytes)?;
    csv_field(out, record.pod().and_then(|i| strings.get(i)))?;
    out.write_all(b",")?;
    csv_field(out, record.version().and_then(|i| strings.get(i)))?;
    out.write_all(b",")?;
    if let Some(status) = record.grpc_status() {
        write!(out, "{status}")?;
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_compact() {
        assert!(
            std::mem::size_of::<Record>() <= 64,
            "{}",
            std::mem::size_of::<Record>()
        );
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut strings = Interner::default();
        let mut record = Record::new(1_500_000, 0);
        record.sent_us = 1_500_100;
        record.done_us = 1_750_000;
        record.set_status(200);
        record.bytes = 3;
        record.set_origin(strings.intern("pod-\"a\""), strings.intern("2"));
        let mut line = Vec::new();
        write_json_line(&mut line, 7, &record, &strings, &["http://x/".to_owned()]).expect("write");
        let value: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
        assert_eq!(value["seq"], 7);
        assert_eq!(value["scheduled"], 1.5);
        assert_eq!(value["status"], 200);
        assert_eq!(value["error"], serde_json::Value::Null);
        assert_eq!(value["pod"], "pod-\"a\"");
        assert_eq!(value["version"], "2");
        assert_eq!(value["grpc_status"], serde_json::Value::Null);
        record.set_grpc_status(14);
        assert!(!record.ok(), "UNAVAILABLE is a failed call");
        record.set_grpc_status(0);
        assert!(record.ok());
        let mut line = Vec::new();
        write_json_line(&mut line, 7, &record, &strings, &[]).expect("write");
        let value: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
        assert_eq!(value["grpc_status"], 0);

        let mut failed = Record::new(0, 0);
        failed.set_error(ErrorClass::Refused);
        let mut line = Vec::new();
        write_json_line(&mut line, 0, &failed, &strings, &[]).expect("write");
        let value: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
        assert_eq!(value["error"], "refused");
        assert_eq!(value["status"], serde_json::Value::Null);
        assert_eq!(value["sent"], serde_json::Value::Null);
        assert!(!failed.ok());
    }

    #[test]
    fn io_errors_are_classified() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(ErrorClass::classify(&refused), ErrorClass::Refused);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(ErrorClass::classify(&reset), ErrorClass::Reset);
        let wrapped = io::Error::other(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(ErrorClass::classify(&wrapped), ErrorClass::Reset);
        let opaque = io::Error::other("something else");
        assert_eq!(ErrorClass::classify(&opaque), ErrorClass::Other);
    }
}
