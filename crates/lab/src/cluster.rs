//! The pods of one scenario: each created on its own loopback address and run by its
//! kubelet, seen by the controllers as [`PodView`]s, and listed for Prometheus while
//! they live.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use lameduck_contract::pod::ADMIN_PORT_NAME;

use crate::Binaries;
use crate::deployment::PodView;
use crate::kubelet::{Pod, PodSpec};
use crate::prometheus::{Target, Targets};
use crate::timeline::{EventKind, Timeline};
use crate::workload::{Program, Workload};

struct Member {
    pod: Pod,
    new: bool,
}

/// Where the sidecars' metrics are scraped, when Prometheus watches.
struct Scrape {
    targets: Targets,
    admin_port: u16,
    container: String,
}

/// The pods of a scenario; dropping it kills every pod process.
pub(crate) struct Cluster {
    members: Vec<Member>,
    next_pod: usize,
    /// Addresses are `127.block.subnet.n`: a block per lab process, a subnet per scenario.
    block: u8,
    subnet: u8,
    workload: Arc<Workload>,
    binaries: Binaries,
    timeline: Arc<Timeline>,
    scrape: Option<Scrape>,
    scenario: &'static str,
}

impl Cluster {
    pub(crate) fn new(
        scenario: &'static str,
        index: usize,
        workload: Arc<Workload>,
        binaries: Binaries,
        timeline: Arc<Timeline>,
        targets: Option<Targets>,
    ) -> Self {
        // Each lab process gets its own block of loopback addresses (by its pid), so two
        // labs at once (concurrent tests, say) never bind the same pod address.
        let block = u8::try_from(std::process::id() % 250 + 2).unwrap_or(2);
        let subnet = u8::try_from(index % 200 + 10).unwrap_or(10);
        let scrape = targets.and_then(|targets| {
            let sidecar = workload
                .containers
                .iter()
                .find(|c| c.program == Program::Sidecar)?;
            let (_, admin_port) = sidecar
                .ports
                .iter()
                .find(|(n, _)| n.as_deref() == Some(ADMIN_PORT_NAME))?;
            Some(Scrape {
                targets,
                admin_port: *admin_port,
                container: sidecar.name.clone(),
            })
        });
        Self {
            members: Vec::new(),
            next_pod: 0,
            block,
            subnet,
            workload,
            binaries,
            timeline,
            scrape,
            scenario,
        }
    }

    /// Creates a pod of the old or the new revision (`VERSION` 1 or 2).
    pub(crate) fn create(&mut self, new: bool) {
        self.next_pod += 1;
        let host = u8::try_from(self.next_pod % 250 + 1).unwrap_or(1);
        let ip = Ipv4Addr::new(127, self.block, self.subnet, host);
        let version = if new { "2" } else { "1" };
        let mut workload = (*self.workload).clone();
        for container in &mut workload.containers {
            for (name, value) in &mut container.env {
                if name == "VERSION" {
                    *value = version.to_owned();
                }
            }
        }
        let pod = Pod::start(PodSpec {
            id: self.next_pod,
            ip,
            name: format!("demo-app-v{version}-{}", self.next_pod),
            workload: Arc::new(workload),
            binaries: self.binaries.clone(),
            timeline: self.timeline.clone(),
        });
        self.members.push(Member { pod, new });
    }

    /// Starts deleting pod `id`.
    pub(crate) fn delete(&self, id: usize) {
        if let Some(member) = self.members.iter().find(|m| m.pod.id == id) {
            member.pod.delete();
        }
    }

    /// The pods as the controllers see them.
    pub(crate) fn views(&self) -> Vec<PodView> {
        self.members
            .iter()
            .map(|m| PodView {
                id: m.pod.id,
                ip: m.pod.ip,
                new: m.new,
                ready_since: m
                    .pod
                    .is_ready()
                    .then(|| self.timeline.last(m.pod.id, |k| *k == EventKind::Ready))
                    .flatten(),
                deleted: m.pod.is_deleted(),
                gone: m.pod.is_gone(),
            })
            .collect()
    }

    /// Every pod is ready and its app serving (long settled, as in a real cluster).
    pub(crate) fn settled(&self) -> bool {
        self.members.iter().all(|m| {
            m.pod.is_ready()
                && self
                    .timeline
                    .first(m.pod.id, |k| *k == EventKind::AppServing)
                    .is_some()
        })
    }

    /// Pod addresses to pods.
    pub(crate) fn addresses(&self) -> HashMap<Ipv4Addr, usize> {
        self.members.iter().map(|m| (m.pod.ip, m.pod.id)).collect()
    }

    /// Lists every pod with a sidecar for Prometheus until the pod is gone (its last
    /// scrapes carry the drain's outcome).
    pub(crate) fn sync_targets(&self) {
        let Some(scrape) = &self.scrape else {
            return;
        };
        let live = self
            .members
            .iter()
            .filter(|m| !m.pod.is_gone())
            .map(|m| Target {
                pod: m.pod.name.clone(),
                admin: (m.pod.ip, scrape.admin_port).into(),
                container: scrape.container.clone(),
            })
            .collect();
        scrape.targets.sync(self.scenario, live);
    }

    /// Stops every pod and empties the target list.
    pub(crate) fn stop(mut self) {
        self.members.clear();
        self.sync_targets();
    }
}
