//! The lab's HTML report: one self-contained file (inline CSS and SVG, no script, no
//! network) with the results table and, per scenario, a timeline of requests by
//! outcome, pod lifecycles, and endpoint and ingress changes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::timeline::{Event, EventKind};
use crate::{Cause, ScenarioResult};

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 20.0;
const BUCKET: f64 = 0.1;
const HISTOGRAM_HEIGHT: f64 = 120.0;
const ROW: f64 = 16.0;

fn color(cause: Option<Cause>) -> &'static str {
    match cause {
        None => "#43a047",
        Some(Cause::PrematureActivation) => "#8e24aa",
        Some(Cause::InflightCut) => "#e53935",
        Some(Cause::StaleUpstream) => "#fb8c00",
        Some(Cause::KeepaliveRace) => "#1e88e5",
        Some(Cause::GraceExpired) => "#212121",
        Some(Cause::Other) => "#9e9e9e",
    }
}

fn label(cause: Option<Cause>) -> &'static str {
    cause.map_or("ok", Cause::as_str)
}

/// Success first, then every cause in report order.
fn outcomes() -> impl Iterator<Item = Option<Cause>> {
    std::iter::once(None).chain(Cause::ALL.into_iter().map(Some))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole report.
pub fn html(results: &[ScenarioResult], timings: &str) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>lameduck lab</title><style>");
    out.push_str("body{font-family:sans-serif;margin:24px;color:#212121}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}svg text{font-size:11px;font-family:sans-serif}.legend span{display:inline-block;margin-right:14px}.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}");
    out.push_str("</style></head><body>\n<h1>lameduck lab</h1>\n");
    let _ = writeln!(out, "<p>{}</p>", escape(timings));
    out.push_str("<table><tr><th>scenario</th><th>requests</th><th>failed</th>");
    for cause in Cause::ALL {
        let _ = write!(out, "<th>{cause}</th>");
    }
    out.push_str("<th>rollout s</th><th>p99 ms</th></tr>\n");
    for r in results {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td>",
            escape(&r.name),
            r.requests,
            r.failed
        );
        for cause in Cause::ALL {
            let _ = write!(
                out,
                "<td>{}</td>",
                r.causes.get(&cause).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            out,
            "<td>{:.1}</td><td>{:.1}</td></tr>",
            r.rollout_seconds, r.p99_ms
        );
    }
    out.push_str("</table>\n<p class=\"legend\">");
    for cause in outcomes() {
        let _ = write!(
            out,
            "<span><i class=\"swatch\" style=\"background:{}\"></i>{}</span>",
            color(cause),
            label(cause)
        );
    }
    out.push_str("<span>pods: <i class=\"swatch\" style=\"background:#bdbdbd\"></i>starting <i class=\"swatch\" style=\"background:#66bb6a\"></i>ready <i class=\"swatch\" style=\"background:#ffb74d\"></i>terminating; red tick: SIGTERM, black: SIGKILL, blue dot: app serving</span></p>\n");
    for r in results {
        let _ = writeln!(out, "<h2>{}</h2>", escape(&r.name));
        if let Some(trace) = &r.trace {
            out.push_str(&scenario_svg(&trace.requests, &trace.events));
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// The geometry of one scenario's drawing.
struct Frame {
    t_max: f64,
    pods: Vec<usize>,
    changes_top: f64,
    pods_top: f64,
    height: f64,
}

impl Frame {
    fn of(requests: &[(f64, Option<Cause>)], events: &[Event]) -> Self {
        let t_max = requests
            .iter()
            .map(|(t, _)| *t)
            .chain(events.iter().map(|e| e.at.as_secs_f64()))
            .fold(1.0_f64, f64::max);
        let mut pods: Vec<usize> = events.iter().map(|e| e.pod).filter(|p| *p > 0).collect();
        pods.sort_unstable();
        pods.dedup();
        let changes_top = HISTOGRAM_HEIGHT + 20.0;
        let pods_top = changes_top + 2.0 * ROW + 10.0;
        let height = pods_top + pods.len() as f64 * ROW + 30.0;
        Self {
            t_max,
            pods,
            changes_top,
            pods_top,
            height,
        }
    }

    /// The x of a time.
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.t_max) * (WIDTH - LEFT - RIGHT)
    }
}

fn scenario_svg(requests: &[(f64, Option<Cause>)], events: &[Event]) -> String {
    let frame = Frame::of(requests, events);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{}\" class=\"timeline\">",
        frame.height
    );
    histogram(&mut svg, &frame, requests);
    changes(&mut svg, &frame, events);
    for (row, pod) in frame.pods.iter().enumerate() {
        pod_row(&mut svg, &frame, events, row, *pod);
    }
    let axis = frame.height - 12.0;
    for second in 0..=(frame.t_max.ceil() as usize) {
        let t = frame.x(second as f64);
        let _ = writeln!(
            svg,
            "<text x=\"{t:.1}\" y=\"{axis:.1}\" text-anchor=\"middle\">{second}s</text>"
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Requests per 100 ms, stacked by outcome.
fn histogram(svg: &mut String, frame: &Frame, requests: &[(f64, Option<Cause>)]) {
    let mut buckets: BTreeMap<usize, BTreeMap<Option<Cause>, u32>> = BTreeMap::new();
    for (t, cause) in requests {
        let bucket = (t / BUCKET) as usize;
        *buckets
            .entry(bucket)
            .or_default()
            .entry(*cause)
            .or_insert(0) += 1;
    }
    let peak = buckets
        .values()
        .map(|b| b.values().sum::<u32>())
        .max()
        .unwrap_or(1)
        .max(1);
    let bar_width = (frame.x(BUCKET) - frame.x(0.0)).max(1.0);
    let _ = writeln!(svg, "<text x=\"4\" y=\"14\">requests / 100 ms</text>");
    let _ = writeln!(svg, "<text x=\"4\" y=\"28\">peak {peak}</text>");
    for (bucket, counts) in &buckets {
        let mut y = HISTOGRAM_HEIGHT;
        for cause in outcomes() {
            let n = counts.get(&cause).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let h = f64::from(n) / f64::from(peak) * (HISTOGRAM_HEIGHT - 10.0);
            y -= h;
            let _ = writeln!(
                svg,
                "<rect class=\"requests\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{bar_width:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {n}</title></rect>",
                frame.x(*bucket as f64 * BUCKET),
                color(cause),
                label(cause)
            );
        }
    }
}

/// Endpoint and ingress changes.
fn changes(svg: &mut String, frame: &Frame, events: &[Event]) {
    for (row, label) in [(0.0, "endpoints"), (1.0, "ingress view")] {
        let y = frame.changes_top + row * ROW;
        let _ = writeln!(svg, "<text x=\"4\" y=\"{:.1}\">{label}</text>", y + 11.0);
        for event in events {
            let pods = match (&event.kind, row == 0.0) {
                (EventKind::Endpoints(p), true) | (EventKind::IngressView(p), false) => p,
                _ => continue,
            };
            let _ = writeln!(
                svg,
                "<line class=\"change\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#546e7a\" stroke-width=\"2\"><title>{3:.2}s: {4} endpoints</title></line>",
                frame.x(event.at.as_secs_f64()),
                y + 2.0,
                y + ROW - 2.0,
                event.at.as_secs_f64(),
                pods.len()
            );
        }
    }
}

/// One pod's lifecycle: starting, ready, terminating; signals and the app's start.
fn pod_row(svg: &mut String, frame: &Frame, events: &[Event], row: usize, pod: usize) {
    let y = frame.pods_top + row as f64 * ROW;
    let when = |what: &dyn Fn(&EventKind) -> bool| {
        events
            .iter()
            .find(|e| e.pod == pod && what(&e.kind))
            .map(|e| e.at.as_secs_f64())
    };
    let created = when(&|k| *k == EventKind::Created).unwrap_or(0.0);
    let ready = when(&|k| *k == EventKind::Ready);
    let deleted = when(&|k| *k == EventKind::Deleted);
    let exited = events
        .iter()
        .filter(|e| e.pod == pod && matches!(e.kind, EventKind::Exited(_)))
        .map(|e| e.at.as_secs_f64())
        .fold(None, |acc: Option<f64>, t| {
            Some(acc.map_or(t, |a| a.max(t)))
        });
    let _ = writeln!(svg, "<text x=\"4\" y=\"{:.1}\">pod {pod}</text>", y + 11.0);
    let end = exited.unwrap_or(frame.t_max);
    let serving_from = ready.unwrap_or(end);
    let serving_to = deleted.unwrap_or(end);
    for (from, to, fill) in [
        (created, serving_from.min(serving_to), "#bdbdbd"),
        (serving_from, serving_to, "#66bb6a"),
        (deleted.unwrap_or(end), end, "#ffb74d"),
    ] {
        if to > from {
            let _ = writeln!(
                svg,
                "<rect class=\"pod\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"/>",
                frame.x(from),
                y + 2.0,
                (frame.x(to) - frame.x(from)).max(1.0),
                ROW - 4.0
            );
        }
    }
    for event in events.iter().filter(|e| e.pod == pod) {
        let t = frame.x(event.at.as_secs_f64());
        match &event.kind {
            EventKind::Sigterm(c) | EventKind::Sigkill(c) => {
                let stroke = if matches!(event.kind, EventKind::Sigterm(_)) {
                    "#c62828"
                } else {
                    "#000"
                };
                let _ = writeln!(
                    svg,
                    "<line x1=\"{t:.1}\" x2=\"{t:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{stroke}\" stroke-width=\"2\"><title>{}</title></line>",
                    y,
                    y + ROW,
                    escape(c)
                );
            }
            EventKind::AppServing => {
                let _ = writeln!(
                    svg,
                    "<circle cx=\"{t:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1565c0\"/>",
                    y + ROW / 2.0
                );
            }
            _ => {}
        }
    }
}
