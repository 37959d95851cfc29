//! A namespace's objects of one kind as they change, each stamped when it arrived:
//! the lab's timeline is built from these stamps. A watch that ends (timeout, a
//! compacted resourceVersion) is started again from a fresh list.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::{StreamExt as _, TryStreamExt as _};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Resource};
use lameduck_lab::observed::Watched;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// How long one watch request lasts before it is made again.
const WATCH_SECONDS: u32 = 240;

/// One running watch.
#[derive(Debug)]
pub(crate) struct Watch {
    task: JoinHandle<()>,
    seen: Arc<Mutex<Vec<Watched>>>,
}

impl Watch {
    /// Watches `api`'s objects matching `labels`; `changes_only` leaves out what
    /// exists when it starts.
    pub(crate) fn start<K>(api: Api<K>, labels: Option<String>, changes_only: bool) -> Self
    where
        K: Resource + Clone + Debug + Serialize + DeserializeOwned + Send + 'static,
    {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut first = true;
            loop {
                let error = watch(&api, labels.as_deref(), changes_only && first, &into).await;
                first = false;
                if let Err(error) = error {
                    tracing::debug!(%error, "watch ended; listing again");
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        Self { task, seen }
    }

    /// Stops watching; what arrived, in order.
    pub(crate) fn stop(&self) -> Vec<Watched> {
        self.task.abort();
        self.seen
            .lock()
            .map(|mut seen| std::mem::take(&mut *seen))
            .unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn push<K: Serialize>(seen: &Mutex<Vec<Watched>>, object: &K) {
    let at = SystemTime::now();
    if let (Ok(object), Ok(mut seen)) = (serde_json::to_value(object), seen.lock()) {
        seen.push(Watched { at, object });
    }
}

/// One list and the watch from its resourceVersion, until the watch ends.
async fn watch<K>(
    api: &Api<K>,
    labels: Option<&str>,
    skip_existing: bool,
    seen: &Mutex<Vec<Watched>>,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned + Send + 'static,
{
    let mut list = ListParams::default();
    let mut params = WatchParams::default().timeout(WATCH_SECONDS);
    if let Some(labels) = labels {
        list = list.labels(labels);
        params = params.labels(labels);
    }
    let listed = api.list(&list).await?;
    if !skip_existing {
        for object in &listed.items {
            push(seen, object);
        }
    }
    let mut version = listed.metadata.resource_version.unwrap_or_default();
    let mut stream = api.watch(&params, &version).await?.boxed();
    while let Some(event) = stream.try_next().await? {
        match event {
            WatchEvent::Added(object)
            | WatchEvent::Modified(object)
            | WatchEvent::Deleted(object) => {
                push(seen, &object);
                if let Some(v) = object.meta().resource_version.clone() {
                    version = v;
                }
            }
            WatchEvent::Bookmark(bookmark) => version = bookmark.metadata.resource_version,
            WatchEvent::Error(status) => {
                tracing::debug!(?status, %version, "watch error");
                return Ok(());
            }
        }
    }
    Ok(())
}
