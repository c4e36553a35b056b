//! [`Sharing`]: the parts both gRPC services work with, and the look-ups they share.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, QueryFilter};
use tutela_policy::audit::AuditLog;
use tutela_policy::scope::found;
use tutela_policy::validate::Checks;
use tutela_policy::{Authorized, Register, Result};
use tutela_store::{Keyring, SharedClock};

use crate::entity::{partner, partner_key};
use crate::keys::PartnerKeys;

/// The database, keys, audit log, clock and register of the sharing service. Cheap to clone.
#[derive(Clone)]
pub struct Sharing {
    pub(crate) db: DatabaseConnection,
    pub(crate) keys: PartnerKeys,
    pub(crate) audit: AuditLog,
    pub(crate) clock: SharedClock,
    pub(crate) register: Arc<Register>,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing").finish_non_exhaustive()
    }
}

impl Sharing {
    /// The service's parts over `db` (migrated with [`crate::SharingMigrator`]).
    pub fn new(
        db: DatabaseConnection,
        keyring: Arc<Keyring>,
        audit: AuditLog,
        clock: SharedClock,
        register: Arc<Register>,
    ) -> Self {
        Self {
            keys: PartnerKeys::new(db.clone(), keyring, clock.clone()),
            db,
            audit,
            clock,
            register,
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The partner `partner_id` of the caller's tenant, read within `conn`.
    pub(crate) async fn partner<C: ConnectionTrait>(
        &self,
        conn: &C,
        call: &Authorized,
        partner_id: &str,
    ) -> Result<partner::Model> {
        found(
            call.find::<partner::Entity>()
                .filter(partner::Column::PartnerId.eq(partner_id))
                .one(conn)
                .await?,
            "partner",
        )
    }

    /// Locks the partner's row for the rest of `txn` (touching it), so that the writes about one
    /// partner that must not interleave (a key rotation, an agreement's version number, an
    /// activation's overlap check) take turns: PostgreSQL holds the row lock, SQLite the
    /// database's write lock, until the commit. Returns the row; NOT_FOUND outside the tenant.
    pub(crate) async fn lock_partner<C: ConnectionTrait>(
        &self,
        txn: &C,
        call: &Authorized,
        partner_id: &str,
        bump_key_version: bool,
    ) -> Result<partner::Model> {
        let mut update = call
            .update::<partner::Entity>()
            .col_expr(partner::Column::UpdatedAt, Expr::value(self.now()))
            .filter(partner::Column::PartnerId.eq(partner_id));
        if bump_key_version {
            update = update.col_expr(
                partner::Column::KeyVersion,
                Expr::col(partner::Column::KeyVersion).add(1),
            );
        }
        let rows = update.exec_with_returning(txn).await?;
        found(rows.into_iter().next(), "partner")
    }
}

impl Sharing {
    /// The sealed pseudonym key of `version` of the partner, read within `conn`.
    pub(crate) async fn sealed_key<C: ConnectionTrait>(
        &self,
        conn: &C,
        call: &Authorized,
        partner_id: &str,
        version: u32,
    ) -> Result<Vec<u8>> {
        let row = found(
            call.find::<partner_key::Entity>()
                .filter(partner_key::Column::PartnerId.eq(partner_id))
                .filter(partner_key::Column::Version.eq(i32::try_from(version).unwrap_or(0)))
                .one(conn)
                .await?,
            "partner key",
        )?;
        Ok(row.sealed_key)
    }
}

pub(crate) use tutela_policy::validate::time_of;

/// A required id of a record at `field`, as a UUID in its one spelling.
pub(crate) fn record_id(value: &str, field: &str) -> Result<String> {
    let mut c = Checks::new();
    let id = match uuid::Uuid::parse_str(value.trim()) {
        Ok(id) => Ok(id.hyphenated().to_string()),
        Err(_) if value.trim().is_empty() => Err(c.flag(field, "required")),
        Err(_) => Err(c.flag(field, "must be a UUID")),
    };
    c.parsed(id)
}

pub(crate) use tutela_policy::validate::{next_page, page_size};
