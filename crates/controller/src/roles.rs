//! The driver of a controller of several (design §5, §6.3): it holds the lease and its
//! keepalives, campaigns, watches who leads, and carries out what the leadership state
//! machine asks (`leadership::Action`), feeding every outcome back to the controller's seat.
//!
//! What it is not: the decision. Whether the controller may act is the seat's (pure state on
//! the boot clock); this module only does the I/O around it, on the etcd store's own runtime
//! thread, so a busy API runtime never delays a keepalive.
//!
//! Invariants:
//! - Only outcomes of the current lease and campaign reach the seat: a keepalive or campaign
//!   task of an earlier lease is aborted before the next starts.
//! - A takeover builds the rack from the store as of at least the revision read (linearizably)
//!   after the win: no commit of an earlier leader can be missing from it, since none can land
//!   once its key is gone.
//! - The store's fence is set to a leadership only once it won, and cleared when it is lost.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use torc_kv_client::{Client, Election, KeepAliveState, KeepAliveTask, LeaderKey, Leadership};

use std::path::PathBuf;

use torc_kv_client::{ClientOptions, ClientTls, Credentials, read_password_file};

use crate::controller::{Controller, ControllerOptions, StartError};
use crate::leadership::{Action, Campaigner, Event, LeaderInfo, Timing};
use crate::seat::{Elected, Seat, on_boot_clock};
use crate::settings::RackSettings;
use crate::store::layout::{Key, Layout};
use crate::store::seal::Sealer;
use crate::store::{Epoch, EtcdOptions, EtcdStore, Loaded, Mirror, StoreError};

/// How often a standby's copy of the rack may be rebuilt.
const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// Waits until `due` (never, for `None`: the branch is disabled then).
async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

fn leader_of(key: &LeaderKey) -> LeaderInfo {
    LeaderInfo::from_campaign(&key.value, Epoch(key.epoch.max(0) as u64))
}

/// What the driver needs of the store it is elected through (the etcd store).
pub(crate) trait Electorate: Send + Sync + 'static {
    /// The client of the store's cluster.
    fn client(&self) -> &Client;
    /// Where the campaigners' keys live (`P election/`).
    fn election_prefix(&self) -> Bytes;
    /// The key whose revision a linearizable read is taken on (`P format`).
    fn probe_key(&self) -> Bytes;
    /// The leadership commits are fenced with from now on (`None`: every commit refused).
    fn set_leadership(&self, leadership: Option<Leadership>);
    /// The store's records as of `revision` or later, to build a rack from.
    fn loaded_since(
        &self,
        revision: i64,
    ) -> impl Future<Output = Result<Loaded, StoreError>> + Send;
    /// The store's revision as the controller last saw it; changes when records do.
    fn revisions(&self) -> watch::Receiver<i64>;
    /// A client pinned to each member, by URL, for their status.
    fn members(&self) -> &[(String, Client)];
}

/// The lease's timing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseTiming {
    /// The lease's TTL (`--lease-ttl`): what etcd waits after the last keepalive before it
    /// deletes the campaign key.
    pub ttl: Duration,
    /// Between keepalives (TTL / 4).
    pub interval: Duration,
}

/// The driver; `run` until the controller shuts down.
pub(crate) struct Driver<E: Electorate> {
    ctl: Arc<Controller>,
    store: Arc<E>,
    me: Campaigner,
    timing: LeaseTiming,
    election: Election,
    /// The current lease and the tasks that serve it (keepalives, campaign).
    lease: Option<Held>,
    /// The leadership won with the current lease.
    leadership: Option<Leadership>,
    /// The records caught up with after the win, for the takeover.
    ready: Option<(Epoch, Loaded)>,
    /// Outcomes of the lease's tasks, back to the driver's loop (tagged with their lease).
    outcomes: mpsc::UnboundedSender<(i64, Outcome)>,
    outcomes_rx: mpsc::UnboundedReceiver<(i64, Outcome)>,
}

struct Held {
    id: i64,
    keepalive: JoinHandle<()>,
    campaign: JoinHandle<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.keepalive.abort();
        self.campaign.abort();
    }
}

/// What a lease's task found.
enum Outcome {
    Renewal(KeepAliveState),
    Won(Leadership),
    CampaignFailed(String),
}

impl<E: Electorate> Driver<E> {
    pub(crate) fn new(
        ctl: Arc<Controller>,
        store: Arc<E>,
        me: Campaigner,
        timing: LeaseTiming,
    ) -> Driver<E> {
        let election = Election::new(store.client(), store.election_prefix());
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        Driver {
            ctl,
            store,
            me,
            timing,
            election,
            lease: None,
            leadership: None,
            ready: None,
            outcomes,
            outcomes_rx,
        }
    }

    /// Campaigns, then carries out the seat's actions and feeds it the outcomes, until
    /// `actions` closes (the controller is gone).
    pub(crate) async fn run(mut self, mut actions: mpsc::UnboundedReceiver<Action>) {
        let mut observed = self.election.observe();
        let mut revisions = self.store.revisions();
        // The seat's lapse is noticed by `acting`, asked before every act; this tick makes sure
        // it is also noticed (and its `Stop` carried out) when nothing asks.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A standby's copy of the rack is rebuilt at most every REFRESH_EVERY, and at most
        // REFRESH_EVERY behind the store.
        let mut refresh_due: Option<tokio::time::Instant> = None;
        let mut last_refresh = tokio::time::Instant::now() - REFRESH_EVERY;
        // The status's view of the controllers and the members, in a task of its own (a slow
        // member must not hold the driver).
        let survey = tokio::spawn(survey(Arc::clone(&self.ctl), Arc::clone(&self.store)));
        self.campaign().await;
        loop {
            tokio::select! {
                action = actions.recv() => match action {
                    Some(a) => self.carry_out(a).await,
                    None => break,
                },
                Some((lease, outcome)) = self.outcomes_rx.recv() => {
                    if self.lease.as_ref().is_some_and(|l| l.id == lease) {
                        self.take(outcome);
                    }
                }
                changed = observed.changed() => {
                    if changed.is_err() {
                        observed = self.election.observe();
                        continue;
                    }
                    let leader = observed.borrow_and_update().as_ref().map(leader_of);
                    self.ctl.seat.on(Event::LeaderSeen { leader });
                }
                changed = revisions.changed() => {
                    if changed.is_err() {
                        revisions = self.store.revisions();
                        continue;
                    }
                    // Debounced by a due time, not a sleep here: the loop must stay free for
                    // the seat's actions and the lease's outcomes (a takeover waits on them).
                    let earliest = last_refresh + REFRESH_EVERY;
                    refresh_due.get_or_insert(earliest.max(tokio::time::Instant::now()));
                }
                () = sleep_until(refresh_due), if refresh_due.is_some() => {
                    refresh_due = None;
                    last_refresh = tokio::time::Instant::now();
                    let revision = *revisions.borrow_and_update();
                    self.refresh(revision).await;
                }
                _ = tick.tick() => {
                    let _ = self.ctl.seat.role();
                }
            }
        }
        survey.abort();
        self.give_up().await;
    }

    async fn carry_out(&mut self, action: Action) {
        match action {
            Action::CatchUp { epoch } => {
                let caught_up = self.catch_up(epoch).await;
                match caught_up {
                    Ok(()) => self.ctl.seat.on(Event::CaughtUp { epoch }),
                    Err(e) => {
                        tracing::warn!(%epoch, error = %e, "cannot catch up with the store after winning; campaigning again");
                        self.ctl.seat.on(Event::LeaseGone);
                    }
                }
            }
            Action::Act { epoch, fresh } => {
                if fresh {
                    self.take_over(epoch).await;
                } else {
                    tracing::info!(%epoch, "this controller acts again (its lease was renewed)");
                }
            }
            Action::Stop { why } => {
                tracing::warn!(why, "this controller stops acting");
            }
            // Until the store answers (quorum lost, say), the seat stays lapsed: it acts on
            // nothing, and nothing else is for the driver to do.
            Action::Resync { epoch } => loop {
                match self.still_leads(epoch).await {
                    Ok(still_leader) => {
                        self.ctl.seat.on(Event::Resynced { still_leader });
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot resync with the store yet");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            },
            Action::Resign { epoch } => {
                tracing::info!(%epoch, "stepping down: giving up the lease");
                self.give_up().await;
                self.ctl.seat.on(Event::Resigned);
            }
            Action::Campaign => self.campaign().await,
        }
    }

    /// A new lease, its keepalives and a campaign with it; the previous lease is given up.
    async fn campaign(&mut self) {
        self.give_up().await;
        let ttl = self.timing.ttl.as_secs().max(1) as i64;
        let lease = loop {
            match self.store.client().lease_grant(ttl).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot get a lease from the store; retrying");
                    self.ctl.seat.on(Event::RenewFailed { why: e.to_string() });
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let keepalive = {
            let task = KeepAliveTask::spawn(self.store.client(), lease.id, self.timing.interval);
            let mut states = task.state();
            let tx = self.outcomes.clone();
            let id = lease.id;
            tokio::spawn(async move {
                // The task renews as long as it lives; this one forwards what it publishes.
                let _task = task;
                while states.changed().await.is_ok() {
                    let state = states.borrow_and_update().clone();
                    let gone = matches!(state, KeepAliveState::Gone);
                    if tx.send((id, Outcome::Renewal(state))).is_err() || gone {
                        return;
                    }
                }
            })
        };
        let campaign = {
            let election = self.election.clone();
            let value = serde_json::to_vec(&self.me).expect("a campaigner serialises");
            let tx = self.outcomes.clone();
            let id = lease.id;
            tokio::spawn(async move {
                let outcome = match election.campaign(id, value).await {
                    Ok(l) => Outcome::Won(l),
                    Err(e) => Outcome::CampaignFailed(e.to_string()),
                };
                let _ = tx.send((id, outcome));
            })
        };
        self.lease = Some(Held {
            id: lease.id,
            keepalive,
            campaign,
        });
    }

    /// Revokes the current lease (deleting its campaign key), if any; best effort: a lease
    /// that cannot be revoked expires by itself.
    async fn give_up(&mut self) {
        self.store.set_leadership(None);
        self.leadership = None;
        if let Some(held) = self.lease.take() {
            let id = held.id;
            drop(held);
            let revoke = self.store.client().lease_revoke(id);
            match tokio::time::timeout(Duration::from_secs(2), revoke).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = id, "cannot revoke the lease; it expires by itself");
                }
                Err(_) => {
                    tracing::warn!(
                        lease = id,
                        "the store did not answer the lease's revocation in 2 s; it expires by itself"
                    );
                }
            }
        }
    }

    fn take(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Renewal(KeepAliveState::Starting) => {}
            Outcome::Renewal(KeepAliveState::Failed { why }) => {
                self.ctl.seat.on(Event::RenewFailed { why });
            }
            Outcome::Renewal(KeepAliveState::Alive { sent, ttl }) => {
                self.ctl.seat.on(Event::Renewed {
                    sent: on_boot_clock(sent),
                    ttl: Duration::from_secs(ttl.max(0) as u64),
                })
            }
            Outcome::Renewal(KeepAliveState::Gone) => {
                self.store.set_leadership(None);
                self.leadership = None;
                self.ctl.seat.on(Event::LeaseGone);
            }
            Outcome::Won(leadership) => {
                let epoch = Epoch(leadership.epoch.max(0) as u64);
                self.store.set_leadership(Some(leadership.clone()));
                self.leadership = Some(leadership);
                self.ctl.seat.on(Event::Won { epoch });
            }
            Outcome::CampaignFailed(why) => {
                tracing::warn!(why, "the campaign failed; campaigning again");
                self.ctl.seat.on(Event::LeaseGone);
            }
        }
    }

    /// Reads the store's revision linearizably and the records as of at least it, so that the
    /// rack built next holds every commit made before the win.
    async fn catch_up(&mut self, epoch: Epoch) -> Result<(), String> {
        let revision = self.revision().await?;
        let loaded = self
            .store
            .loaded_since(revision)
            .await
            .map_err(|e| e.to_string())?;
        self.ready = Some((epoch, loaded));
        Ok(())
    }

    async fn revision(&self) -> Result<i64, String> {
        let resp = self
            .store
            .client()
            .range(torc_kv_client::proto::etcdserverpb::RangeRequest {
                key: self.store.probe_key(),
                count_only: true,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    async fn take_over(&mut self, epoch: Epoch) {
        let loaded = match self.ready.take() {
            Some((e, loaded)) if e == epoch => Ok(loaded),
            // Acting again after a resync: the store as of now.
            _ => match self.revision().await {
                Ok(revision) => self
                    .store
                    .loaded_since(revision)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
        };
        let result = match loaded {
            Ok(loaded) => {
                let ctl = Arc::clone(&self.ctl);
                tokio::task::spawn_blocking(move || ctl.take_over(epoch, loaded))
                    .await
                    .expect("a takeover does not panic")
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(%epoch, error = %e, "the takeover failed; giving up the leadership");
            self.ctl.seat.on(Event::FenceFailed {
                epoch,
                leader: None,
            });
        }
    }

    async fn still_leads(&self, epoch: Epoch) -> Result<bool, String> {
        let Some(leadership) = &self.leadership else {
            return Ok(false);
        };
        let resp = self
            .store
            .client()
            .range(torc_kv_client::proto::etcdserverpb::RangeRequest {
                key: leadership.key.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp
            .kvs
            .first()
            .is_some_and(|kv| kv.create_revision == epoch.0 as i64))
    }

    /// A controller that does not act rebuilds its copy of the rack from its mirror.
    async fn refresh(&self, revision: i64) {
        if self.ctl.acting().is_ok() {
            return;
        }
        let loaded = match self.store.loaded_since(revision).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the standby's copy of the rack");
                return;
            }
        };
        let ctl = Arc::clone(&self.ctl);
        let refreshed = tokio::task::spawn_blocking(move || ctl.refresh(loaded)).await;
        if let Ok(Err(e)) = refreshed {
            tracing::warn!(error = %e, "cannot rebuild the standby's copy of the rack");
        }
    }
}

/// How a controller of several reaches its etcd and introduces itself.
#[derive(Debug, Clone)]
pub struct ElectedOptions {
    /// The etcd members' client URLs.
    pub endpoints: Vec<String>,
    /// The CA etcd's certificates chain to (`https://` endpoints).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (the certificate's CN is the etcd user).
    pub cert: Option<(PathBuf, PathBuf)>,
    /// An etcd user and the file holding its password.
    pub user: Option<(String, PathBuf)>,
    /// Where the rack's state lives (default `/torc-controller/<rack>/`).
    pub prefix: Option<String>,
    /// This controller's name among the rack's.
    pub name: String,
    /// Where agents and clients reach it.
    pub advertise_url: String,
    pub lease_ttl: Duration,
    pub commit_timeout: Duration,
    pub max_request_bytes: usize,
    /// The key that seals rack secrets in etcd (the same file on every controller).
    pub store_key: PathBuf,
    /// Its own directory.
    pub data_dir: PathBuf,
}

impl Controller {
    /// Starts a controller of several on etcd: connects (naming every endpoint it could not
    /// reach, or the one that refused it), mirrors the rack's state, and starts as a standby
    /// that campaigns at once; it acts once it leads and has caught up (`roles`).
    pub fn open_elected(
        settings: RackSettings,
        options: ControllerOptions,
        elected: ElectedOptions,
    ) -> Result<Arc<Controller>, StartError> {
        torc_tls::files::own_private_dir(&elected.data_dir).map_err(|e| StartError::DataDir {
            path: elected.data_dir.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let layout = match &elected.prefix {
            Some(p) => Layout::new(p),
            None => Layout::for_rack(&settings.rack_name),
        }?;
        let mut etcd = EtcdOptions::new(elected.endpoints.clone(), layout.clone());
        if let Some(ca) = &elected.ca {
            let tls = ClientTls::from_files(
                ca,
                elected
                    .cert
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .map_err(|source| StartError::EtcdClient {
                what: "TLS files (--etcd-ca, --etcd-cert, --etcd-key)",
                source,
            })?;
            etcd.tls = Some(tls);
        }
        if let Some((user, file)) = &elected.user {
            let password = read_password_file(file).map_err(|e| StartError::TokenFile {
                path: file.display().to_string(),
                message: e.to_string(),
            })?;
            etcd.credentials = Some(Credentials::new(user.clone(), password));
        }
        etcd.commit_timeout = elected.commit_timeout;
        etcd.max_request_bytes = elected.max_request_bytes;
        etcd.sealer = Some(Arc::new(Sealer::from_file(&elected.store_key)?));
        let store = Arc::new(EtcdStore::connect(etcd.clone())?);
        // Their channels live on the store's runtime.
        let guard = store.handle().enter();
        // One client per member, for the status of each (the store's pins one at a time).
        let members = (elected.endpoints.iter())
            .map(|url| {
                let options = ClientOptions {
                    credentials: etcd.credentials.clone(),
                    tls: etcd.tls.clone(),
                    connect_timeout: Duration::from_secs(1),
                    request_timeout: Some(Duration::from_secs(1)),
                    require_leader: false,
                };
                Client::lazy_endpoints(&[url], options)
                    .map(|c| (url.clone(), c))
                    .map_err(|source| StartError::EtcdClient {
                        what: "endpoint",
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        drop(guard);
        let mirror = Mirror::start(&store);
        let first = mirror.wait_for(1, Duration::from_secs(10))?;
        let (loaded, _) = mirror.loaded_at();
        let (seat, actions) = Elected::new(Timing::default());
        let ctl = Controller::standby(
            settings,
            Box::new(Arc::clone(&store)),
            options,
            loaded,
            Seat::Elected(seat),
            Some((elected.name.clone(), elected.advertise_url.clone())),
        )?;
        ctl.set_backstage(|b| {
            b.store.kind = "etcd".into();
            b.store.location = layout.prefix().to_string();
            b.store.revision = Some(first);
        });
        let electorate = EtcdElectorate {
            store: Arc::clone(&store),
            mirror,
            members,
        };
        let driver = Driver::new(
            Arc::clone(&ctl),
            Arc::new(electorate),
            Campaigner {
                name: elected.name,
                url: elected.advertise_url,
            },
            LeaseTiming {
                ttl: elected.lease_ttl,
                interval: elected.lease_ttl / 4,
            },
        );
        store.handle().spawn(driver.run(actions));
        Ok(ctl)
    }
}

/// The etcd store, its mirror and a client per member: what the driver of a controller of
/// several works with.
struct EtcdElectorate {
    store: Arc<EtcdStore>,
    mirror: Mirror,
    members: Vec<(String, Client)>,
}

impl Electorate for EtcdElectorate {
    fn client(&self) -> &Client {
        self.store.client()
    }

    fn election_prefix(&self) -> Bytes {
        Bytes::from(self.store.layout().election_prefix())
    }

    fn probe_key(&self) -> Bytes {
        Bytes::from(self.store.layout().key(&Key::Format))
    }

    fn set_leadership(&self, leadership: Option<Leadership>) {
        match leadership {
            Some(l) => self.store.lead(l),
            None => {
                self.store.follow();
            }
        }
    }

    async fn loaded_since(&self, revision: i64) -> Result<Loaded, StoreError> {
        // The mirror's revision never goes down: once it is there, its records are as of it
        // or later (decoded only then).
        if self.mirror.revision() >= revision {
            return Ok(self.mirror.loaded());
        }
        // The mirror reaches a revision made outside the prefix only at etcd's next progress
        // report: read the prefix as of now instead (linearizable, so at `revision` or later).
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.load_at().map(|(loaded, _)| loaded))
            .await
            .expect("a load does not panic")
    }

    fn revisions(&self) -> watch::Receiver<i64> {
        self.mirror.revisions()
    }

    fn members(&self) -> &[(String, Client)] {
        &self.members
    }
}

/// Every 2 s: the controllers campaigning (in election order) and each member's status, for
/// `GET /api/v1/controller`.
async fn survey<E: Electorate>(ctl: Arc<Controller>, store: Arc<E>) {
    use torc_api::controller::{ControllerRef, StoreEndpoint};
    use torc_kv_client::proto::etcdserverpb as pb;
    let mut every = tokio::time::interval(Duration::from_secs(2));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let prefix = store.election_prefix();
        let campaigners = store
            .client()
            .range(pb::RangeRequest {
                key: prefix.clone(),
                range_end: Bytes::from(torc_kv_client::prefix_end(&prefix)),
                sort_order: pb::range_request::SortOrder::Ascend as i32,
                sort_target: pb::range_request::SortTarget::Create as i32,
                serializable: true,
                ..Default::default()
            })
            .await;
        let mut endpoints = Vec::new();
        for (url, client) in store.members() {
            let status = tokio::time::timeout(
                Duration::from_secs(1),
                client.call(|c| async move {
                    Ok(c.maintenance()
                        .status(pb::StatusRequest {})
                        .await?
                        .into_inner())
                }),
            )
            .await;
            endpoints.push(match status {
                Ok(Ok(st)) => {
                    let id = st.header.as_ref().map_or(0, |h| h.member_id);
                    StoreEndpoint {
                        url: url.clone(),
                        healthy: st.leader != 0 && st.errors.is_empty(),
                        error: None,
                        member_id: Some(format!("{id:x}")),
                        raft_leader: id != 0 && id == st.leader,
                        raft_term: Some(st.raft_term),
                        version: Some(st.version),
                        db_size: Some(st.db_size),
                        alarms: st.errors,
                    }
                }
                Ok(Err(e)) => unreachable_member(url, e.to_string()),
                Err(_) => unreachable_member(url, "no answer within 1 s".into()),
            });
        }
        let revision = *store.revisions().borrow();
        ctl.set_backstage(|b| {
            if let Ok(found) = &campaigners {
                b.controllers = found
                    .kvs
                    .iter()
                    .map(|kv| {
                        let l = LeaderInfo::from_campaign(
                            &kv.value,
                            Epoch(kv.create_revision.max(0) as u64),
                        );
                        ControllerRef {
                            name: l.name,
                            url: l.url,
                            epoch: l.epoch.0,
                        }
                    })
                    .collect();
            }
            b.store.endpoints = endpoints;
            b.store.revision = Some(revision);
        });
    }
}

fn unreachable_member(url: &str, why: String) -> torc_api::controller::StoreEndpoint {
    torc_api::controller::StoreEndpoint {
        url: url.to_string(),
        healthy: false,
        error: Some(why),
        member_id: None,
        raft_leader: false,
        raft_term: None,
        version: None,
        db_size: None,
        alarms: Vec::new(),
    }
}
