//! `nuaged`: the host daemon. It owns the store of images and volumes, the instance
//! database and the instances' VMM processes, and serves them over the gRPC API
//! ([`crate::api`]) on a Unix socket.

pub mod bundles;
pub mod cgroup;
pub mod cidata;
pub mod compute;
pub mod config;
pub mod describe;
pub mod events;
pub mod images;
pub mod imports;
pub mod instances;
pub mod keypairs;
pub mod metadata;
pub mod network;
pub mod process;
pub mod quotas;
pub mod tags;
pub mod templates;
pub mod volumes;
pub mod watch;

use std::path::Path;
use std::sync::Arc;

use crate::net::plane::{NetworkPlane, PlaneConfig};
use crate::net::NetError;
use crate::state::db::{Database, StateError};
use crate::state::document::DocumentStore;
use crate::state::file::{create_private_dir, make_private};
use crate::store::{Store, StoreError};
use bundles::Bundles;
use config::DaemonConfig;
use events::Events;
use images::Images;
use imports::Imports;
use instances::Instances;
use keypairs::{KeyPairError, KeyPairs};
use network::Network;
use quotas::Admissions;
use tags::Tags;
use templates::LaunchTemplates;
use volumes::Volumes;

/// Crash-test hook: when the environment variable `NUAGE_FAILPOINT` names `point`, the
/// daemon stops at this step for good (after logging it), so a test can kill it exactly
/// there and check what the next start makes of it. Unset, it costs one lookup.
pub(crate) fn failpoint(point: &str) {
    if std::env::var("NUAGE_FAILPOINT").is_ok_and(|wanted| wanted == point) {
        tracing::warn!(point, "failpoint reached: waiting to be killed");
        loop {
            std::thread::park();
        }
    }
}

/// The records named in `ids` (each must exist), or, when none is named, every record.
fn by_ids<T, E>(
    ids: &[String],
    all: impl FnOnce() -> Result<Vec<T>, E>,
    one: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>, DaemonError>
where
    DaemonError: From<E>,
{
    if ids.is_empty() {
        return Ok(all()?);
    }
    ids.iter().map(|id| Ok(one(id)?)).collect()
}

/// Errors of daemon operations. The API maps each to a gRPC code and an EC2 error name, in
/// one table (`api::errors`).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// From the image and volume store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From the instance database.
    #[error(transparent)]
    State(#[from] StateError),
    /// From the network plane.
    #[error(transparent)]
    Net(#[from] NetError),
    /// From the key pairs.
    #[error(transparent)]
    KeyPair(#[from] KeyPairError),
    /// From the launch templates.
    #[error(transparent)]
    Template(#[from] templates::TemplateError),
    /// A malformed request.
    #[error("{0}")]
    InvalidParameter(String),
    /// The resource is not in a state the request can act on.
    #[error("{0}")]
    IncorrectState(String),
    /// The request would break what the resource is (detaching a root volume).
    #[error("{0}")]
    OperationNotPermitted(String),
    /// A limit of the daemon would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// A quota of the host would be exceeded.
    #[error("{1}")]
    QuotaExceeded(quotas::Quota, String),
    /// Something on the host failed.
    #[error("{0}")]
    Internal(String),
}

/// The daemon's services, which the API (and the controllers to come) drive; the store,
/// the database and the network plane sit behind them.
pub struct Daemon {
    /// The configuration.
    pub config: Arc<DaemonConfig>,
    /// Images.
    pub images: Images,
    /// Subnets and Elastic IPs.
    pub network: Network,
    /// The instances.
    pub instances: Instances,
    /// Instance state changes as they happen.
    pub events: Events,
    /// Volumes and snapshots.
    pub volumes: Volumes,
    /// SSH key pairs.
    pub key_pairs: KeyPairs,
    /// Tags on every resource, and the shared Describe.
    pub tags: Tags,
    /// Launch templates.
    pub templates: LaunchTemplates,
    /// Application source bundles.
    pub bundles: Bundles,
    /// Where the controllers keep their desired state, in the daemon's database.
    pub documents: Arc<dyn DocumentStore>,
}

impl Daemon {
    /// Opens the state under the configured directory, finishing whatever a crash
    /// interrupted and adopting running VMMs; returns the daemon and what recovery did.
    pub fn open(config: DaemonConfig) -> Result<(Self, Vec<String>), DaemonError> {
        let dir = config.state_dir.clone();
        let private = create_private_dir(&dir).and_then(|()| make_private(&dir));
        match private.map_err(|e| DaemonError::Internal(format!("{}: {e}", dir.display())))? {
            0 => {}
            repaired => {
                tracing::warn!(state_dir = %dir.display(), repaired, "made files others could read private")
            }
        }
        let (store, report) = Store::open(&dir.join("store"))?;
        let mut actions = report.actions;
        let db = Arc::new(Database::open(&dir.join("nuage.db"))?);
        let network = &config.network;
        let plane_config = PlaneConfig {
            netns: network.netns.clone(),
            uplink: network.uplink.clone(),
            address_pool: network.address_pool.clone(),
        };
        let plane = Arc::new(NetworkPlane::open(&dir.join("network"), plane_config)?);
        let config = Arc::new(config);
        let store = Arc::new(store);
        let events = Events::default();
        let admissions = Arc::new(Admissions::new(config.quotas.clone(), db.clone(), store.clone()));
        let mut instances = Instances::new(
            db.clone(),
            store.clone(),
            plane.clone(),
            db.clone(),
            config.clone(),
            admissions.clone(),
            events.clone(),
        );
        match cgroup::Cgroups::set_up() {
            Ok(cgroups) => instances = instances.with_cgroups(Arc::new(cgroups)),
            Err(why) => tracing::warn!("instances run without cgroup limits: {why}"),
        }
        actions.extend(instances.recover()?);
        let volumes = Volumes::new(db.clone(), store.clone(), db.clone(), config.clone(), admissions);
        let imports = Imports::open(&config.import_dir())
            .map_err(|e| DaemonError::Internal(format!("{}: {e}", config.import_dir().display())))?;
        let images = Images::new(store.clone(), db.clone(), imports);
        let network = Network::new(plane.clone(), db.clone(), db.clone());
        let key_pairs = KeyPairs::new(db.clone(), db.clone());
        let documents: Arc<dyn DocumentStore> = db.clone();
        let bundles = Bundles::new(store.clone());
        let tags = Tags::new(db.clone(), db.clone(), db, store, plane);
        let templates = LaunchTemplates::new(documents.clone(), config.clone());
        Ok((
            Self {
                config,
                images,
                network,
                instances,
                events,
                volumes,
                key_pairs,
                tags,
                templates,
                bundles,
                documents,
            },
            actions,
        ))
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }
}
