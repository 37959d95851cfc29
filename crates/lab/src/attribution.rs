//! Why a request failed: one [`Cause`] per failed request, from where the ingress sent
//! it (its tries) and that pod's timeline. A pure function over both, so every cause
//! is tested on a synthetic timeline; the real runs only feed it.

use std::time::Duration;

use serde::Serialize;

use crate::ingress::{Entry, Try};
use crate::timeline::{Event, EventKind, first};

/// Two clocks meet here (the load's and the pods'): this much is allowed between them.
const CLOCK_SLACK: Duration = Duration::from_millis(50);

/// How long an app may take to take up a request sent to it: accept the connection and
/// read the request. A request sent this close before its app's SIGTERM may still sit in
/// the accept queue, or unread on an idle keep-alive connection, when the app begins to
/// stop. An app that stops accepting and closes idle connections on SIGTERM loses it
/// however gracefully it shuts down; only a pod that keeps serving until its endpoint
/// is gone (preStop, the sidecar) saves it. So it counts with the requests sent to a
/// terminating pod.
const TAKE_UP: Duration = Duration::from_millis(20);

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Answered 5xx by a pod whose app was not serving yet: traffic before readiness.
    PrematureActivation,
    /// Sent to a pod that was then told to stop: SIGTERM cut it in flight.
    InflightCut,
    /// Sent to a pod already deleted (or so shortly before its app's SIGTERM that the app
    /// could not take it up): the ingress had not learnt of it yet.
    StaleUpstream,
    /// Sent on a reused connection the app was closing: the keep-alive race.
    KeepaliveRace,
    /// Still running when the grace period ended: SIGKILL cut it.
    GraceExpired,
    /// None of the above (or no record of where it went).
    Other,
}

impl Cause {
    /// Every cause, in report order.
    pub const ALL: [Cause; 6] = [
        Cause::PrematureActivation,
        Cause::InflightCut,
        Cause::StaleUpstream,
        Cause::KeepaliveRace,
        Cause::GraceExpired,
        Cause::Other,
    ];

    /// The cause's name in tables, JSON and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::PrematureActivation => "premature-activation",
            Cause::InflightCut => "inflight-cut",
            Cause::StaleUpstream => "stale-upstream",
            Cause::KeepaliveRace => "keepalive-race",
            Cause::GraceExpired => "grace-expired",
            Cause::Other => "other",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cause of a request that failed at `done` (on the timeline), given what the
/// ingress did with it.
pub(crate) fn attribute(done: Duration, entry: Option<&Entry>, events: &[Event]) -> Cause {
    let Some(entry) = entry else {
        return Cause::Other;
    };
    let done = done + CLOCK_SLACK;
    let deleted = |pod: usize| first(events, pod, |k| *k == EventKind::Deleted);
    match entry.tries.last() {
        Some(Try::Answered { pod, status }) if *status >= 500 => {
            let serving = first(events, *pod, |k| *k == EventKind::AppServing);
            if serving.is_none_or(|s| s > entry.at) {
                Cause::PrematureActivation
            } else {
                Cause::Other
            }
        }
        Some(Try::SentAndFailed { pod, reused }) => {
            let killed = first(events, *pod, |k| matches!(k, EventKind::Sigkill(_)));
            let terminated = first(events, *pod, |k| matches!(k, EventKind::Sigterm(_)));
            if killed.is_some_and(|k| k <= done) {
                Cause::GraceExpired
            } else if deleted(*pod).is_some_and(|d| d <= entry.at)
                || terminated.is_some_and(|t| t <= entry.at + TAKE_UP)
            {
                Cause::StaleUpstream
            } else if terminated.is_some_and(|t| t <= done) {
                Cause::InflightCut
            } else if *reused {
                Cause::KeepaliveRace
            } else {
                Cause::Other
            }
        }
        Some(Try::ConnectFailed { .. }) => {
            let all_stale = entry.tries.iter().all(|t| match t {
                Try::ConnectFailed { pod } => deleted(*pod).is_some_and(|d| d <= entry.at),
                _ => false,
            });
            if all_stale {
                Cause::StaleUpstream
            } else {
                Cause::Other
            }
        }
        _ => Cause::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn event(at: u64, pod: usize, kind: EventKind) -> Event {
        Event {
            at: ms(at),
            pod,
            kind,
        }
    }

    fn entry(at: u64, tries: Vec<Try>) -> Entry {
        Entry { at: ms(at), tries }
    }

    /// Pod 1 serves from 100 ms, is deleted at 1000, SIGTERMed at 2000, killed at 3000.
    fn timeline() -> Vec<Event> {
        vec![
            event(0, 1, EventKind::Created),
            event(100, 1, EventKind::AppServing),
            event(1000, 1, EventKind::Deleted),
            event(2000, 1, EventKind::Sigterm("app".into())),
            event(3000, 1, EventKind::Sigkill("app".into())),
        ]
    }

    fn sent(pod: usize, reused: bool) -> Vec<Try> {
        vec![Try::SentAndFailed { pod, reused }]
    }

    #[test]
    fn a_5xx_before_the_app_serves_is_premature_activation() {
        let answered = vec![Try::Answered {
            pod: 1,
            status: 502,
        }];
        let events = timeline();
        assert_eq!(
            attribute(ms(60), Some(&entry(50, answered.clone())), &events),
            Cause::PrematureActivation
        );
        assert_eq!(
            attribute(ms(600), Some(&entry(500, answered)), &events),
            Cause::Other,
            "a 5xx from a serving app is the app's own"
        );
    }

    #[test]
    fn a_request_cut_by_sigkill_is_grace_expired() {
        let cause = attribute(ms(3000), Some(&entry(900, sent(1, false))), &timeline());
        assert_eq!(cause, Cause::GraceExpired);
    }

    #[test]
    fn a_request_sent_to_a_deleted_pod_is_a_stale_upstream() {
        let cause = attribute(ms(1600), Some(&entry(1500, sent(1, true))), &timeline());
        assert_eq!(cause, Cause::StaleUpstream);
        let refused = vec![Try::ConnectFailed { pod: 1 }, Try::ConnectFailed { pod: 1 }];
        let cause = attribute(ms(2600), Some(&entry(2500, refused)), &timeline());
        assert_eq!(
            cause,
            Cause::StaleUpstream,
            "every try refused by deleted pods"
        );
        let mixed = vec![Try::ConnectFailed { pod: 1 }, Try::ConnectFailed { pod: 2 }];
        let cause = attribute(ms(2600), Some(&entry(2500, mixed)), &timeline());
        assert_eq!(cause, Cause::Other, "pod 2 was not deleted");
    }

    #[test]
    fn a_request_sent_just_before_sigterm_is_a_stale_upstream() {
        // Without preStop, pod 1 is deleted and SIGTERMed at 1000: a request sent 5 ms
        // before may not have been taken up by the app when it began to stop.
        let no_prestop = vec![
            event(0, 1, EventKind::Created),
            event(100, 1, EventKind::AppServing),
            event(1000, 1, EventKind::Deleted),
            event(1000, 1, EventKind::Sigterm("app".into())),
        ];
        for reused in [false, true] {
            let cause = attribute(ms(1010), Some(&entry(995, sent(1, reused))), &no_prestop);
            assert_eq!(cause, Cause::StaleUpstream, "reused: {reused}");
        }
        let earlier = Entry {
            at: ms(1000) - TAKE_UP - ms(1),
            tries: sent(1, false),
        };
        let cause = attribute(ms(1010), Some(&earlier), &no_prestop);
        assert_eq!(cause, Cause::InflightCut, "sent before the take-up window");
        // With preStop the app had a second to take the same request up.
        let cause = attribute(ms(2010), Some(&entry(995, sent(1, false))), &timeline());
        assert_eq!(cause, Cause::InflightCut, "in flight for a second");
    }

    #[test]
    fn a_request_in_flight_at_sigterm_is_an_inflight_cut() {
        // Sent before the deletion, failed once SIGTERM arrived.
        let cause = attribute(ms(2010), Some(&entry(900, sent(1, false))), &timeline());
        assert_eq!(cause, Cause::InflightCut);
    }

    #[test]
    fn a_reused_connection_failing_on_a_live_pod_is_the_keepalive_race() {
        let cause = attribute(ms(600), Some(&entry(500, sent(1, true))), &timeline());
        assert_eq!(cause, Cause::KeepaliveRace);
        let cause = attribute(ms(600), Some(&entry(500, sent(1, false))), &timeline());
        assert_eq!(cause, Cause::Other, "a fresh connection is no race");
    }

    #[test]
    fn without_an_ingress_record_the_cause_is_other() {
        assert_eq!(attribute(ms(10), None, &timeline()), Cause::Other);
    }

    #[test]
    fn causes_are_named_in_kebab_case_everywhere() {
        for cause in Cause::ALL {
            let json = serde_json::to_string(&cause).expect("cause");
            assert_eq!(json, format!("\"{}\"", cause.as_str()));
        }
    }
}
