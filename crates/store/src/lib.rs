//! Data at rest for every tutela service: one way to connect (SQLite or PostgreSQL by URL), one
//! migrations runner that composes each service's migrator, an injectable clock, leases that let
//! one replica at a time run a job, and the per-subject key vault that makes erasure final
//! (crypto-shredding).

pub mod clock;
pub mod db;
pub mod error;
pub mod lease;
pub mod migration;
pub mod vault;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use db::{Backend, begin, connect, is_unique_violation, placeholders, purge_freed_pages};
pub use error::{StoreError, StoreResult};
pub use lease::{Lease, Leased};
pub use migration::{Migrations, migrate, migrations_of};
pub use vault::{KeyVault, Keyring, StoredKey, SubjectKey, random_secret};
#[cfg(feature = "testing")]
pub mod testing;
