//! A real cluster's rollout fed to the lab's attribution: the Pods, EndpointSlices and
//! Events that watches received (each stamped on arrival) and the ingress's access
//! log become the lab's timeline and ingress entries, so a failed request on a real
//! cluster gets its cause from the same pure function as in the lab.
//!
//! What a real cluster shows and how it maps:
//! - a pod's first sighting is `Created`, its `Ready` condition `Ready`/`NotReady`,
//!   its `deletionTimestamp` `Deleted`, a container's terminated state `Exited`
//!   (exit code 137 is `Sigkill`, at the end of the grace period);
//! - `Sigterm` for an app container is the deletion plus its preStop hook's time
//!   (none, or a `sleep`): the kubelet starts stopping it as it sees the deletion,
//!   which the watch may see up to a few hundred milliseconds later (measured: cuts
//!   ended up to 207 ms before the watched deletion), so the deletion request's own
//!   time (`deletionTimestamp` minus the grace period) is taken, bounded to a second
//!   before the watch; its `Killing` event arrives later still.
//!   Sidecars (init containers) stop after the app: theirs is the `Killing` event plus
//!   the hook. Hooks of unknown duration (HTTP, exec other than `sleep`) give none;
//! - the app serves (`AppServing`) from its first answer below 500 in the access log;
//! - the ingress's try is what its access log says: the pod address and the pod's
//!   status, or no response (sent, and failed), or a connect that timed out.
//!
//! Without an access log (a cluster whose entry point is not ours to read), each
//! request's own [`Response`] stands in: the pod that answered is its `x-pod` header,
//! and a failure no pod answered is put on the pod whose stop explains it, the one
//! stopped last before the request ended ([`Observed::inferred_cause`]).
//!
//! Not for: the watching itself (the caller's, with any client), or access logs other
//! than Traefik's JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::attribution::{Cause, attribute};
use crate::ingress::{Entry, Try};
use crate::timeline::{Event, EventKind, first};
use crate::{ScenarioResult, Trace};

/// One object a watch received, and when.
#[derive(Debug, Clone)]
pub struct Watched {
    /// When it arrived.
    pub at: SystemTime,
    /// The object (a Pod, an EndpointSlice or an Event, as JSON).
    pub object: Value,
}

/// One request in the ingress's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// When the ingress received it.
    pub start: SystemTime,
    /// Its load sequence header (`x-lameduck-seq`): the load's request number.
    pub seq: Option<u64>,
    /// The pod address it was sent to (none: no endpoint was picked).
    pub backend: Option<SocketAddr>,
    /// What came back from the pod.
    pub upstream: Upstream,
}

/// What the ingress got from the pod it sent a request to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// A response with this status.
    Answered(u16),
    /// No response: the connection was refused or broke (the ingress answered 502).
    Failed,
    /// The connect timed out: nothing listened at the address any more (504).
    ConnectTimedOut,
}

impl Upstream {
    /// From Traefik's `OriginStatus` and `OriginContentSize`: Traefik logs its own
    /// 502 and 504 as the origin's, with its own bodies (`Bad Gateway`, `Gateway
    /// Timeout`), so those exact sizes mean the pod sent nothing.
    fn from_traefik(status: u16, size: u64) -> Self {
        match (status, size) {
            (0, _) => Upstream::Failed,
            (502, 11) => Upstream::Failed,
            (504, 15) => Upstream::ConnectTimedOut,
            (status, _) => Upstream::Answered(status),
        }
    }
}

impl Access {
    /// One line of Traefik's JSON access log (`StartUTC`, `ServiceAddr`,
    /// `OriginStatus`, `OriginContentSize`, `request_X-Lameduck-Seq`); none for a
    /// line that is not one.
    pub fn from_traefik(line: &str) -> Option<Self> {
        let line: Value = serde_json::from_str(line).ok()?;
        let start = humantime::parse_rfc3339(line["StartUTC"].as_str()?).ok()?;
        let seq = line["request_X-Lameduck-Seq"]
            .as_str()
            .and_then(|s| s.parse().ok());
        let backend = line["ServiceAddr"].as_str().and_then(|a| a.parse().ok());
        let status = line["OriginStatus"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(0);
        let size = line["OriginContentSize"].as_u64().unwrap_or(0);
        Some(Self {
            start,
            seq,
            backend,
            upstream: Upstream::from_traefik(status, size),
        })
    }
}

/// A request the load counted as failed: its number and when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The load's request number.
    pub seq: u64,
    /// When it ended (on the wall clock, see [`load_epoch`]).
    pub done: SystemTime,
}

/// One request as the load saw it, for a run without the entry point's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// When it was sent (or due, when it never was).
    pub sent: SystemTime,
    /// When it ended.
    pub done: SystemTime,
    /// Its status (none: no response).
    pub status: Option<u16>,
    /// The pod whose app answered (its `x-pod` header), if one did.
    pub pod: Option<String>,
    /// Whether it succeeded.
    pub ok: bool,
}

/// How long the ingress took to follow one pod's endpoint changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointLag {
    /// The pod.
    pub pod: String,
    /// From the EndpointSlice listing the pod ready to the ingress's first request to
    /// it (none: the pod was an endpoint before the watch, or got no request).
    pub added: Option<Duration>,
    /// From the EndpointSlice dropping the pod (no longer ready) to the ingress's last
    /// request to it, zero when it had stopped before (none: not dropped while watched).
    pub removed: Option<Duration>,
}

/// What a pod looked like when last seen.
#[derive(Debug, Default)]
struct PodState {
    ready: bool,
    deleted: bool,
    terminated: BTreeSet<String>,
    /// Per container: the preStop hook's known duration (zero: no hook), and whether
    /// it is an app container (not an init container); absent: a hook of unknown
    /// duration.
    pre_stop: BTreeMap<String, (Duration, bool)>,
    stopping: BTreeSet<String>,
}

/// What the watches saw, on one clock that starts at `origin`.
#[derive(Debug)]
pub struct Observed {
    origin: SystemTime,
    events: Vec<Event>,
    /// Pod names; a pod's number is its index plus one (0 is the cluster).
    names: Vec<String>,
    ips: BTreeMap<IpAddr, usize>,
}

impl Observed {
    /// The timeline of `pods`, `slices` and (kubelet) `events` as watched, and of the
    /// ingress's `accesses`, from `origin` on.
    pub fn new(
        origin: SystemTime,
        pods: &[Watched],
        slices: &[Watched],
        events: &[Watched],
        accesses: &[Access],
    ) -> Self {
        let mut observed = Self {
            origin,
            events: Vec::new(),
            names: Vec::new(),
            ips: BTreeMap::new(),
        };
        let mut states: BTreeMap<usize, PodState> = BTreeMap::new();
        for watched in pods {
            observed.pod(watched, &mut states);
        }
        for watched in events {
            observed.kubelet_event(watched, &mut states);
        }
        for watched in slices {
            observed.slice(watched);
        }
        observed.serving(accesses);
        observed.events.sort_by_key(|e| e.at);
        observed
    }

    /// The timeline of `pods`, `slices` and (kubelet) `events` as watched, with each
    /// app serving from its first answer below 500 among `responses`.
    pub fn from_responses(
        origin: SystemTime,
        pods: &[Watched],
        slices: &[Watched],
        events: &[Watched],
        responses: &[Response],
    ) -> Self {
        let mut observed = Self::new(origin, pods, slices, events, &[]);
        let answered: Vec<(usize, SystemTime)> = responses
            .iter()
            .filter(|r| r.status.is_some_and(|s| (100..500).contains(&s)))
            .filter_map(|r| Some((observed.id(r.pod.as_deref()?)?, r.sent)))
            .collect();
        observed.serving_from(answered);
        observed.events.sort_by_key(|e| e.at);
        observed
    }

    /// Every event, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The name of pod number `pod`.
    pub fn pod_name(&self, pod: usize) -> Option<&str> {
        pod.checked_sub(1)
            .and_then(|i| self.names.get(i))
            .map(String::as_str)
    }

    /// What the ingress did with `access`, as the lab records it.
    pub fn entry(&self, access: &Access) -> Entry {
        let pod = access.backend.and_then(|b| self.ips.get(&b.ip()).copied());
        let tries = match (pod, access.upstream) {
            (None, _) => Vec::new(),
            (Some(pod), Upstream::Answered(status)) => vec![Try::Answered { pod, status }],
            (Some(pod), Upstream::Failed) => vec![Try::SentAndFailed { pod, reused: false }],
            (Some(pod), Upstream::ConnectTimedOut) => vec![Try::ConnectFailed { pod }],
        };
        Entry {
            at: self.since_origin(access.start),
            tries,
        }
    }

    /// The cause of `failure`, with its line in the access log if it has one.
    pub fn cause(&self, failure: &Failure, access: Option<&Access>) -> Cause {
        let entry = access.map(|a| self.entry(a));
        attribute(
            self.since_origin(failure.done),
            entry.as_ref(),
            &self.events,
        )
    }

    /// The causes of `failures`, counted, each matched to its access-log line by its
    /// sequence number.
    pub fn causes(&self, failures: &[Failure], accesses: &[Access]) -> BTreeMap<Cause, u64> {
        let by_seq: BTreeMap<u64, &Access> = accesses
            .iter()
            .filter_map(|a| a.seq.map(|s| (s, a)))
            .collect();
        let mut counts = BTreeMap::new();
        for failure in failures {
            let cause = self.cause(failure, by_seq.get(&failure.seq).copied());
            *counts.entry(cause).or_insert(0) += 1;
        }
        counts
    }

    /// The cause of a failed `response`. Answered by a pod (`x-pod`): that pod's try.
    /// Answered by nobody or by the entry point itself: every pod is tried as where it
    /// went, and of the pods whose timeline explains the failure the one whose stop
    /// (deletion, SIGTERM, SIGKILL) came last before the request ended is taken.
    pub fn inferred_cause(&self, response: &Response) -> Cause {
        let at = self.since_origin(response.sent);
        let done = self.since_origin(response.done);
        if let Some(pod) = response.pod.as_deref().and_then(|name| self.id(name)) {
            let status = response.status.unwrap_or(0);
            let entry = Entry {
                at,
                tries: vec![Try::Answered { pod, status }],
            };
            return attribute(done, Some(&entry), &self.events);
        }
        let stopped = |k: &EventKind| {
            matches!(
                k,
                EventKind::Deleted | EventKind::Sigterm(_) | EventKind::Sigkill(_)
            )
        };
        (1..=self.names.len())
            .filter_map(|pod| {
                let tried = match response.status {
                    Some(504) => Try::ConnectFailed { pod },
                    _ => Try::SentAndFailed { pod, reused: false },
                };
                let entry = Entry {
                    at,
                    tries: vec![tried],
                };
                let cause = attribute(done, Some(&entry), &self.events);
                let stop = self
                    .events
                    .iter()
                    .filter(|e| e.pod == pod && e.at <= done && stopped(&e.kind))
                    .map(|e| e.at)
                    .max()?;
                (cause != Cause::Other).then_some((stop, cause))
            })
            .max_by_key(|(stop, _)| *stop)
            .map_or(Cause::Other, |(_, cause)| cause)
    }

    /// A scenario's outcome from its `responses`: every failure given its inferred
    /// cause, and the timeline kept for the report.
    pub fn result(
        &self,
        name: &str,
        responses: &[Response],
        rollout_seconds: f64,
        p99_ms: f64,
    ) -> ScenarioResult {
        let mut causes: BTreeMap<Cause, u64> = Cause::ALL.iter().map(|c| (*c, 0)).collect();
        let mut requests = Vec::with_capacity(responses.len());
        for response in responses {
            let sent = self.since_origin(response.sent).as_secs_f64();
            if response.ok {
                requests.push((sent, None));
                continue;
            }
            let cause = self.inferred_cause(response);
            *causes.entry(cause).or_insert(0) += 1;
            requests.push((sent, Some(cause)));
        }
        ScenarioResult {
            name: name.to_owned(),
            requests: responses.len() as u64,
            failed: causes.values().sum(),
            causes,
            rollout_seconds,
            p99_ms,
            trace: Some(Trace {
                requests,
                events: self.events.clone(),
            }),
        }
    }

    /// Per pod whose endpoint changed while watched, how long the ingress took to
    /// follow.
    pub fn endpoint_lags(&self, accesses: &[Access]) -> Vec<EndpointLag> {
        let slices: Vec<(Duration, &Vec<usize>)> = self
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Endpoints(ready) => Some((e.at, ready)),
                _ => None,
            })
            .collect();
        let mut sent: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
        for access in accesses {
            if let Some(pod) = access.backend.and_then(|b| self.ips.get(&b.ip())) {
                sent.entry(*pod)
                    .or_default()
                    .push(self.since_origin(access.start));
            }
        }
        let initial = slices.first().map(|(_, ready)| *ready);
        (1..=self.names.len())
            .filter_map(|pod| {
                let sent = sent.get(&pod).map(Vec::as_slice).unwrap_or_default();
                let added = slices
                    .iter()
                    .find(|(_, ready)| ready.contains(&pod))
                    .filter(|_| initial.is_some_and(|i| !i.contains(&pod)))
                    .and_then(|(at, _)| {
                        let first = sent.iter().filter(|s| *s >= at).min()?;
                        Some(first.saturating_sub(*at))
                    });
                let deleted = first(&self.events, pod, |k| *k == EventKind::Deleted);
                let removed = deleted.and_then(|deleted| {
                    let (at, _) = slices
                        .iter()
                        .find(|(at, ready)| *at >= deleted && !ready.contains(&pod))?;
                    let last = sent.iter().max().copied().unwrap_or_default();
                    Some(last.saturating_sub(*at))
                });
                (added.is_some() || removed.is_some()).then(|| EndpointLag {
                    pod: self.names[pod - 1].clone(),
                    added,
                    removed,
                })
            })
            .collect()
    }

    fn since_origin(&self, at: SystemTime) -> Duration {
        at.duration_since(self.origin).unwrap_or_default()
    }

    fn push(&mut self, at: SystemTime, pod: usize, kind: EventKind) {
        let at = self.since_origin(at);
        self.events.push(Event { at, pod, kind });
    }

    fn id(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name).map(|i| i + 1)
    }

    fn pod(&mut self, watched: &Watched, states: &mut BTreeMap<usize, PodState>) {
        let pod = &watched.object;
        let Some(name) = pod["metadata"]["name"].as_str() else {
            return;
        };
        let id = match self.id(name) {
            Some(id) => id,
            None => {
                self.names.push(name.to_owned());
                let id = self.names.len();
                self.push(watched.at, id, EventKind::Created);
                let state = states.entry(id).or_default();
                state.pre_stop = pre_stop_hooks(pod);
                id
            }
        };
        if let Some(ip) = pod["status"]["podIP"].as_str().and_then(|s| s.parse().ok()) {
            self.ips.insert(ip, id);
        }
        let state = states.entry(id).or_default();
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let mut found = Vec::new();
        if ready != state.ready {
            state.ready = ready;
            found.push((
                watched.at,
                if ready {
                    EventKind::Ready
                } else {
                    EventKind::NotReady
                },
            ));
        }
        let deadline = pod["metadata"]["deletionTimestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        if let Some(deadline) = deadline
            && !state.deleted
        {
            state.deleted = true;
            found.push((watched.at, EventKind::Deleted));
            let stopping = stop_started(pod, deadline, watched.at);
            for (container, (hook, app)) in &state.pre_stop {
                if *app && state.stopping.insert(container.clone()) {
                    found.push((stopping + *hook, EventKind::Sigterm(container.clone())));
                }
            }
        }
        for (container, exit_code) in terminated(pod) {
            if state.terminated.insert(container.clone()) {
                if exit_code == 137 {
                    let killed = deadline.unwrap_or(watched.at);
                    found.push((killed, EventKind::Sigkill(container.clone())));
                }
                found.push((watched.at, EventKind::Exited(container)));
            }
        }
        for (at, kind) in found {
            self.push(at, id, kind);
        }
    }

    fn kubelet_event(&mut self, watched: &Watched, states: &mut BTreeMap<usize, PodState>) {
        let event = &watched.object;
        if event["reason"] != "Killing" || event["involvedObject"]["kind"] != "Pod" {
            return;
        }
        let Some(id) = event["involvedObject"]["name"]
            .as_str()
            .and_then(|n| self.id(n))
        else {
            return;
        };
        let Some(container) = event["involvedObject"]["fieldPath"]
            .as_str()
            .and_then(|f| f.split_once('{'))
            .map(|(_, rest)| rest.trim_end_matches('}').to_owned())
        else {
            return;
        };
        let state = states.entry(id).or_default();
        if !state.stopping.insert(container.clone()) {
            return;
        }
        if let Some((hook, _)) = state.pre_stop.get(&container).copied() {
            self.push(watched.at + hook, id, EventKind::Sigterm(container));
        }
    }

    fn slice(&mut self, watched: &Watched) {
        let mut ready: Vec<usize> = watched.object["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["conditions"]["ready"] != false)
            .filter_map(|e| e["targetRef"]["name"].as_str())
            .filter_map(|name| self.id(name))
            .collect();
        ready.sort_unstable();
        ready.dedup();
        self.push(watched.at, 0, EventKind::Endpoints(ready));
    }

    fn serving(&mut self, accesses: &[Access]) {
        let answered: Vec<(usize, SystemTime)> = accesses
            .iter()
            .filter(|a| matches!(a.upstream, Upstream::Answered(100..500)))
            .filter_map(|a| Some((*self.ips.get(&a.backend?.ip())?, a.start)))
            .collect();
        self.serving_from(answered);
    }

    /// Each pod's app serves from the first of its `answered` requests.
    fn serving_from(&mut self, answered: Vec<(usize, SystemTime)>) {
        let mut serving: BTreeMap<usize, SystemTime> = BTreeMap::new();
        for (pod, start) in answered {
            let at = serving.entry(pod).or_insert(start);
            *at = (*at).min(start);
        }
        for (pod, at) in serving {
            self.push(at, pod, EventKind::AppServing);
        }
    }
}

/// The load's start on the wall clock: the median of the ingress's receive time
/// minus the load's send time (`sent`: seconds since the load started, per request
/// number) over the requests in both.
pub fn load_epoch(sent: &BTreeMap<u64, Duration>, accesses: &[Access]) -> Option<SystemTime> {
    let mut epochs: Vec<SystemTime> = accesses
        .iter()
        .filter_map(|a| a.start.checked_sub(*sent.get(&a.seq?)?))
        .collect();
    epochs.sort_unstable();
    epochs.get(epochs.len() / 2).copied()
}

/// Per container of `pod`, its preStop hook's duration when known (zero without a
/// hook, the seconds of a `sleep` hook or of an exec `sleep N`) and whether it is an
/// app container; hooks of unknown duration are left out.
fn pre_stop_hooks(pod: &Value) -> BTreeMap<String, (Duration, bool)> {
    let mut hooks = BTreeMap::new();
    for (list, app) in [("containers", true), ("initContainers", false)] {
        for container in pod["spec"][list].as_array().into_iter().flatten() {
            let Some(name) = container["name"].as_str() else {
                continue;
            };
            let hook = &container["lifecycle"]["preStop"];
            let known = if hook.is_null() {
                Some(Duration::ZERO)
            } else if let Some(seconds) = hook["sleep"]["seconds"].as_u64() {
                Some(Duration::from_secs(seconds))
            } else {
                exec_sleep(&hook["exec"]["command"])
            };
            if let Some(known) = known {
                hooks.insert(name.to_owned(), (known, app));
            }
        }
    }
    hooks
}

/// How late a watch may see a pod's deletion after the kubelet acted on it.
const WATCH_LAG: Duration = Duration::from_secs(1);

/// When the kubelet started stopping a pod whose deletion a watch saw at `seen`: the
/// deletion request's time (`deletionTimestamp` minus the grace period, whole
/// seconds, so never late), but no earlier than [`WATCH_LAG`] before `seen`.
fn stop_started(pod: &Value, deadline: SystemTime, seen: SystemTime) -> SystemTime {
    let grace = pod["metadata"]["deletionGracePeriodSeconds"]
        .as_u64()
        .map_or(Duration::ZERO, Duration::from_secs);
    let requested = deadline.checked_sub(grace).unwrap_or(seen);
    let earliest = seen.checked_sub(WATCH_LAG).unwrap_or(seen);
    requested.clamp(earliest, seen)
}

/// The seconds of an exec hook that is `sleep N` (any path to sleep).
fn exec_sleep(command: &Value) -> Option<Duration> {
    let command = command.as_array()?;
    let (program, seconds) = match command.as_slice() {
        [program, seconds] => (program.as_str()?, seconds.as_str()?),
        _ => return None,
    };
    if program.rsplit('/').next() != Some("sleep") {
        return None;
    }
    seconds.parse::<f64>().ok().map(Duration::from_secs_f64)
}

/// The containers of `pod` (init containers too) in a terminated state, with their
/// exit codes.
fn terminated(pod: &Value) -> Vec<(String, i64)> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|list| pod["status"][*list].as_array().into_iter().flatten())
        .filter_map(|status| {
            let terminated = &status["state"]["terminated"];
            let code = terminated["exitCode"].as_i64()?;
            Some((status["name"].as_str()?.to_owned(), code))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(ms)
    }

    fn watched(ms: u64, object: Value) -> Watched {
        Watched { at: at(ms), object }
    }

    fn pod(name: &str, ip: &str, ready: bool) -> Value {
        json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app"}]},
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]
            }
        })
    }

    fn deleted(mut pod: Value, exit_code: Option<i64>) -> Value {
        pod["metadata"]["deletionTimestamp"] = json!("2027-01-15T08:00:30Z");
        if let Some(code) = exit_code {
            pod["status"]["containerStatuses"] =
                json!([{"name": "app", "state": {"terminated": {"exitCode": code}}}]);
        }
        pod
    }

    fn access(ms: u64, seq: u64, ip: &str, status: u16) -> Access {
        Access {
            start: at(ms),
            seq: Some(seq),
            backend: Some(format!("{ip}:8080").parse().expect("address")),
            upstream: match status {
                0 => Upstream::Failed,
                504 => Upstream::ConnectTimedOut,
                status => Upstream::Answered(status),
            },
        }
    }

    fn killing(ms: u64, pod: &str) -> Watched {
        watched(
            ms,
            json!({"reason": "Killing",
                   "involvedObject": {"kind": "Pod", "name": pod, "fieldPath": "spec.containers{app}"}}),
        )
    }

    fn slice(ms: u64, ready: &[(&str, bool)]) -> Watched {
        let endpoints: Vec<Value> = ready
            .iter()
            .map(|(name, ready)| {
                json!({"targetRef": {"kind": "Pod", "name": name},
                                         "conditions": {"ready": ready}})
            })
            .collect();
        watched(ms, json!({ "endpoints": endpoints }))
    }

    /// Pod `old` (10.0.0.1) is deleted at 1000 ms, its app SIGTERMed at once (no
    /// hook; the kubelet's event says so at 1010) and gone by 1500; `new` (10.0.0.2) is created at 500 and first answers
    /// 200 at 800.
    fn rollout() -> (Vec<Watched>, Vec<Watched>, Vec<Watched>, Vec<Access>) {
        let pods = vec![
            watched(0, pod("old", "10.0.0.1", true)),
            watched(500, pod("new", "10.0.0.2", false)),
            watched(700, pod("new", "10.0.0.2", true)),
            watched(1000, deleted(pod("old", "10.0.0.1", false), None)),
            watched(1500, deleted(pod("old", "10.0.0.1", false), Some(0))),
        ];
        let events = vec![killing(1010, "old")];
        let slices = vec![
            slice(0, &[("old", true)]),
            slice(710, &[("old", true), ("new", true)]),
            slice(1020, &[("old", false), ("new", true)]),
        ];
        let accesses = vec![
            access(100, 1, "10.0.0.1", 200),
            access(600, 2, "10.0.0.2", 500),
            access(800, 3, "10.0.0.2", 200),
            access(900, 4, "10.0.0.1", 0),
            access(1200, 5, "10.0.0.1", 0),
            access(1300, 6, "10.0.0.1", 504),
        ];
        (pods, slices, events, accesses)
    }

    #[test]
    fn the_kubelet_acts_on_a_deletion_before_the_watch_sees_it() {
        // Deleted at 1000 ms (08:00:31Z minus 30 s of grace), seen by the watch at
        // 1700 ms: a request sent at 900 and cut at 1100 is an in-flight cut.
        let mut late = deleted(pod("old", "10.0.0.1", false), None);
        late["metadata"]["deletionTimestamp"] = json!("2027-01-15T08:00:31Z");
        late["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        let pods = vec![
            watched(0, pod("old", "10.0.0.1", true)),
            watched(1700, late),
        ];
        let accesses = vec![
            access(100, 1, "10.0.0.1", 200),
            access(900, 2, "10.0.0.1", 0),
        ];
        let observed = Observed::new(at(0), &pods, &[], &[], &accesses);
        let causes = observed.causes(&[failure(2, 1100)], &accesses);
        assert_eq!(causes, BTreeMap::from([(Cause::InflightCut, 1)]));
        // Never earlier than a second before the watch: a stale deletionTimestamp
        // (seen much later) does not move SIGTERM back further.
        let mut stale = deleted(pod("old", "10.0.0.1", false), None);
        stale["metadata"]["deletionTimestamp"] = json!("2027-01-15T08:00:30Z");
        stale["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        let pods = vec![
            watched(0, pod("old", "10.0.0.1", true)),
            watched(5000, stale),
        ];
        let observed = Observed::new(at(0), &pods, &[], &[], &accesses);
        let causes = observed.causes(&[failure(2, 1100)], &accesses);
        assert_eq!(causes, BTreeMap::from([(Cause::Other, 1)]));
    }

    fn observed() -> (Observed, Vec<Access>) {
        let (pods, slices, events, accesses) = rollout();
        (
            Observed::new(at(0), &pods, &slices, &events, &accesses),
            accesses,
        )
    }

    fn failure(seq: u64, ms: u64) -> Failure {
        Failure { seq, done: at(ms) }
    }

    #[test]
    fn watched_objects_become_the_labs_timeline() {
        let (observed, _) = observed();
        let kinds: Vec<(u128, usize, EventKind)> = observed
            .events()
            .iter()
            .map(|e| (e.at.as_millis(), e.pod, e.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, 1, EventKind::Created),
                (0, 1, EventKind::Ready),
                (0, 0, EventKind::Endpoints(vec![1])),
                (100, 1, EventKind::AppServing),
                (500, 2, EventKind::Created),
                (700, 2, EventKind::Ready),
                (710, 0, EventKind::Endpoints(vec![1, 2])),
                (800, 2, EventKind::AppServing),
                (1000, 1, EventKind::NotReady),
                (1000, 1, EventKind::Deleted),
                (1000, 1, EventKind::Sigterm("app".into())),
                (1020, 0, EventKind::Endpoints(vec![2])),
                (1500, 1, EventKind::Exited("app".into())),
            ]
        );
        assert_eq!(observed.pod_name(2), Some("new"));
        assert_eq!(observed.pod_name(0), None);
    }

    #[test]
    fn failures_get_the_labs_causes() {
        let (observed, accesses) = observed();
        let causes = observed.causes(
            &[
                failure(2, 610),
                failure(4, 1100),
                failure(5, 1210),
                failure(6, 31300),
                failure(9, 1300),
            ],
            &accesses,
        );
        assert_eq!(
            causes,
            BTreeMap::from([
                (Cause::PrematureActivation, 1),
                (Cause::InflightCut, 1),
                (Cause::StaleUpstream, 2),
                (Cause::Other, 1),
            ]),
            "a 500 before the app served; sent before SIGTERM, cut after; sent after the \
             deletion (refused, or a connect that timed out); no access-log line"
        );
    }

    fn response(sent: u64, done: u64, status: Option<u16>, pod: Option<&str>) -> Response {
        Response {
            sent: at(sent),
            done: at(done),
            status,
            pod: pod.map(str::to_owned),
            ok: status.is_some_and(|s| (200..400).contains(&s)),
        }
    }

    #[test]
    fn without_an_access_log_the_pod_header_and_the_timeline_give_the_cause() {
        let (pods, slices, events, _) = rollout();
        let responses = vec![
            response(100, 110, Some(200), Some("old")),
            response(600, 610, Some(500), Some("new")),
            response(800, 810, Some(200), Some("new")),
            response(900, 1100, Some(502), None),
            response(1200, 1210, Some(502), None),
            response(1300, 1310, Some(504), None),
            response(200, 210, None, None),
            response(850, 860, Some(500), Some("new")),
        ];
        let observed = Observed::from_responses(at(0), &pods, &slices, &events, &responses);
        let causes: Vec<Cause> = responses
            .iter()
            .filter(|r| !r.ok)
            .map(|r| observed.inferred_cause(r))
            .collect();
        assert_eq!(
            causes,
            [
                Cause::PrematureActivation,
                Cause::InflightCut,
                Cause::StaleUpstream,
                Cause::StaleUpstream,
                Cause::Other,
                Cause::Other,
            ],
            "a 500 from a pod before its app served; sent before SIGTERM and cut after; \
             sent after the deletion; a failure before any pod stopped; a 500 from a \
             serving app is its own"
        );
        let result = observed.result("plain", &responses, 1.5, 12.0);
        assert_eq!((result.requests, result.failed), (8, 6));
        assert_eq!(result.causes[&Cause::StaleUpstream], 2);
        assert_eq!(
            result.causes[&Cause::KeepaliveRace],
            0,
            "every cause listed"
        );
    }

    #[test]
    fn a_sleep_hook_delays_sigterm_and_exit_137_is_a_sigkill_at_the_deadline() {
        let mut hooked = pod("old", "10.0.0.1", true);
        hooked["spec"]["containers"][0]["lifecycle"] =
            json!({"preStop": {"sleep": {"seconds": 5}}});
        let mut exec = pod("other", "10.0.0.3", true);
        exec["spec"]["containers"][0]["lifecycle"] =
            json!({"preStop": {"exec": {"command": ["/bin/sleep", "2.5"]}}});
        let mut http = pod("third", "10.0.0.4", true);
        http["spec"]["containers"][0]["lifecycle"] =
            json!({"preStop": {"httpGet": {"path": "/drain", "port": 9901}}});
        let pods = vec![
            watched(0, hooked.clone()),
            watched(0, exec),
            watched(0, http),
            watched(1000, deleted(hooked, Some(137))),
        ];
        let events = vec![
            killing(1000, "old"),
            killing(1000, "other"),
            killing(1000, "third"),
        ];
        let observed = Observed::new(at(0), &pods, &[], &events, &[]);
        let sigterms: Vec<(usize, u128)> = observed
            .events()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Sigterm(_)))
            .map(|e| (e.pod, e.at.as_millis()))
            .collect();
        assert_eq!(
            sigterms,
            vec![(2, 3500), (1, 6000)],
            "no SIGTERM time for an HTTP hook"
        );
        let killed = first(observed.events(), 1, |k| matches!(k, EventKind::Sigkill(_)));
        // 2027-01-15T08:00:30Z is this many ms after the test's origin.
        let deadline = humantime::parse_rfc3339("2027-01-15T08:00:30Z").expect("time");
        assert_eq!(killed, Some(deadline.duration_since(at(0)).expect("after")));
    }

    #[test]
    fn the_ingress_lag_is_measured_from_the_slices_to_its_requests() {
        let (observed, accesses) = observed();
        let lags = observed.endpoint_lags(&accesses);
        assert_eq!(
            lags,
            vec![
                EndpointLag {
                    pod: "old".into(),
                    added: None,
                    removed: Some(Duration::from_millis(280)),
                },
                EndpointLag {
                    pod: "new".into(),
                    added: Some(Duration::from_millis(90)),
                    removed: None,
                },
            ]
        );
    }

    #[test]
    fn the_loads_epoch_is_the_median_offset_to_the_ingress() {
        let sent = BTreeMap::from([
            (1, Duration::from_millis(90)),
            (2, Duration::from_millis(590)),
            (3, Duration::from_millis(700)),
        ]);
        let accesses = vec![
            access(100, 1, "10.0.0.1", 200),
            access(600, 2, "10.0.0.1", 200),
            access(800, 3, "10.0.0.1", 200),
        ];
        assert_eq!(load_epoch(&sent, &accesses), Some(at(10)));
        assert_eq!(load_epoch(&BTreeMap::new(), &accesses), None);
    }

    #[test]
    fn traefik_access_log_lines_are_read() {
        let line = r#"{"StartUTC":"2026-12-02T04:01:02.123456789Z","ServiceAddr":"198.18.1.7:8080","OriginStatus":502,"OriginContentSize":11,"DownstreamStatus":502,"request_X-Lameduck-Seq":"42"}"#;
        let access = Access::from_traefik(line).expect("a line");
        assert_eq!(access.seq, Some(42));
        assert_eq!(access.upstream, Upstream::Failed, "Traefik's own 502");
        let upstream = |status, size| {
            let line = format!(
                r#"{{"StartUTC":"2026-12-02T04:01:02Z","OriginStatus":{status},"OriginContentSize":{size}}}"#
            );
            Access::from_traefik(&line).expect("a line").upstream
        };
        assert_eq!(upstream(504, 15), Upstream::ConnectTimedOut);
        assert_eq!(
            upstream(502, 40),
            Upstream::Answered(502),
            "a pod's own 502"
        );
        assert_eq!(upstream(500, 12), Upstream::Answered(500));
        assert_eq!(
            access.backend,
            Some("198.18.1.7:8080".parse().expect("addr"))
        );
        assert_eq!(
            access.start,
            humantime::parse_rfc3339("2026-12-02T04:01:02.123456789Z").expect("time")
        );
        assert_eq!(Access::from_traefik("not json"), None);
        assert_eq!(Access::from_traefik(r#"{"level":"info"}"#), None);
    }
}
