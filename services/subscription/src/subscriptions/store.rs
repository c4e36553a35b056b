//! Subscriptions' storage: [`Subscriptions`] and what builds it ([`Parts`]), the sealed contact
//! profile, evidence rows and state transitions, and the consent-ledger append. Separate from
//! the handlers because the RFC 8058 endpoint, the rights provider and the retention sweep use
//! it without the gRPC service.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use tutela_policy::audit::{AuditKeys, AuditLog, StageAudit};
use tutela_policy::consent::ConsentGate;
use tutela_policy::validate::timestamp;
use tutela_policy::{CategorySet, Error, Register, Result, SubjectAccess, Tenant};
use tutela_proto::common::{DataCategory, SubjectRef};
use tutela_proto::subscription::{Channel, OptInEvidence, Subscription};
use tutela_store::{KeyVault, Keyring, SharedClock, SubjectKey};

use super::address::address_field;
use super::entity::{contact, evidence, subscription};
use super::state::{State, channel_name, channel_of};
use crate::SERVICE;
use crate::tokens::Tokens;
use tutela_ledger::{Append, Ledger};

pub(super) const PROFILE_FIELD: &str = "contacts.profile";

/// What a contact's sealed profile holds.
#[derive(Serialize, Deserialize, Default, Clone)]
pub(crate) struct Profile {
    #[serde(default)]
    pub(crate) date_of_birth: String,
    #[serde(default)]
    pub(crate) country: String,
}

/// Subscriptions' storage and rules, shared by the gRPC service, the RFC 8058 endpoint, the
/// rights provider and the retention sweep.
#[derive(Clone)]
pub struct Subscriptions {
    pub(crate) db: DatabaseConnection,
    pub(crate) vault: KeyVault,
    pub(crate) keys: AuditKeys,
    pub(crate) tokens: Tokens,
    pub(crate) clock: SharedClock,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) gate: Arc<ConsentGate>,
    pub(crate) register: Arc<Register>,
    pub(crate) audit: AuditLog,
    /// `https://host` the List-Unsubscribe links point at.
    pub(crate) public_base_url: String,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("vault", &self.vault)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

/// What [`Subscriptions::new`] needs.
pub struct Parts {
    /// The service database (migrated with [`crate::SubscriptionMigrator`]).
    pub db: DatabaseConnection,
    /// Key-encryption keys.
    pub keyring: Arc<Keyring>,
    /// Audit, pseudonym, index and token keys.
    pub audit: AuditLog,
    /// The clock.
    pub clock: SharedClock,
    /// The consent ledger of this process (and the guard's consent gate over it).
    pub ledger: Arc<Ledger>,
    /// The processing register.
    pub register: Arc<Register>,
    /// Where people reach `POST /unsubscribe/{token}`, e.g. `https://news.example.org`.
    pub public_base_url: String,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

/// A subscription row with its address opened.
pub(crate) struct Opened {
    pub(crate) row: subscription::Model,
    pub(crate) address: String,
}

impl Subscriptions {
    /// Subscriptions over `parts`.
    pub fn new(parts: Parts) -> Self {
        let keys = parts.audit.keys().clone();
        Self {
            vault: KeyVault::new(
                parts.db.clone(),
                parts.keyring,
                SERVICE,
                parts.clock.clone(),
            ),
            db: parts.db,
            tokens: Tokens::new(&keys),
            keys,
            clock: parts.clock,
            gate: parts.ledger.gate(),
            ledger: parts.ledger,
            register: parts.register,
            audit: parts.audit,
            public_base_url: parts.public_base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The keyed blind index of a normalised address on `channel` (see [`normalise_address`]).
    pub fn address_index(&self, tenant: &str, channel: Channel, normalised: &str) -> String {
        self.keys.blind_index(
            tenant,
            &format!("subscription.address/{}", channel_name(channel)),
            normalised,
        )
    }

    /// The `List-Unsubscribe` header value (RFC 2369, RFC 8058) for `token`: the unsubscribe
    /// URL in angle brackets. Built by pushing, not `format!`, because an audience builds one
    /// per recipient.
    pub fn list_unsubscribe(&self, token: &str) -> String {
        let path = tutela_policy::methods::UNSUBSCRIBE_PATH;
        let mut header =
            String::with_capacity(self.public_base_url.len() + path.len() + token.len() + 2);
        header.push('<');
        header.push_str(&self.public_base_url);
        header.push_str(path);
        header.push_str(token);
        header.push('>');
        header
    }

    pub(crate) fn to_subscription(row: &subscription::Model, address: String) -> Subscription {
        Subscription {
            subscription_id: row.subscription_id.clone(),
            contact: Some(SubjectRef {
                subject_id: row.contact_id.clone(),
            }),
            channel: channel_of(&row.channel) as i32,
            topic: row.topic.clone(),
            address,
            state: State::of(&row.state).proto() as i32,
            created_at: Some(timestamp(row.created_at)),
            confirmed_at: row.confirmed_at.map(timestamp),
            updated_at: Some(timestamp(row.updated_at)),
        }
    }

    pub(super) fn open_address(key: &SubjectKey, row: &subscription::Model) -> Result<String> {
        Ok(key.open_string(&address_field(&row.subscription_id), &row.sealed_address)?)
    }

    /// The contact's subscriptions, newest first, with addresses opened.
    pub(crate) async fn of_contact(&self, access: &SubjectAccess) -> Result<Vec<Opened>> {
        let rows = access
            .find::<subscription::Entity>()
            .order_by_desc(subscription::Column::Seq)
            .all(&self.db)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.vault.get(access.tenant(), access.subject_id()).await?;
        rows.into_iter()
            .map(|row| {
                let address = Self::open_address(&key, &row)?;
                Ok(Opened { row, address })
            })
            .collect()
    }

    pub(crate) async fn profile(&self, tenant: &Tenant, contact_id: &str) -> Result<Profile> {
        let row = tenant
            .find::<contact::Entity>()
            .filter(contact::Column::ContactId.eq(contact_id))
            .one(&self.db)
            .await?;
        match row {
            Some(row) if !row.sealed_profile.is_empty() => {
                let key = self.vault.get(tenant.as_str(), contact_id).await?;
                let json = key.open(PROFILE_FIELD, &row.sealed_profile)?;
                serde_json::from_slice(&json).map_err(Error::internal)
            }
            _ => Ok(Profile::default()),
        }
    }

    /// Whether the contact is under the age of consent today: `Some(age)` if so.
    pub(super) async fn minor(&self, tenant: &Tenant, contact_id: &str) -> Result<Option<u8>> {
        let profile = self.profile(tenant, contact_id).await?;
        let Ok(born) = NaiveDate::parse_from_str(&profile.date_of_birth, "%Y-%m-%d") else {
            return Ok(None);
        };
        Ok(self
            .register
            .minors
            .minor(born, &profile.country, self.clock.now().date_naive()))
    }

    pub(super) fn evidence_row(
        row: &subscription::Model,
        from: Option<State>,
        to: State,
        method: &str,
        opt_in: Option<&OptInEvidence>,
        recorded_by: &str,
        at: DateTime<Utc>,
    ) -> evidence::ActiveModel {
        evidence::ActiveModel {
            tenant: Set(row.tenant.clone()),
            contact_id: Set(row.contact_id.clone()),
            subscription_id: Set(row.subscription_id.clone()),
            from_state: Set(from.map(State::as_str).unwrap_or_default().to_owned()),
            to_state: Set(to.as_str().to_owned()),
            method: Set(method.to_owned()),
            source: Set(opt_in.map(|e| e.source.clone()).unwrap_or_default()),
            wording_version: Set(opt_in
                .map(|e| e.wording_version.clone())
                .unwrap_or_default()),
            wording_sha256: Set(opt_in.map(|e| e.wording_sha256.clone()).unwrap_or_default()),
            recorded_by: Set(recorded_by.to_owned()),
            occurred_at: Set(at),
            ..Default::default()
        }
    }

    /// Moves `row` to `to` with its evidence and its audit record (staged through `audit`), in
    /// one transaction; `false` if another call moved it first (the update matches the state it
    /// read).
    pub(super) async fn transition(
        &self,
        row: &subscription::Model,
        to: State,
        method: &str,
        opt_in: Option<&OptInEvidence>,
        recorded_by: &str,
        audit: &dyn StageAudit,
    ) -> Result<bool> {
        let now = self.clock.now();
        let txn = tutela_store::begin(&self.db).await?;
        let mut update = subscription::Entity::update_many()
            .col_expr(subscription::Column::State, Expr::value(to.as_str()))
            .col_expr(subscription::Column::UpdatedAt, Expr::value(now))
            .col_expr(
                subscription::Column::CodeHash,
                Expr::value(Option::<String>::None),
            );
        if to == State::Confirmed {
            update = update.col_expr(subscription::Column::ConfirmedAt, Expr::value(now));
        }
        let moved = update
            .filter(subscription::Column::Seq.eq(row.seq))
            .filter(subscription::Column::State.eq(row.state.as_str()))
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        if moved {
            Self::evidence_row(
                row,
                Some(State::of(&row.state)),
                to,
                method,
                opt_in,
                recorded_by,
                now,
            )
            .insert(&txn)
            .await?;
            audit
                .stage_in(&txn, CategorySet::of(&[DataCategory::Communication]))
                .await?;
        }
        txn.commit().await?;
        Ok(moved)
    }

    /// Appends a ledger entry for the contact (the ledger makes this process's guard see it at
    /// once); `audit` stages the entry's audit record in the append's transaction.
    pub(super) async fn append_consent(
        &self,
        tenant: &Tenant,
        append: &Append,
        recorded_by: &str,
        audit: &dyn StageAudit,
    ) -> Result<tutela_proto::consent::ConsentEntry> {
        self.ledger.append(tenant, append, recorded_by, audit).await
    }
}
