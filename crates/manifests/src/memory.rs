//! The sidecar's memory as measured (`benches/proxy-overhead`, docs/design.md): what
//! the injector's default limit is sized from and what `check` holds a limit against.
//! Not a prediction of any one pod's usage: an upper estimate for a traffic shape.

/// Pod template annotation: idle keep-alive client connections the sidecar should
/// hold (ingress controllers, meshes and clients keep pools per pod).
pub const ANNOTATION_EXPECTED_CONNECTIONS: &str = "lameduck.dev/expected-connections";
/// Pod template annotation: requests in flight at once through the sidecar.
pub const ANNOTATION_EXPECTED_IN_FLIGHT: &str = "lameduck.dev/expected-in-flight";

/// Idle keep-alive connections the default limit is sized for.
pub const DEFAULT_EXPECTED_CONNECTIONS: u64 = 10_000;
/// Requests in flight the default limit is sized for.
pub const DEFAULT_EXPECTED_IN_FLIGHT: u64 = 2_000;

/// RSS of an idle sidecar (measured: 6.5 to 7.5 MiB).
pub const BASE_KIB: u64 = 8 * 1024;
/// Per idle keep-alive connection, parked (measured: 3.0 KiB with 10 000 open).
pub const KIB_PER_CONNECTION: u64 = 3;
/// Per request in flight: its client connection's HTTP state and buffers, its
/// connection to the app and that one's (measured: 44 KiB with 2 000 in flight).
pub const KIB_PER_IN_FLIGHT: u64 = 44;
/// The default limit's margin over the estimate.
pub const MARGIN: u64 = 2;

/// The estimated RSS, in KiB, of a sidecar holding `connections` idle connections and
/// `in_flight` requests.
pub fn estimate_kib(connections: u64, in_flight: u64) -> u64 {
    BASE_KIB
        .saturating_add(connections.saturating_mul(KIB_PER_CONNECTION))
        .saturating_add(in_flight.saturating_mul(KIB_PER_IN_FLIGHT))
}

/// A Kubernetes memory quantity (`256Mi`, `1G`, `134217728`, `1.5Gi`, `500e6`) in
/// bytes; `None` when it is not one.
pub fn quantity_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "m" => 1e-3,
        exponent if exponent.starts_with(['e', 'E']) => {
            10f64.powi(exponent[1..].parse::<i32>().ok()?)
        }
        _ => return None,
    };
    let bytes = number * multiplier;
    (bytes.is_finite() && bytes >= 0.0).then(|| bytes.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_holds_the_default_traffic_with_its_margin() {
        let limit = quantity_bytes(crate::inject::DEFAULT_MEMORY_LIMIT).expect("quantity");
        let needed = estimate_kib(DEFAULT_EXPECTED_CONNECTIONS, DEFAULT_EXPECTED_IN_FLIGHT) * 1024;
        assert!(limit >= needed * MARGIN, "{limit} < {MARGIN} x {needed}");
    }

    #[test]
    fn quantities_are_read_as_kubernetes_writes_them() {
        assert_eq!(quantity_bytes("64Mi"), Some(64 << 20));
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("128974848"), Some(128_974_848));
        assert_eq!(quantity_bytes("129M"), Some(129_000_000));
        assert_eq!(quantity_bytes("129e6"), Some(129_000_000));
        assert_eq!(quantity_bytes("12Qi"), None);
        assert_eq!(quantity_bytes("Mi"), None);
    }
}
