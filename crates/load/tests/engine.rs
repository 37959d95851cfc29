//! The engine's promises, held against a real server: the rate is kept, every
//! scheduled request gets exactly one record, and a stop mid-run loses none.

use std::sync::Arc;
use std::time::Duration;

use lameduck_load::{Limit, LoadConfig, Progress, Summary};
use lameduck_test_support::app::{app_config, start_app};

fn config(url: &str, rate: f64, limit: Limit) -> LoadConfig {
    LoadConfig {
        urls: vec![url.parse().expect("url")],
        rate,
        limit,
        method: http::Method::POST,
        body: bytes::Bytes::from_static(b"engine"),
        headers: http::HeaderMap::new(),
        keepalive: true,
        http2: false,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        max_inflight: 1000,
        connections: None,
        grpc: false,
    }
}

#[tokio::test]
async fn four_hundred_requests_at_400_per_second_are_all_recorded_with_their_pod() {
    let app = start_app(app_config());
    let url = format!("http://{}/?wait=0", app.addr);
    let config = config(&url, 400.0, Limit::Requests(400));
    let report = lameduck_load::run(
        &config,
        std::future::pending(),
        Arc::new(Progress::default()),
    )
    .await
    .expect("run");
    assert_eq!(report.records.len(), 400);
    assert!(!report.interrupted);
    let pods: Vec<Option<&str>> = report
        .records
        .iter()
        .map(|r| r.pod().and_then(|i| report.strings.get(i)))
        .collect();
    assert!(pods.iter().all(|p| *p == Some("test-pod")), "{pods:?}");
    let summary = Summary::of(&report);
    assert_eq!((summary.ok, summary.failed), (400, 0));
    let last = report.records.last().expect("records").scheduled_us;
    assert!(
        (997_400..=997_600).contains(&last),
        "request 399 is due at 399/400 s, not {last} µs"
    );
}

#[tokio::test]
async fn a_stop_mid_run_keeps_a_record_for_every_request_scheduled() {
    let app = start_app(app_config());
    let url = format!("http://{}/?wait=0.2", app.addr);
    let config = config(&url, 100.0, Limit::Duration(Duration::from_secs(30)));
    let progress = Arc::new(Progress::default());
    let stop = tokio::time::sleep(Duration::from_millis(500));
    let report = lameduck_load::run(&config, stop, progress.clone())
        .await
        .expect("run");
    assert!(report.interrupted);
    let scheduled = progress
        .scheduled
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(report.records.len() as u64, scheduled);
    assert!(
        (40..=60).contains(&scheduled),
        "{scheduled} in 0.5 s at 100/s"
    );
    assert!(
        report.records.iter().all(|r| r.status() == Some(200)),
        "the requests in flight at the stop were waited for"
    );
}
