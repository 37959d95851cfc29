//! Fuzzes the manifest path end to end: parse, inject, write, uninject, check.
//! Any panic is a bug; errors are the expected answer to bad input.
#![no_main]

use lameduck_manifests::{Mode, Options, check, inject, parse_stream, to_yaml, uninject};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut documents) = parse_stream("fuzz", text) else { return };
    let _ = check(&documents, 10);
    let options = Options {
        mode: if data.len() % 2 == 0 { Mode::Native } else { Mode::Classic },
        drain_token: Some("fuzz-token-0123456789".to_owned()),
        ..Options::default()
    };
    if inject(&mut documents, &options).is_ok() {
        let _ = to_yaml(&documents);
        let _ = uninject(&mut documents);
    }
});
