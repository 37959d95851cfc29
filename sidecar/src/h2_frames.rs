//! Just enough of HTTP/2 framing (RFC 9113 §4.1) to watch GOAWAY go by, in either
//! direction, without touching the protocol engine.
//!
//! - [`GoawayScan`] follows frame boundaries and reports the last stream id of each
//!   GOAWAY frame: on the app's connections (the app is going away) and on the
//!   sidecar's own writes to a client (what the sidecar promised to serve).
//! - [`StrayWindowUpdates`] removes, from what a client sends, WINDOW_UPDATE frames
//!   for streams above the last stream id of the sidecar's final GOAWAY. Such a
//!   stream was opened by the client after the GOAWAY crossed it on the wire and is
//!   ignored (RFC 9113 §6.8); the `h2` crate ignores its HEADERS, DATA and RST_STREAM
//!   but answers a WINDOW_UPDATE on it with a connection-level PROTOCOL_ERROR, which
//!   fails every stream still in flight on that connection. gRPC clients send exactly
//!   that sequence when a GOAWAY crosses a new call.
//!
//! Which streams h2 excludes is decided in the client's byte order, as h2 decides it:
//! h2's graceful shutdown sends GOAWAY(2³¹−1) and a PING (the only PING the sidecar
//! ever sends), and on the client's PING ACK names the highest stream it has seen
//! opened in its final GOAWAY. The filter sees the same frames in the same order, so
//! it knows that id before h2 reads the next frame; a write-side view would learn it
//! too late, after the frames that followed the ACK in the same read.

use bytes::{BufMut, BytesMut};

/// Length of a frame header.
const HEADER_LEN: usize = 9;
/// Frame type GOAWAY.
const GOAWAY: u8 = 0x7;
/// Frame type WINDOW_UPDATE.
const WINDOW_UPDATE: u8 = 0x8;
/// Frame type HEADERS (opens a stream).
const HEADERS: u8 = 0x1;
/// Frame type PING, and its ACK flag.
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
/// The client connection preface (RFC 9113 §3.4), which precedes the client's frames.
pub(crate) const CLIENT_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

/// A frame header being read, possibly across several reads.
#[derive(Debug, Default)]
struct PartialHeader {
    bytes: [u8; HEADER_LEN],
    filled: usize,
}

impl PartialHeader {
    /// Takes what it needs of `input`; returns how much it took, and the header once
    /// complete (then it starts over).
    fn take(&mut self, input: &[u8]) -> (usize, Option<Header>) {
        let n = (HEADER_LEN - self.filled).min(input.len());
        self.bytes[self.filled..self.filled + n].copy_from_slice(&input[..n]);
        self.filled += n;
        if self.filled < HEADER_LEN {
            return (n, None);
        }
        self.filled = 0;
        let [a, b, c, kind, flags, s0, s1, s2, s3] = self.bytes;
        let header = Header {
            len: usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c),
            kind,
            flags,
            stream: u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]),
        };
        (n, Some(header))
    }
}

/// Follows frame boundaries and reports GOAWAY frames' last stream ids.
#[derive(Debug, Default)]
pub(crate) struct GoawayScan {
    header: PartialHeader,
    /// The frame whose payload is passing: its type and the bytes left.
    payload: Option<(u8, usize)>,
    /// The first payload bytes of a GOAWAY: its last stream id.
    last_id: [u8; 4],
    last_id_len: usize,
}

impl GoawayScan {
    /// Takes the next bytes of a stream of frames (the server side); returns the last
    /// stream id of the last GOAWAY frame completed among them, if any.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<u32> {
        let mut last = None;
        while !bytes.is_empty() {
            let Some((kind, left)) = &mut self.payload else {
                let (n, header) = self.header.take(bytes);
                bytes = &bytes[n..];
                if let Some(header) = header.filter(|h| h.len > 0) {
                    self.payload = Some((header.kind, header.len));
                    self.last_id_len = 0;
                }
                continue;
            };
            let n = (*left).min(bytes.len());
            if *kind == GOAWAY {
                let keep = (4 - self.last_id_len).min(n);
                self.last_id[self.last_id_len..self.last_id_len + keep]
                    .copy_from_slice(&bytes[..keep]);
                self.last_id_len += keep;
            }
            *left -= n;
            bytes = &bytes[n..];
            if *left == 0 {
                if *kind == GOAWAY && self.last_id_len == 4 {
                    let [a, b, c, d] = self.last_id;
                    last = Some(u32::from_be_bytes([a & 0x7f, b, c, d]));
                }
                self.payload = None;
            }
        }
        last
    }
}

/// Drops a client's WINDOW_UPDATE frames for streams the sidecar's final GOAWAY
/// excluded (see the module doc); everything else passes unchanged, in order.
#[derive(Debug)]
pub(crate) struct StrayWindowUpdates {
    /// Bytes of the client preface still to pass.
    preface_left: usize,
    header: PartialHeader,
    /// Bytes of the current header already handed on by [`pass`](Self::pass).
    header_passed: usize,
    /// Payload bytes of the current frame still to pass (or to skip, if `dropping`).
    payload_left: usize,
    dropping: bool,
    /// The highest stream the client has opened so far.
    highest_stream: u32,
    /// The last stream id of the final GOAWAY, once the client has acknowledged the
    /// shutdown PING.
    last_stream_id: Option<u32>,
}

impl StrayWindowUpdates {
    /// A filter for a client connection that starts with the preface.
    pub(crate) fn new() -> Self {
        Self {
            preface_left: CLIENT_PREFACE.len(),
            header: PartialHeader::default(),
            header_passed: 0,
            payload_left: 0,
            dropping: false,
            highest_stream: 0,
            last_stream_id: None,
        }
    }

    /// Follows bytes that were handed on as they are: before the sidecar has sent
    /// GOAWAY nothing is dropped, so the reads need no copy.
    pub(crate) fn pass(&mut self, input: &[u8]) {
        self.advance(input, None);
    }

    /// Appends to `out` what of `input` h2 should see, once the sidecar has sent GOAWAY.
    pub(crate) fn filter(&mut self, input: &[u8], out: &mut BytesMut) {
        self.advance(input, Some(out));
    }

    /// One walk over `input`: with `out`, bytes are copied to it except stray frames;
    /// without, they have been handed on already.
    fn advance(&mut self, mut input: &[u8], mut out: Option<&mut BytesMut>) {
        while !input.is_empty() {
            let n = if self.preface_left > 0 {
                let n = self.preface_left.min(input.len());
                emit(&mut out, &input[..n]);
                self.preface_left -= n;
                n
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(input.len());
                if !self.dropping {
                    emit(&mut out, &input[..n]);
                }
                self.payload_left -= n;
                n
            } else {
                let (n, header) = self.header.take(input);
                let Some(header) = header else {
                    if out.is_none() {
                        self.header_passed += n;
                    }
                    input = &input[n..];
                    continue;
                };
                self.dropping = self.header_passed == 0 && self.excludes(header, out.is_some());
                if !self.dropping {
                    emit(&mut out, &self.header.bytes[self.header_passed..]);
                }
                self.header_passed = 0;
                self.payload_left = header.len;
                n
            };
            input = &input[n..];
        }
    }

    /// Notes what `header` tells and whether its frame is one to drop.
    fn excludes(&mut self, header: Header, goaway_sent: bool) -> bool {
        match header.kind {
            HEADERS => self.highest_stream = self.highest_stream.max(header.stream),
            PING if header.flags & ACK != 0 && goaway_sent && self.last_stream_id.is_none() => {
                self.last_stream_id = Some(self.highest_stream);
            }
            WINDOW_UPDATE => {
                return header.stream != 0
                    && self.last_stream_id.is_some_and(|last| header.stream > last);
            }
            _ => {}
        }
        false
    }
}

/// Copies `bytes` to the filter's output, if filtering.
fn emit(out: &mut Option<&mut BytesMut>, bytes: &[u8]) {
    if let Some(out) = out {
        out.put_slice(bytes);
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
            let mut scan = GoawayScan::default();
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

    fn ping_ack() -> Vec<u8> {
        let mut ack = frame(PING, 0, &[9; 8]);
        ack[4] = ACK;
        ack
    }

    #[test]
    fn only_window_updates_for_streams_opened_after_the_shutdown_ping_ack_are_dropped() {
        let mut input = CLIENT_PREFACE.to_vec();
        input.extend(frame(0x4, 0, &[0; 6]));
        input.extend(frame(HEADERS, 1, &[0x82; 20]));
        input.extend(frame(HEADERS, 3, &[0x82; 20]));
        input.extend(frame(WINDOW_UPDATE, 3, &[0, 0, 0, 5]));
        input.extend(ping_ack());
        let mut expected = input.clone();
        let after = frame(HEADERS, 5, &[0x82; 20]);
        input.extend(&after);
        expected.extend(&after);
        input.extend(frame(WINDOW_UPDATE, 5, &[0, 0, 0, 5]));
        let kept = [
            frame(WINDOW_UPDATE, 3, &[0, 0, 0, 7]),
            frame(WINDOW_UPDATE, 0, &[0, 0, 0, 5]),
            frame(0x0, 5, &[1; 10]),
        ]
        .concat();
        input.extend(&kept);
        expected.extend(&kept);
        for chunk in [1, 3, 9, 13, 50, input.len()] {
            let mut filter = StrayWindowUpdates::new();
            let mut out = BytesMut::new();
            for piece in input.chunks(chunk) {
                filter.filter(piece, &mut out);
            }
            assert_eq!(out, expected, "chunks of {chunk}");
        }
        // Without a GOAWAY sent, a PING ACK means nothing: all passes.
        let mut filter = StrayWindowUpdates::new();
        filter.pass(&input);
        let mut out = BytesMut::new();
        filter.filter(&frame(WINDOW_UPDATE, 5, &[0, 0, 0, 1]), &mut out);
        assert_eq!(out.len(), 13);
    }

    #[test]
    fn bytes_passed_before_the_goaway_are_not_repeated() {
        let mut input = CLIENT_PREFACE.to_vec();
        input.extend(frame(0x4, 0, &[0; 6]));
        input.extend(frame(HEADERS, 1, &[0x82; 20]));
        let split = input.len() + 4; // the GOAWAY goes out mid-header
        input.extend(frame(WINDOW_UPDATE, 1, &[0, 0, 0, 1]));
        input.extend(ping_ack());
        let mut expected = input.clone();
        input.extend(frame(WINDOW_UPDATE, 3, &[0, 0, 0, 1]));
        let ping = frame(PING, 0, &[1; 8]);
        input.extend(&ping);
        expected.extend(&ping);
        for chunk in [1, 4, 7, 100] {
            let mut filter = StrayWindowUpdates::new();
            let mut out = BytesMut::new();
            out.put_slice(&input[..split]);
            filter.pass(&input[..split]);
            for piece in input[split..].chunks(chunk) {
                filter.filter(piece, &mut out);
            }
            assert_eq!(out, expected, "chunks of {chunk}");
        }
    }
}
