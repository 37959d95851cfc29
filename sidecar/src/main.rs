//! `lameduck-sidecar`: the drain proxy (being built under issue 3).

fn main() {
    eprintln!("lameduck-sidecar: not built yet");
    std::process::exit(64);
}
