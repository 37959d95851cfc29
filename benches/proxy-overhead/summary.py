"""Medians and ratios of a proxy-overhead run (the CSV files in OUT_DIR), as Markdown.

    python3 benches/proxy-overhead/summary.py OUT_DIR
"""
import csv
import os
import statistics
import sys

out = sys.argv[1]


def rows(name):
    path = os.path.join(out, name)
    return list(csv.DictReader(open(path))) if os.path.exists(path) else []


def median(rs, key, **match):
    values = [float(r[key]) for r in rs if all(r[k] == v for k, v in match.items())]
    return statistics.median(values) if values else float("nan")


lines = ["# Proxy overhead (medians over rounds; ratios are within this run)"]

saturated = rows("saturated.csv")
if saturated:
    lines += ["", "## Saturated keep-alive POST (wrk) and one sequential connection", "",
              "| target | req/s | vs direct | vs nginx | vs haproxy | p50 µs seq | p99 µs seq | added p50 µs | added p99 µs |",
              "|---|---|---|---|---|---|---|---|---|"]
    rps = {t: median(saturated, "requests_per_second", target=t, mode="saturated")
           for t in ["direct", "sidecar", "nginx", "haproxy"]}
    base50 = median(saturated, "p50_us", target="direct", mode="sequential")
    base99 = median(saturated, "p99_us", target="direct", mode="sequential")
    for t, r in rps.items():
        p50 = median(saturated, "p50_us", target=t, mode="sequential")
        p99 = median(saturated, "p99_us", target=t, mode="sequential")
        lines.append(f"| {t} | {r:.0f} | {r / rps['direct']:.2f} | {r / rps['nginx']:.2f} | "
                     f"{r / rps['haproxy']:.2f} | {p50:.0f} | {p99:.0f} | {p50 - base50:.0f} | {p99 - base99:.0f} |")

rate = rows("rate.csv")
if rate:
    lines += ["", "## Fixed rate, open model (`lameduck load`): latency from send, and CPU of the process",
              "", "| rate/s | target | achieved | failed | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | added p99.9 | CPU s/s | CPU vs nginx |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted({row["rate"] for row in rate}, key=int):
        base = {k: median(rate, k, target="direct", rate=r) for k in ["p50_ms", "p99_ms", "p999_ms"]}
        nginx_cpu = median(rate, "cpu_per_second", target="nginx", rate=r)
        for t in ["direct", "sidecar", "nginx", "haproxy"]:
            m = {k: median(rate, k, target=t, rate=r)
                 for k in ["achieved", "failed", "p50_ms", "p99_ms", "p999_ms", "cpu_per_second"]}
            added = [m[k] - base[k] for k in ["p50_ms", "p99_ms", "p999_ms"]]
            lines.append(f"| {r} | {t} | {m['achieved']:.0f} | {m['failed']:.0f} | {m['p50_ms']:.3f} | "
                         f"{m['p99_ms']:.3f} | {m['p999_ms']:.3f} | {added[0]:.3f} | {added[1]:.3f} | "
                         f"{added[2]:.3f} | {m['cpu_per_second']:.3f} | {m['cpu_per_second'] / nginx_cpu:.2f} |")

h2 = rows("h2.csv")
if h2:
    lines += ["", "## HTTP/2 prior knowledge (h2load, 10 connections x 10 streams)", "",
              "| target | req/s | vs nginx | failed (median) |", "|---|---|---|---|"]
    nginx = median(h2, "requests_per_second", target="nginx")
    for t in ["sidecar", "nginx", "haproxy"]:
        r = median(h2, "requests_per_second", target=t)
        lines.append(f"| {t} | {r:.0f} | {r / nginx:.2f} | {median(h2, 'failed', target=t):.0f} |")

memory = rows("memory.csv")
if memory:
    lines += ["", "## RSS with idle keep-alive connections (KiB)", "",
              "| target | connections | RSS idle | RSS open | KiB per connection | RSS after close |",
              "|---|---|---|---|---|---|"]
    for t in ["sidecar", "nginx", "haproxy"]:
        closed = next((r["rss_closed_kib"] for r in memory if r["target"] == t and r["connections"] == "closed"), "")
        for r in memory:
            if r["target"] == t and r["connections"] != "closed":
                lines.append(f"| {t} | {r['connections']} | {r['rss_idle_kib']} | {r['rss_open_kib']} | "
                             f"{r['kib_per_connection']} | {closed} |")

in_flight = rows("in-flight.csv")
if in_flight:
    lines += ["", "## Requests in flight on top of the idle connections (KiB)", "",
              "| target | idle connections | in flight | RSS before | RSS peak | KiB per request | answered 200 |",
              "|---|---|---|---|---|---|---|"]
    for r in in_flight:
        lines.append(f"| {r['target']} | {r['idle_connections']} | {r['in_flight']} | {r['rss_before_kib']} | "
                     f"{r['rss_peak_kib']} | {r['kib_per_request']} | {r['answered_200']} |")

streaming = rows("streaming.csv")
if streaming:
    lines += ["", "## Streaming through the sidecar (KiB)", "",
              "| direction | bytes | seconds | RSS before | RSS max | growth | RSS after |", "|---|---|---|---|---|---|---|"]
    for r in streaming:
        growth = int(r["rss_max_kib"]) - int(r["rss_before_kib"])
        lines.append(f"| {r['direction']} | {r['bytes']} | {r['seconds']} | {r['rss_before_kib']} | "
                     f"{r['rss_max_kib']} | {growth} | {r['rss_after_kib']} |")

print("\n".join(lines))
