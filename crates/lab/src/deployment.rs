//! The Deployment controller's rolling update as a reconcile step: the rollout's
//! limits and the pods as they are now in, the actions to take out. Level-based, as
//! the real controller is: it reads the current pods, not the events that led there,
//! and `now` is passed in (the clock seam).
//!
//! - New pods are surged in while `old + new < replicas + maxSurge`.
//! - A pod is available once Ready for `minReadySeconds`; endpoints follow Ready alone.
//! - Old pods are deleted, unready ones first, as long as the available pods stay at
//!   `replicas - maxUnavailable` or more; a deleted pod no longer counts toward either.
//! - The rollout is complete when every new pod is available and every old pod is gone.

use std::net::Ipv4Addr;
use std::time::Duration;

use lameduck_manifests::workload::RollingUpdate;

/// A rollout's limits, in pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rollout {
    pub(crate) replicas: usize,
    pub(crate) max_surge: usize,
    pub(crate) max_unavailable: usize,
    /// `minReadySeconds`, scaled.
    pub(crate) min_ready: Duration,
}

impl Rollout {
    pub(crate) fn new(limits: RollingUpdate, min_ready: Duration) -> Self {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            replicas: count(limits.replicas),
            max_surge: count(limits.max_surge),
            max_unavailable: count(limits.max_unavailable),
            min_ready,
        }
    }
}

/// A pod as the controllers see it (its object's status, not its processes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PodView {
    pub(crate) id: usize,
    pub(crate) ip: Ipv4Addr,
    /// Of the new revision.
    pub(crate) new: bool,
    /// Ready since then; `None` while not Ready.
    pub(crate) ready_since: Option<Duration>,
    /// Deletion has started.
    pub(crate) deleted: bool,
    /// Every container has exited.
    pub(crate) gone: bool,
}

impl PodView {
    fn live(&self) -> bool {
        !self.deleted
    }

    /// Ready for `min_ready` by `now`.
    pub(crate) fn available(&self, min_ready: Duration, now: Duration) -> bool {
        self.live()
            && self
                .ready_since
                .is_some_and(|since| since + min_ready <= now)
    }
}

/// What the controller does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Create a pod of the new revision.
    Create,
    /// Delete this pod.
    Delete(usize),
}

/// One reconcile's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) actions: Vec<Action>,
    /// Every new pod is available and every old pod is gone.
    pub(crate) complete: bool,
}

/// One reconcile of the rolling update.
pub(crate) fn reconcile(rollout: &Rollout, pods: &[PodView], now: Duration) -> Step {
    let live = |new: bool| pods.iter().filter(|p| p.new == new && p.live()).count();
    let (old_live, new_live) = (live(false), live(true));
    let creates = (rollout.replicas.saturating_sub(new_live))
        .min((rollout.replicas + rollout.max_surge).saturating_sub(old_live + new_live));
    let mut actions = vec![Action::Create; creates];

    let available = |p: &&PodView| p.available(rollout.min_ready, now);
    let min_available = rollout.replicas.saturating_sub(rollout.max_unavailable);
    let mut available_now = pods.iter().filter(available).count();
    let mut victims: Vec<&PodView> = pods.iter().filter(|p| !p.new && p.live()).collect();
    victims.sort_by_key(|p| (p.ready_since.is_some(), p.id));
    for victim in victims {
        let counted = available(&victim);
        if counted && available_now <= min_available {
            break;
        }
        actions.push(Action::Delete(victim.id));
        available_now -= usize::from(counted);
    }

    let new_available = pods.iter().filter(|p| p.new).filter(available).count();
    let complete = new_available == rollout.replicas
        && old_live == 0
        && pods.iter().filter(|p| !p.new).all(|p| p.gone);
    Step { actions, complete }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn rollout(replicas: usize, max_surge: usize, max_unavailable: usize) -> Rollout {
        Rollout {
            replicas,
            max_surge,
            max_unavailable,
            min_ready: Duration::ZERO,
        }
    }

    fn pod(id: usize, new: bool, ready_since: Option<Duration>) -> PodView {
        PodView {
            id,
            ip: Ipv4Addr::LOCALHOST,
            new,
            ready_since,
            deleted: false,
            gone: false,
        }
    }

    fn old_pods(n: usize) -> Vec<PodView> {
        (1..=n)
            .map(|id| pod(id, false, Some(Duration::ZERO)))
            .collect()
    }

    fn creates(step: &Step) -> usize {
        step.actions
            .iter()
            .filter(|a| **a == Action::Create)
            .count()
    }

    fn deletes(step: &Step) -> Vec<usize> {
        let deleted = step.actions.iter().filter_map(|a| match a {
            Action::Delete(id) => Some(*id),
            Action::Create => None,
        });
        deleted.collect()
    }

    #[test]
    fn the_first_step_surges_and_deletes_within_max_unavailable() {
        // 5 replicas, 25 %: surge 2 (rounded up), unavailable 1 (rounded down).
        let step = reconcile(&rollout(5, 2, 1), &old_pods(5), SECOND);
        assert_eq!(creates(&step), 2);
        assert_eq!(deletes(&step), [1], "5 available, 4 must stay");
        assert!(!step.complete);
    }

    #[test]
    fn no_surge_means_deleting_first() {
        let step = reconcile(&rollout(3, 0, 1), &old_pods(3), SECOND);
        assert_eq!(creates(&step), 0, "old + new may not exceed 3");
        assert_eq!(deletes(&step), [1]);
    }

    #[test]
    fn max_unavailable_zero_waits_for_new_pods_to_be_available() {
        let mut pods = old_pods(2);
        pods.push(pod(3, true, None));
        let step = reconcile(&rollout(2, 1, 0), &pods, SECOND);
        assert_eq!(
            step.actions,
            [],
            "surge used up, nothing may go unavailable"
        );
        pods[2].ready_since = Some(SECOND);
        let step = reconcile(&rollout(2, 1, 0), &pods, 2 * SECOND);
        assert_eq!(deletes(&step), [1], "the new pod now covers one old pod");
    }

    #[test]
    fn unready_old_pods_go_first_and_do_not_count() {
        let mut pods = old_pods(3);
        pods[2].ready_since = None;
        let step = reconcile(&rollout(3, 0, 1), &pods, SECOND);
        assert_eq!(
            deletes(&step),
            [3],
            "the unready pod goes; the others are the minimum"
        );
    }

    #[test]
    fn min_ready_seconds_delays_availability_not_readiness() {
        let mut pods = old_pods(1);
        pods.push(pod(2, true, Some(10 * SECOND)));
        let rollout = Rollout {
            min_ready: 10 * SECOND,
            ..rollout(1, 1, 0)
        };
        let early = reconcile(&rollout, &pods, 15 * SECOND);
        assert_eq!(early.actions, [], "ready for 5 s: not available yet");
        let late = reconcile(&rollout, &pods, 20 * SECOND);
        assert_eq!(deletes(&late), [1]);
        assert!(pods[1].available(rollout.min_ready, 20 * SECOND));
        assert!(!pods[1].available(rollout.min_ready, 19 * SECOND));
    }

    #[test]
    fn complete_once_new_pods_are_available_and_old_ones_gone() {
        let mut pods: Vec<PodView> = (1..=2).map(|id| pod(id, true, Some(SECOND))).collect();
        let mut old = pod(3, false, None);
        old.deleted = true;
        pods.push(old);
        assert!(
            !reconcile(&rollout(2, 1, 0), &pods, 2 * SECOND).complete,
            "still terminating"
        );
        pods[2].gone = true;
        let step = reconcile(&rollout(2, 1, 0), &pods, 2 * SECOND);
        assert!(step.complete);
        assert_eq!(step.actions, []);
    }

    #[test]
    fn deleted_pods_count_toward_neither_surge_nor_availability() {
        let mut pods = old_pods(2);
        pods[0].deleted = true;
        let step = reconcile(&rollout(2, 1, 1), &pods, SECOND);
        assert_eq!(creates(&step), 2, "one live old pod: room for two new ones");
        assert!(
            deletes(&step).is_empty(),
            "one available pod left: the minimum"
        );
    }
}
