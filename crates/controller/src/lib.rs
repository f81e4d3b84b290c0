//! The torc controller: the rack's brain (the seed's Mesos master plus the ToRC Scheduler).
//!
//! It keeps the rack's nodes and tasks (`rack`), persists every change before acknowledging it
//! (`store`), serves the `/api/v1` HTTP API (`api`), and hands each agent its desired task set
//! as a whole, generation-numbered document that the agent long-polls for.
//!
//! It is not a process runtime: agents run the tasks. It does not place tasks itself either:
//! the pure `torc-scheduler` planner does, on the rack state this crate feeds it.
//!
//! Invariants:
//! - A change is visible through the API only after it is durable in the store.
//! - All rack state lives in one `Rack` behind one mutex; handlers never hold it across an
//!   await point.

mod api;
mod dns;
mod frameworks;
mod health;
mod kv;
mod original;
mod rack;
mod services;
mod settings;
mod store;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use torc_types::{NodeName, now_millis};

pub use dns::{Lookup, lookup};
pub use rack::{Rack, RackError};
pub use services::HealthCheck;
pub use settings::{
    ConfiguredNode, HealthSpec, Probe, RackSettings, ServicePolicy, ServiceTemplate, SlaKind,
};
pub use store::StoreError;

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the state store does not match the rack config: {0}")]
    State(String),
}

/// Why a change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Rejected(#[from] RackError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Inner {
    rack: Rack,
    store: store::Store,
}

/// The controller, shared by the API handlers and the background reconciler.
pub struct Controller {
    pub(crate) inner: Mutex<Inner>,
    /// Per node: the generation of its desired set, to wake long-polling agents.
    watchers: Mutex<HashMap<NodeName, watch::Sender<u64>>>,
    token: Option<String>,
    pub(crate) http: reqwest::Client,
    /// The framework event position, to wake frameworks' long polls.
    events: watch::Sender<u64>,
    /// The latest DNS snapshot (numbered), and its generation to wake the DNS role.
    dns: Mutex<torc_dns::DnsSnapshot>,
    dns_generation: watch::Sender<u64>,
}

impl Controller {
    /// Opens (or creates) the controller's state in `data_dir`.
    pub fn open(
        settings: RackSettings,
        data_dir: &Path,
        token: Option<String>,
    ) -> Result<Arc<Controller>, StartError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let store = store::Store::open(&data_dir.join("controller.redb"))?;
        let loaded = store.load()?;
        let mut rack = Rack::new(settings, loaded, now_millis()).map_err(StartError::State)?;
        // Whatever reconciling the load did (lost tasks of removed nodes) is persisted now.
        let changes = rack.take_changes();
        store.commit(&changes.writes)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .expect("a plain HTTP client always builds");
        let (events, _) = watch::channel(rack.event_position().1);
        let mut dns = rack.dns_snapshot();
        dns.generation = 1;
        let (dns_generation, _) = watch::channel(1);
        Ok(Arc::new(Controller {
            dns: Mutex::new(dns),
            dns_generation,
            inner: Mutex::new(Inner { rack, store }),
            watchers: Mutex::new(HashMap::new()),
            token,
            http,
            events,
        }))
    }

    /// Reads the rack.
    pub fn read<R>(&self, f: impl FnOnce(&Rack) -> R) -> R {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&inner.rack)
    }

    /// Changes the rack, persists the change, then wakes the agents it concerns. Blocking (it
    /// waits for fsync): async callers go through `change`.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut Rack) -> Result<R, RackError>,
    ) -> Result<R, ChangeError> {
        let (result, wake, event_seq, names) = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let result = f(&mut inner.rack);
            let changes = inner.rack.take_changes();
            inner.store.commit(&changes.writes)?;
            let names = changes.names_may_change.then(|| inner.rack.dns_snapshot());
            (result?, changes.wake, inner.rack.event_position().1, names)
        };
        if let Some(names) = names {
            self.publish_dns(names);
        }
        self.events.send_if_modified(|seq| {
            let changed = *seq != event_seq;
            *seq = event_seq;
            changed
        });
        let watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        for (node, generation) in wake {
            if let Some(tx) = watchers.get(&node) {
                tx.send_replace(generation);
            }
        }
        Ok(result)
    }

    /// `write` on the blocking pool, for async handlers.
    pub async fn change<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Rack) -> Result<R, RackError> + Send + 'static,
    ) -> Result<R, ChangeError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.write(f))
            .await
            .expect("rack changes do not panic")
    }

    fn subscribe(&self, node: &NodeName) -> Option<watch::Receiver<u64>> {
        let generation = self.read(|r| r.desired_generation(node))?;
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let tx = watchers
            .entry(node.clone())
            .or_insert_with(|| watch::channel(generation).0);
        Some(tx.subscribe())
    }

    /// Serves the API on `listener` and runs the reconciler until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let ticker = tokio::spawn(Arc::clone(&self).reconcile());
        let health = tokio::spawn(health::run(Arc::clone(&self)));
        let app = api::router(Arc::clone(&self));
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        ticker.abort();
        health.abort();
        result
    }

    /// Numbers a new DNS snapshot when its content changed, and wakes the DNS role.
    fn publish_dns(&self, mut names: torc_dns::DnsSnapshot) {
        let mut current = self.dns.lock().unwrap_or_else(|e| e.into_inner());
        names.generation = current.generation;
        if *current == names {
            return;
        }
        names.generation += 1;
        let generation = names.generation;
        *current = names;
        drop(current);
        self.dns_generation.send_replace(generation);
    }

    pub(crate) fn dns_snapshot(&self) -> torc_dns::DnsSnapshot {
        self.dns.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn subscribe_dns(&self) -> watch::Receiver<u64> {
        self.dns_generation.subscribe()
    }

    pub(crate) fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// Background reconciler: expires silent nodes and frameworks, restarts services, retries
    /// pending tasks.
    async fn reconcile(self: Arc<Self>) {
        let period = self
            .read(|r| r.heartbeat_interval())
            .min(Duration::from_millis(500));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(e) = self
                .change(|rack| {
                    rack.tick(now_millis());
                    Ok(())
                })
                .await
            {
                tracing::error!(error = %e, "reconcile step failed");
            }
        }
    }
}
