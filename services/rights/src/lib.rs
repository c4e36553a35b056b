//! The rights service: rights requests across a whole deployment (E8, GDPR Art. 12, 15, 17, 18
//! and 20). A request is a durable row ([`entity`]) that staff move through its states
//! ([`requests`], the gRPC service); once under way it has one task per service of the
//! deployment, which the [`coordinator`] carries out through each service's `SubjectData`
//! endpoint, with retries, until it is done or has failed for good. An access request's exports
//! are kept sealed under the subject's key and put together into one archive a person can read
//! ([`assemble`], over [`bundle`]). The service's own records of a person are in [`own`].

pub mod assemble;
pub mod bundle;
pub mod coordinator;
pub mod entity;
mod hosted;
pub mod migration;
pub mod own;
pub mod requests;

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tutela_policy::Register;
use tutela_store::{KeyVault, SharedClock};

pub use migration::RightsMigrator;
pub use own::OwnRights;
pub use requests::RightsRequestService;

/// The service's short name (`--service rights`, health, the vault scope of kept exports).
pub const SERVICE: &str = "rights";

/// What the rights service's parts share.
#[derive(Clone)]
pub struct Rights {
    pub(crate) db: DatabaseConnection,
    pub(crate) vault: KeyVault,
    pub(crate) clock: SharedClock,
    pub(crate) register: Arc<Register>,
    /// The services a request is carried out in, in order.
    pub(crate) services: Arc<[String]>,
}

impl std::fmt::Debug for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rights")
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl Rights {
    /// The parts over `db`, carrying requests out in `services`.
    pub fn new(
        db: DatabaseConnection,
        keyring: Arc<tutela_store::Keyring>,
        clock: SharedClock,
        register: Arc<Register>,
        services: Vec<String>,
    ) -> Self {
        Self {
            vault: KeyVault::new(db.clone(), keyring, SERVICE, clock.clone()),
            db,
            clock,
            register,
            services: services.into(),
        }
    }

    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

/// The service as a `tutela` process hosts it.
pub const HOSTED: &dyn tutela_host::HostedService = &hosted::Hosted;
