//! Just enough of HTTP/2 framing (RFC 9113 §4.1) to watch GOAWAY go by, in either
//! direction, without touching the protocol engine.
//!
//! - [`GoawayScan`] follows frame boundaries and reports the last stream id of each
//!   GOAWAY frame: on the app's connections (the app is going away) and on the
//!   sidecar's own writes to a client (what the sidecar promised to serve).
//! - [`StrayWindowUpdates`] removes, from what a client sends, WINDOW_UPDATE frames
//!   for streams above the last stream id of the sidecar's GOAWAY. Such a stream was
//!   opened by the client after the GOAWAY crossed it on the wire and is ignored
//!   (RFC 9113 §6.8); the `h2` crate ignores its HEADERS, DATA and RST_STREAM but
//!   answers a WINDOW_UPDATE on it with a connection-level PROTOCOL_ERROR, which fails
//!   every stream still in flight on that connection. gRPC clients send exactly that
//!   sequence when a GOAWAY crosses a new call.

use bytes::BufMut;

/// Length of a frame header.
const HEADER_LEN: usize = 9;
/// Frame type GOAWAY.
const GOAWAY: u8 = 0x7;
/// Frame type WINDOW_UPDATE.
const WINDOW_UPDATE: u8 = 0x8;
/// The client connection preface (RFC 9113 §3.4), which precedes the client's frames.
pub(crate) const CLIENT_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    len: usize,
    kind: u8,
    stream: u32,
}

impl Header {
    fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        let [a, b, c, kind, _flags, s0, s1, s2, s3] = *bytes;
        Self {
            len: usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c),
            kind,
            stream: u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]),
        }
    }
}

/// Where a scan is within the frame stream.
#[derive(Debug)]
enum At {
    /// Bytes of the client preface still to pass.
    Preface(usize),
    /// Inside a frame header; `filled` bytes of it seen.
    Header {
        bytes: [u8; HEADER_LEN],
        filled: usize,
    },
    /// Inside a frame's payload.
    Payload {
        header: Header,
        left: usize,
        seen: [u8; 4],
        seen_len: usize,
    },
}

impl At {
    fn header() -> Self {
        At::Header {
            bytes: [0; HEADER_LEN],
            filled: 0,
        }
    }
}

/// Follows frame boundaries and reports GOAWAY frames' last stream ids.
#[derive(Debug)]
pub(crate) struct GoawayScan {
    at: At,
}

impl GoawayScan {
    /// A scan of a stream that starts with a frame (the server side).
    pub(crate) fn frames() -> Self {
        Self { at: At::header() }
    }

    /// Takes the next bytes; returns the last stream id of the last GOAWAY frame
    /// completed among them, if any.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<u32> {
        let mut last = None;
        while !bytes.is_empty() {
            match &mut self.at {
                At::Preface(left) => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.at = At::header();
                    }
                }
                At::Header {
                    bytes: head,
                    filled,
                } => {
                    let n = (HEADER_LEN - *filled).min(bytes.len());
                    head[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == HEADER_LEN {
                        let header = Header::parse(head);
                        self.at = At::Payload {
                            header,
                            left: header.len,
                            seen: [0; 4],
                            seen_len: 0,
                        };
                        last = last.or(self.end_of_empty_payload());
                    }
                }
                At::Payload {
                    header,
                    left,
                    seen,
                    seen_len,
                } => {
                    let n = (*left).min(bytes.len());
                    let keep = (4 - *seen_len).min(n);
                    seen[*seen_len..*seen_len + keep].copy_from_slice(&bytes[..keep]);
                    *seen_len += keep;
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        if header.kind == GOAWAY && *seen_len == 4 {
                            let [a, b, c, d] = *seen;
                            last = Some(u32::from_be_bytes([a & 0x7f, b, c, d]));
                        }
                        self.at = At::header();
                    }
                }
            }
        }
        last
    }

    /// A frame with no payload ends with its header.
    fn end_of_empty_payload(&mut self) -> Option<u32> {
        if let At::Payload { left: 0, .. } = self.at {
            self.at = At::header();
        }
        None
    }
}

/// Drops a client's WINDOW_UPDATE frames for streams the sidecar's GOAWAY excluded
/// (see the module doc); everything else passes unchanged, in order.
#[derive(Debug)]
pub(crate) struct StrayWindowUpdates {
    at: At,
    /// Payload bytes of a dropped frame still to skip.
    dropping: usize,
}

impl StrayWindowUpdates {
    /// A filter for a client connection that starts with the preface.
    pub(crate) fn new() -> Self {
        Self {
            at: At::Preface(CLIENT_PREFACE.len()),
            dropping: 0,
        }
    }

    /// Appends to `out` what of `input` h2 should see, given the last stream id of the
    /// GOAWAY the sidecar has sent (`u32::MAX` when none).
    pub(crate) fn filter(&mut self, mut input: &[u8], last_stream_id: u32, out: &mut impl BufMut) {
        while !input.is_empty() {
            if self.dropping > 0 {
                let n = self.dropping.min(input.len());
                self.dropping -= n;
                input = &input[n..];
                continue;
            }
            match &mut self.at {
                At::Preface(left) => {
                    let n = (*left).min(input.len());
                    out.put_slice(&input[..n]);
                    *left -= n;
                    input = &input[n..];
                    if *left == 0 {
                        self.at = At::header();
                    }
                }
                At::Header { bytes, filled } => {
                    let n = (HEADER_LEN - *filled).min(input.len());
                    bytes[*filled..*filled + n].copy_from_slice(&input[..n]);
                    *filled += n;
                    input = &input[n..];
                    if *filled < HEADER_LEN {
                        continue;
                    }
                    let header = Header::parse(bytes);
                    let stray = header.kind == WINDOW_UPDATE
                        && header.stream != 0
                        && header.stream > last_stream_id;
                    if stray {
                        self.dropping = header.len;
                        self.at = At::header();
                    } else {
                        out.put_slice(bytes);
                        self.at = if header.len == 0 {
                            At::header()
                        } else {
                            At::Payload {
                                header,
                                left: header.len,
                                seen: [0; 4],
                                seen_len: 4,
                            }
                        };
                    }
                }
                At::Payload { left, .. } => {
                    let n = (*left).min(input.len());
                    out.put_slice(&input[..n]);
                    *left -= n;
                    input = &input[n..];
                    if *left == 0 {
                        self.at = At::header();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("small").to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, 0];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    fn goaway(last: u32) -> Vec<u8> {
        let mut payload = last.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0]);
        frame(GOAWAY, 0, &payload)
    }

    #[test]
    fn goaways_are_found_across_any_split_and_payload_bytes_never_fool_the_scan() {
        // SETTINGS, DATA full of GOAWAY-looking bytes, an empty SETTINGS ack, then
        // the two-step GOAWAY.
        let mut stream = frame(0x4, 0, &[0; 6]);
        stream.extend(frame(0x0, 1, &[GOAWAY; 300]));
        stream.extend(frame(0x4, 0, &[]));
        let first = stream.len();
        stream.extend(goaway(0x7fff_ffff));
        let second = stream.len();
        stream.extend(goaway(5));
        for chunk in [1, 2, 5, 9, 10, 64, stream.len()] {
            let mut scan = GoawayScan::frames();
            let mut seen = Vec::new();
            for (i, piece) in stream.chunks(chunk).enumerate() {
                if let Some(last) = scan.feed(piece) {
                    seen.push((i * chunk + piece.len(), last));
                }
            }
            let ids: Vec<u32> = seen.iter().map(|(_, id)| *id).collect();
            assert_eq!(ids.last(), Some(&5), "chunks of {chunk}");
            if chunk <= 17 {
                // Each GOAWAY ends in its own chunk: both are reported, once complete.
                assert_eq!(ids, [0x7fff_ffff, 5], "chunks of {chunk}");
                assert!(seen[0].0 > first && seen[1].0 > second, "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn only_window_updates_above_the_goaway_are_dropped() {
        let mut input = CLIENT_PREFACE.to_vec();
        let kept_before = frame(0x4, 0, &[0; 6]);
        input.extend(&kept_before);
        let below = frame(WINDOW_UPDATE, 3, &[0, 0, 0, 5]);
        let connection = frame(WINDOW_UPDATE, 0, &[0, 0, 0, 5]);
        let stray = frame(WINDOW_UPDATE, 7, &[0, 0, 0, 5]);
        let headers_above = frame(0x1, 7, &[0x82; 20]);
        input.extend(&headers_above);
        input.extend(&below);
        input.extend(&stray);
        input.extend(&connection);
        let mut expected = CLIENT_PREFACE.to_vec();
        expected.extend(&kept_before);
        expected.extend(&headers_above);
        expected.extend(&below);
        expected.extend(&connection);
        for chunk in [1, 3, 9, 13, 50, input.len()] {
            let mut filter = StrayWindowUpdates::new();
            let mut out = Vec::new();
            for piece in input.chunks(chunk) {
                filter.filter(piece, 5, &mut out);
            }
            assert_eq!(out, expected, "chunks of {chunk}");
        }
        // Before any GOAWAY nothing is dropped.
        let mut filter = StrayWindowUpdates::new();
        let mut out = Vec::new();
        filter.filter(&input, u32::MAX, &mut out);
        assert_eq!(out, input);
    }
}
