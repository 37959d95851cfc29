//! Integration tests of the `lameduck` binary: one test binary, one module per area.

/// The Helm chart: lint, golden renders, typed objects, the values schema.
mod chart;
/// The opt-in e2e suite: real rollouts on a real node built from source.
mod e2e;
/// `inject`, `uninject` and `check` as the binary runs them: golden corpus, round trips.
mod inject;
/// The shipped kustomize overlays and component, on typed objects.
mod k8s;
/// `lab`: every scenario on the real binaries, and the verdicts the project exists for.
mod lab;
/// `lab --kubeconfig` and `check --kubeconfig` without a cluster; SARIF output.
mod live;
/// `load`: the real binary against real servers on loopback.
mod load;
/// The dashboard, alerts and PodMonitor, and a real Prometheus watching a rollout.
mod monitoring;
/// Helpers of the opt-in system suite.
mod system;
