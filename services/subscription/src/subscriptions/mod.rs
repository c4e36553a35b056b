//! Subscriptions: `tutela.subscription.v1.SubscriptionService` and the storage behind it.
//!
//! Each subscription is one address's opt-in to one topic by one channel, with its evidence kept
//! append-only beside it. Addresses and dates of birth are sealed under the contact's data key
//! (the same vault scope as the consent ledger's sealed parts, so one erasure shreds both);
//! duplicates and the suppression list are found through keyed blind indexes. Confirming a
//! subscription records a `marketing` grant in the consent ledger, so the guard of every service
//! sees the opt-in; opting out of everything records the withdrawal.

pub mod audience;
pub mod entity;
pub mod http;

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};
use tutela_policy::Precondition;
use tutela_policy::audit::{AuditKeys, AuditLog, StageAudit, TokenCallAudit};
use tutela_policy::consent::{ConsentGate, parse_evidence};
use tutela_policy::error::AuthFailure;
use tutela_policy::token_call::{TOKEN_HOLDER, TokenCall};
use tutela_policy::validate::{Checks, Field, timestamp};
use tutela_policy::{Authorized, CategorySet, Error, Register, Result, SubjectAccess, Tenant};
use tutela_proto::common::{DataCategory, Purpose, SubjectRef};
use tutela_proto::consent::{ConsentActor, ConsentEvidence, ConsentMethod};
use tutela_proto::subscription::subscription_service_server::SubscriptionService as SubscriptionApi;
use tutela_proto::subscription::{
    Channel, ConfirmSubscriptionRequest, ConfirmSubscriptionResponse, EventKind as DeliveryKind,
    ListSubscriptionsRequest, ListSubscriptionsResponse, ListTopicsRequest, ListTopicsResponse,
    OptInEvidence, OptOutKind, OptOutRequest, OptOutResponse, PutTopicRequest, PutTopicResponse,
    RecordEventsRequest, RecordEventsResponse, ResolveAudienceRequest, SubscribeRequest,
    SubscribeResponse, Subscription, SubscriptionState, Topic, UnsubscribeRequest,
    UnsubscribeResponse,
};
use tutela_store::{KeyVault, Keyring, SharedClock, SubjectKey};
use uuid::Uuid;

use crate::SERVICE;
use crate::tokens::{TokenError, Tokens};
use entity::{contact, event, evidence, subscription, suppression, topic};
use tutela_ledger::{Append, Ledger};

/// How long a confirmation token (email, post) is valid.
pub const TOKEN_VALIDITY: chrono::Duration = chrono::Duration::days(7);
/// How long a confirmation code (SMS, phone) is valid.
pub const CODE_VALIDITY: chrono::Duration = chrono::Duration::hours(1);
/// Wrong codes before a code is void.
pub const MAX_CODE_ATTEMPTS: i32 = 5;
/// The RFC 8058 POST body.
pub const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

const PROFILE_FIELD: &str = "contacts.profile";

/// A subscription's state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for confirmation.
    Pending,
    /// Opted in.
    Confirmed,
    /// Opted out.
    Unsubscribed,
    /// Hard bounce or complaint.
    Suppressed,
}

impl State {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Unsubscribed => "unsubscribed",
            Self::Suppressed => "suppressed",
        }
    }

    fn of(name: &str) -> Self {
        match name {
            "confirmed" => Self::Confirmed,
            "unsubscribed" => Self::Unsubscribed,
            "suppressed" => Self::Suppressed,
            _ => Self::Pending,
        }
    }

    fn proto(self) -> SubscriptionState {
        match self {
            Self::Pending => SubscriptionState::Pending,
            Self::Confirmed => SubscriptionState::Confirmed,
            Self::Unsubscribed => SubscriptionState::Unsubscribed,
            Self::Suppressed => SubscriptionState::Suppressed,
        }
    }
}

/// A channel's stored name.
pub fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Email => "email",
        Channel::Sms => "sms",
        Channel::Phone => "phone",
        Channel::Post => "post",
        Channel::Unspecified => "unspecified",
    }
}

fn channel_of(name: &str) -> Channel {
    match name {
        "email" => Channel::Email,
        "sms" => Channel::Sms,
        "phone" => Channel::Phone,
        "post" => Channel::Post,
        _ => Channel::Unspecified,
    }
}

fn kind_name(k: DeliveryKind) -> &'static str {
    match k {
        DeliveryKind::Delivered => "delivered",
        DeliveryKind::Opened => "opened",
        DeliveryKind::Clicked => "clicked",
        DeliveryKind::Forwarded => "forwarded",
        DeliveryKind::SoftBounce => "soft_bounce",
        DeliveryKind::HardBounce => "hard_bounce",
        DeliveryKind::Complaint => "complaint",
        DeliveryKind::Unspecified => "unspecified",
    }
}

/// The sealed field of a subscription's address: bound to the row.
pub fn address_field(subscription_id: &str) -> String {
    format!("subscriptions.address/{subscription_id}")
}

/// The normalised form of an address for `channel`, or what is wrong with it (never repeating
/// the value).
pub fn normalise_address(
    channel: Channel,
    address: &str,
) -> std::result::Result<String, &'static str> {
    let address = address.trim();
    if address.is_empty() {
        return Err("required");
    }
    match channel {
        Channel::Email => {
            let email = address.to_lowercase();
            if email.len() <= 254 && tutela_policy::validate::is_email(&email) {
                Ok(email)
            } else {
                Err("not an email address")
            }
        }
        Channel::Sms | Channel::Phone => {
            let mut number = String::with_capacity(address.len());
            for (i, ch) in address.chars().enumerate() {
                match ch {
                    '0'..='9' => number.push(ch),
                    '+' if i == 0 => number.push(ch),
                    ' ' | '-' | '(' | ')' | '.' => {}
                    _ => return Err("a phone number: digits, spaces and + - ( ) . only"),
                }
            }
            let digits = number.trim_start_matches('+').len();
            if (5..=20).contains(&digits) {
                Ok(number)
            } else {
                Err("a phone number of 5 to 20 digits")
            }
        }
        Channel::Post => {
            let post = address.split_whitespace().collect::<Vec<_>>().join(" ");
            if post.chars().count() > 500 {
                Err("at most 500 characters")
            } else {
                Ok(post)
            }
        }
        Channel::Unspecified => Err("the channel is not set"),
    }
}

/// What a contact's sealed profile holds.
#[derive(Serialize, Deserialize, Default, Clone)]
pub(crate) struct Profile {
    #[serde(default)]
    pub(crate) date_of_birth: String,
    #[serde(default)]
    pub(crate) country: String,
}

fn valid_topic_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks an opt-in's evidence at `field`.
fn check_opt_in(c: &mut Checks, e: Option<&OptInEvidence>, field: &str) -> Field<OptInEvidence> {
    let Some(e) = e else {
        return Err(c.flag(
            field,
            "required: where and with which wording the person acted",
        ));
    };
    let before = c.len();
    c.required_text(&e.source, &format!("{field}.source"), 128);
    c.required_text(&e.wording_version, &format!("{field}.wording_version"), 64);
    let sha = e.wording_sha256.trim();
    c.wording_sha256(sha, &format!("{field}.wording_sha256"));
    c.clean_since(before, || OptInEvidence {
        source: e.source.trim().to_owned(),
        wording_version: e.wording_version.trim().to_owned(),
        wording_sha256: sha.to_owned(),
    })
}

/// A channel field that must be set.
fn check_channel(c: &mut Checks, value: i32, field: &str) -> Field<Channel> {
    match Channel::try_from(value) {
        Ok(Channel::Unspecified) | Err(_) => Err(c.flag(
            field,
            "required: a channel of tutela.subscription.v1.Channel",
        )),
        Ok(ch) => Ok(ch),
    }
}

/// Constant-time equality of two short strings (stored code hashes).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A six-digit code from the operating system's random source (through UUID v4).
fn six_digits() -> String {
    let bytes = Uuid::new_v4().into_bytes();
    let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) % 1_000_000;
    format!("{n:06}")
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

    fn open_address(key: &SubjectKey, row: &subscription::Model) -> Result<String> {
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
    async fn minor(&self, tenant: &Tenant, contact_id: &str) -> Result<Option<u8>> {
        let profile = self.profile(tenant, contact_id).await?;
        let Ok(born) = NaiveDate::parse_from_str(&profile.date_of_birth, "%Y-%m-%d") else {
            return Ok(None);
        };
        Ok(self
            .register
            .minors
            .minor(born, &profile.country, self.clock.now().date_naive()))
    }

    fn evidence_row(
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
    async fn transition(
        &self,
        row: &subscription::Model,
        to: State,
        method: &str,
        opt_in: Option<&OptInEvidence>,
        recorded_by: &str,
        audit: &dyn StageAudit,
    ) -> Result<bool> {
        let now = self.clock.now();
        let txn = self.db.begin().await?;
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

    /// The token resolved to `row`: the call's audit record names its contact (by pseudonym)
    /// and its writes stage their records through the returned handle; the guard writes the
    /// record itself once the call is done.
    fn token_resolved(
        call: &TokenCall,
        row: &subscription::Model,
        note: &'static str,
    ) -> Arc<TokenCallAudit> {
        call.resolved(
            &row.tenant,
            &row.contact_id,
            CategorySet::of(&[DataCategory::Communication]),
            note,
        )
    }

    /// One-click unsubscribe with a token: the gRPC call and the RFC 8058 POST both come here.
    /// Returns the subscription id, its state after the call, and whether the call changed it.
    /// `call` is the guard's record of the call (the handler reports what it resolved and why it
    /// refused).
    pub async fn unsubscribe_with_token(
        &self,
        token: &str,
        call: &TokenCall,
    ) -> Result<(String, State, bool)> {
        call.for_purpose(Purpose::ConsentManagement);
        let outcome = self.unsubscribe_resolved(token, call).await;
        if let Err(err) = &outcome {
            call.refused(err);
        }
        outcome
    }

    async fn unsubscribe_resolved(
        &self,
        token: &str,
        call: &TokenCall,
    ) -> Result<(String, State, bool)> {
        let found = match self.tokens.check_unsubscribe(token) {
            Ok(id) => subscription::Entity::find()
                .filter(subscription::Column::SubscriptionId.eq(id.to_string()))
                .one(&self.db)
                .await?
                .ok_or(Error::NotFound("subscription")),
            Err(_) => Err(Error::Unauthenticated(AuthFailure::Invalid)),
        };
        let row = found?;
        let audit = Self::token_resolved(call, &row, "unsubscribed");
        let state = State::of(&row.state);
        let changed = match state {
            State::Pending | State::Confirmed => {
                self.transition(
                    &row,
                    State::Unsubscribed,
                    "one_click",
                    None,
                    TOKEN_HOLDER,
                    &*audit,
                )
                .await?
            }
            State::Unsubscribed | State::Suppressed => false,
        };
        let after = match state {
            State::Pending | State::Confirmed if changed => State::Unsubscribed,
            // Another call moved it first (an unsubscribe, or a bounce that suppressed it):
            // answer with where it stands now. Rare, so the extra read costs nothing.
            State::Pending | State::Confirmed => subscription::Entity::find_by_id(row.seq)
                .one(&self.db)
                .await?
                .map_or(State::Unsubscribed, |r| State::of(&r.state)),
            other => other,
        };
        if !changed {
            call.noted("already unsubscribed");
        }
        if changed {
            tracing::info!(channel = %row.channel, "unsubscribed by token");
        }
        Ok((row.subscription_id, after, changed))
    }

    /// Appends a ledger entry for the contact (the ledger makes this process's guard see it at
    /// once); `audit` stages the entry's audit record in the append's transaction.
    async fn append_consent(
        &self,
        tenant: &Tenant,
        append: &Append,
        recorded_by: &str,
        audit: &dyn StageAudit,
    ) -> Result<tutela_proto::consent::ConsentEntry> {
        self.ledger.append(tenant, append, recorded_by, audit).await
    }
}

/// `tutela.subscription.v1.SubscriptionService`.
#[derive(Debug, Clone)]
pub struct SubscriptionService {
    subs: Subscriptions,
}

impl SubscriptionService {
    /// The service over `subs`.
    pub fn new(subs: Subscriptions) -> Self {
        Self { subs }
    }

    async fn contact_access(
        call: &Authorized,
        contact: Option<&SubjectRef>,
    ) -> Result<SubjectAccess> {
        let mut c = Checks::new();
        let id = c.subject(contact, "contact");
        call.subject(&c.parsed(id)?).await
    }

    /// Confirms `row` after its token or code was checked.
    async fn confirm(
        &self,
        row: subscription::Model,
        method: &str,
        opt_in: &OptInEvidence,
        audit: &TokenCallAudit,
    ) -> Result<ConfirmSubscriptionResponse> {
        let s = &self.subs;
        match State::of(&row.state) {
            State::Confirmed => {
                return Ok(ConfirmSubscriptionResponse {
                    subscription_id: row.subscription_id,
                    state: SubscriptionState::Confirmed as i32,
                    confirmed_at: row.confirmed_at.map(timestamp),
                });
            }
            State::Unsubscribed | State::Suppressed => {
                return Err(Error::FailedPrecondition {
                    reason: Precondition::SubscriptionNotPending,
                    message:
                        "the subscription is no longer waiting for confirmation; subscribe again"
                            .into(),
                });
            }
            State::Pending => {}
        }
        // C5: a minor's opt-in counts only with a guardian's consent to marketing. The row was
        // found by the id the verified token names: its tenant scopes the rest of the call.
        let tenant = Tenant::of_row(&row)?;
        if let Some(age_of_consent) = s.minor(&tenant, &row.contact_id).await?
            && !s
                .gate
                .snapshot(&tenant, &row.contact_id)
                .await?
                .guardian_permits(Purpose::Marketing)
        {
            return Err(Error::GuardianConsentRequired {
                purpose: Purpose::Marketing.short_name(),
                age_of_consent,
            });
        }
        // The ledger first: a failure leaves the subscription pending, never confirmed without
        // the grant the other services' guards read.
        let consent = Append {
            subject: row.contact_id.clone(),
            purpose: Purpose::Marketing,
            recipient: String::new(),
            granted: true,
            evidence: ConsentEvidence {
                method: if row.channel == "email" {
                    ConsentMethod::Email
                } else {
                    ConsentMethod::WebForm
                } as i32,
                wording_version: opt_in.wording_version.clone(),
                wording_sha256: opt_in.wording_sha256.clone(),
                evidence_reference: format!(
                    "subscription {} confirmed at {}",
                    row.subscription_id, opt_in.source
                ),
                actor: ConsentActor::Subject as i32,
                guardian: None,
            },
            occurred_at: None,
            idempotency: None,
        };
        s.append_consent(&tenant, &consent, TOKEN_HOLDER, audit)
            .await?;
        s.transition(
            &row,
            State::Confirmed,
            method,
            Some(opt_in),
            TOKEN_HOLDER,
            audit,
        )
        .await?;
        let row = subscription::Entity::find_by_id(row.seq)
            .one(&s.db)
            .await?
            .ok_or(Error::NotFound("subscription"))?;
        tracing::info!(channel = %row.channel, method, "subscription confirmed");
        Ok(ConfirmSubscriptionResponse {
            subscription_id: row.subscription_id,
            state: State::of(&row.state).proto() as i32,
            confirmed_at: row.confirmed_at.map(timestamp),
        })
    }

    async fn checked_confirmation(
        &self,
        r: &ConfirmSubscriptionRequest,
    ) -> Result<(subscription::Model, &'static str, OptInEvidence)> {
        let s = &self.subs;
        let mut c = Checks::new();
        let token = r.token.trim();
        let id = r.subscription_id.trim();
        let code = r.code.trim();
        match (token.is_empty(), id.is_empty() || code.is_empty()) {
            (false, true) => {}
            (true, false) => {
                c.ensure(
                    Uuid::parse_str(id).is_ok(),
                    "subscription_id",
                    "must be a UUID",
                );
                c.ensure(
                    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
                    "code",
                    "six digits",
                );
            }
            _ => c.fail(
                "token",
                "send either the confirmation token, or the subscription id with its code",
            ),
        }
        let opt_in = check_opt_in(&mut c, r.evidence.as_ref(), "evidence");
        let opt_in = c.parsed(opt_in)?;
        let now = s.clock.now();
        if !token.is_empty() {
            let id = s
                .tokens
                .check_confirmation(token, now)
                .map_err(|e| match e {
                    TokenError::Invalid => Error::Unauthenticated(AuthFailure::Invalid),
                    TokenError::Expired => Error::Unauthenticated(AuthFailure::Expired),
                })?;
            let row = subscription::Entity::find()
                .filter(subscription::Column::SubscriptionId.eq(id.to_string()))
                .one(&s.db)
                .await?
                .ok_or(Error::NotFound("subscription"))?;
            return Ok((row, "email_token", opt_in));
        }
        let row = subscription::Entity::find()
            .filter(subscription::Column::SubscriptionId.eq(id))
            .one(&s.db)
            .await?
            // As a wrong code: the id alone must not tell whether a subscription exists.
            .ok_or(Error::Unauthenticated(AuthFailure::Invalid))?;
        if State::of(&row.state) == State::Confirmed {
            return Ok((row, "code", opt_in));
        }
        let Some(hash) = row.code_hash.as_deref() else {
            return Err(Error::Unauthenticated(AuthFailure::Invalid));
        };
        if row.code_attempts >= MAX_CODE_ATTEMPTS {
            return Err(Error::Unauthenticated(AuthFailure::Invalid));
        }
        if row.confirm_expires_at.is_some_and(|at| at < now) {
            return Err(Error::Unauthenticated(AuthFailure::Expired));
        }
        let uuid = Uuid::parse_str(&row.subscription_id).map_err(Error::internal)?;
        if !same(hash, &s.tokens.code_hash(uuid, code)) {
            subscription::Entity::update_many()
                .col_expr(
                    subscription::Column::CodeAttempts,
                    Expr::col(subscription::Column::CodeAttempts).add(1),
                )
                .filter(subscription::Column::Seq.eq(row.seq))
                .exec(&s.db)
                .await?;
            return Err(Error::Unauthenticated(AuthFailure::Invalid));
        }
        Ok((row, "code", opt_in))
    }
}

/// A subscribe request, checked.
struct SubscribeInput {
    contact: Option<String>,
    channel: Channel,
    topic: String,
    address: String,
    normalised: String,
    profile: Profile,
    opt_in: OptInEvidence,
}

fn check_subscribe(r: &SubscribeRequest, today: NaiveDate) -> Result<SubscribeInput> {
    let mut c = Checks::new();
    let contact = match r.contact.as_ref().map(|s| s.subject_id.trim()) {
        None | Some("") => None,
        Some(id) => match Uuid::parse_str(id) {
            Ok(id) => Some(id.to_string()),
            Err(_) => {
                c.fail(
                    "contact.subject_id",
                    "must be a UUID, or empty for a new contact",
                );
                None
            }
        },
    };
    let channel = check_channel(&mut c, r.channel, "channel");
    let topic = r.topic.trim();
    c.ensure(
        valid_topic_id(topic),
        "topic",
        "required: a topic id of [a-z0-9_], at most 64",
    );
    // The address is checked by its channel's rule, so only once the channel parsed.
    let addressed = channel.and_then(|ch| {
        normalise_address(ch, &r.address)
            .map(|normalised| (ch, normalised))
            .map_err(|why| c.flag("address", why))
    });
    let date_of_birth = r.date_of_birth.trim();
    c.date_of_birth(date_of_birth, "date_of_birth", today);
    let country = r.country.trim();
    c.country(country, "country");
    let opt_in = check_opt_in(&mut c, r.evidence.as_ref(), "evidence");
    let ((channel, normalised), opt_in) = c.parsed((addressed, opt_in))?;
    Ok(SubscribeInput {
        contact,
        channel,
        topic: topic.to_owned(),
        address: r.address.trim().to_owned(),
        normalised,
        profile: Profile {
            date_of_birth: date_of_birth.to_owned(),
            country: country.to_owned(),
        },
        opt_in,
    })
}

impl SubscriptionService {
    /// Stores the contact (or updates its profile) and the pending subscription.
    async fn subscribe(
        &self,
        call: &Authorized,
        input: SubscribeInput,
    ) -> Result<SubscribeResponse> {
        let s = &self.subs;
        let tenant = call.tenant();
        if call
            .find::<topic::Entity>()
            .filter(topic::Column::TopicId.eq(input.topic.as_str()))
            .one(&s.db)
            .await?
            .is_none()
        {
            return Err(Error::InvalidArgument(vec![
                tutela_policy::error::Violation::new(
                    "topic",
                    "not a topic of this tenant; define it with PutTopic",
                ),
            ]));
        }
        let index = s.address_index(tenant, input.channel, &input.normalised);
        let channel = channel_name(input.channel);
        if call
            .find::<suppression::Entity>()
            .filter(suppression::Column::Channel.eq(channel))
            .filter(suppression::Column::AddressIndex.eq(index.as_str()))
            .one(&s.db)
            .await?
            .is_some()
        {
            return Err(Error::FailedPrecondition {
                reason: Precondition::AddressSuppressed,
                message: "this address is on the suppression list (a hard bounce, a complaint or an erasure) and cannot be subscribed".into(),
            });
        }
        // The address's other subscriptions on this channel name its contact.
        let same_address = call
            .find::<subscription::Entity>()
            .filter(subscription::Column::Channel.eq(channel))
            .filter(subscription::Column::AddressIndex.eq(index.as_str()))
            .all(&s.db)
            .await?;
        let owner = same_address.first().map(|r| r.contact_id.clone());
        let contact_id = match (&input.contact, owner) {
            (Some(given), Some(owner)) if *given != owner => {
                return Err(Error::AlreadyExists(
                    "subscription for this address under another contact",
                ));
            }
            (Some(given), _) => given.clone(),
            (None, Some(owner)) => owner,
            (None, None) => Uuid::new_v4().to_string(),
        };
        let access = call.subject(&contact_id).await?;
        let now = s.clock.now();
        let existing = same_address.into_iter().find(|r| r.topic == input.topic);
        if let Some(row) = &existing
            && State::of(&row.state) == State::Confirmed
        {
            access.record_response();
            let key = s.vault.get(tenant, &contact_id).await?;
            let address = Subscriptions::open_address(&key, row)?;
            return Ok(SubscribeResponse {
                subscription: Some(Subscriptions::to_subscription(row, address)),
                ..Default::default()
            });
        }
        let key = s.vault.get_or_create(tenant, &contact_id).await?;
        let (id, uuid) = match &existing {
            Some(row) => (
                row.subscription_id.clone(),
                Uuid::parse_str(&row.subscription_id).map_err(Error::internal)?,
            ),
            None => {
                let uuid = Uuid::now_v7();
                (uuid.to_string(), uuid)
            }
        };
        let by_code = matches!(input.channel, Channel::Sms | Channel::Phone);
        // Whole seconds: the token carries its expiry in seconds, and must match the row's.
        let expires = DateTime::from_timestamp(
            (now + if by_code {
                CODE_VALIDITY
            } else {
                TOKEN_VALIDITY
            })
            .timestamp(),
            0,
        )
        .ok_or_else(|| Error::internal("expiry out of range"))?;
        let code = by_code.then(six_digits);
        let code_hash = code.as_deref().map(|c| s.tokens.code_hash(uuid, c));
        let sealed = key.seal(&address_field(&id), input.address.as_bytes())?;
        let has_profile =
            !input.profile.date_of_birth.is_empty() || !input.profile.country.is_empty();
        let sealed_profile = if has_profile {
            let json = serde_json::to_vec(&input.profile).map_err(Error::internal)?;
            Some(key.seal(PROFILE_FIELD, &json)?)
        } else {
            None
        };
        // Writes only, the first one at once: on SQLite a transaction that reads first cannot
        // become a writer once another connection has committed (SQLITE_BUSY_SNAPSHOT, which no
        // busy timeout waits out).
        let txn = s.db.begin().await?;
        contact::Entity::insert(contact::ActiveModel {
            tenant: Set(tenant.to_owned()),
            contact_id: Set(contact_id.clone()),
            sealed_profile: Set(sealed_profile.clone().unwrap_or_default()),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .on_conflict(
            OnConflict::columns([contact::Column::Tenant, contact::Column::ContactId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        if let Some(sealed_profile) = sealed_profile {
            access
                .update::<contact::Entity>()
                .col_expr(contact::Column::SealedProfile, Expr::value(sealed_profile))
                .col_expr(contact::Column::UpdatedAt, Expr::value(now))
                .exec(&txn)
                .await?;
        }
        let row = match existing {
            Some(row) => {
                let from = State::of(&row.state);
                let mut active: subscription::ActiveModel = row.into();
                active.state = Set(State::Pending.as_str().to_owned());
                active.sealed_address = Set(sealed);
                active.code_hash = Set(code_hash);
                active.confirm_expires_at = Set(Some(expires));
                active.code_attempts = Set(0);
                active.updated_at = Set(now);
                active.key_seq = Set(Some(key.handle()));
                let row = active.update(&txn).await?;
                Subscriptions::evidence_row(
                    &row,
                    Some(from),
                    State::Pending,
                    "sign_up",
                    Some(&input.opt_in),
                    &call.principal().id,
                    now,
                )
                .insert(&txn)
                .await?;
                row
            }
            None => {
                let row = subscription::ActiveModel {
                    subscription_id: Set(id.clone()),
                    tenant: Set(tenant.to_owned()),
                    contact_id: Set(contact_id.clone()),
                    channel: Set(channel.to_owned()),
                    topic: Set(input.topic.clone()),
                    state: Set(State::Pending.as_str().to_owned()),
                    sealed_address: Set(sealed),
                    address_index: Set(index),
                    code_hash: Set(code_hash),
                    confirm_expires_at: Set(Some(expires)),
                    code_attempts: Set(0),
                    created_at: Set(now),
                    confirmed_at: Set(None),
                    updated_at: Set(now),
                    key_seq: Set(Some(key.handle())),
                    ..Default::default()
                }
                .insert(&txn)
                .await
                .map_err(|err| {
                    if tutela_store::is_unique_violation(&err) {
                        // A concurrent sign-up of the same address: the client's retry finds it.
                        Error::Unavailable("a concurrent sign-up of this address; retry".into())
                    } else {
                        err.into()
                    }
                })?;
                Subscriptions::evidence_row(
                    &row,
                    None,
                    State::Pending,
                    "sign_up",
                    Some(&input.opt_in),
                    &call.principal().id,
                    now,
                )
                .insert(&txn)
                .await?;
                row
            }
        };
        let mut touched = CategorySet::of(&[
            DataCategory::Identity,
            DataCategory::Contact,
            DataCategory::Communication,
        ]);
        if has_profile {
            touched.insert(DataCategory::Demographic);
        }
        access.record_in(&txn, touched).await?;
        txn.commit().await?;
        tracing::info!(channel, "subscription pending confirmation");
        Ok(SubscribeResponse {
            subscription: Some(Subscriptions::to_subscription(&row, input.address)),
            confirmation_token: if by_code {
                String::new()
            } else {
                s.tokens.confirmation(uuid, expires)
            },
            confirmation_code: code.unwrap_or_default(),
            confirmation_expires_at: Some(timestamp(expires)),
        })
    }

    async fn opt_out(&self, call: &Authorized, r: &OptOutRequest) -> Result<OptOutResponse> {
        let s = &self.subs;
        let mut c = Checks::new();
        let kind = match OptOutKind::try_from(r.kind) {
            Ok(OptOutKind::Unspecified) | Err(_) => {
                c.fail(
                    "kind",
                    "required: an opt-out of tutela.subscription.v1.OptOutKind",
                );
                None
            }
            Ok(k) => Some(k),
        };
        let channel = match Channel::try_from(r.channel) {
            Ok(ch) => ch,
            Err(_) => {
                c.fail("channel", "not a channel of tutela.subscription.v1.Channel");
                Channel::Unspecified
            }
        };
        let topic = r.topic.trim();
        c.ensure(
            topic.is_empty() || valid_topic_id(topic),
            "topic",
            "a topic id of [a-z0-9_], at most 64",
        );
        let recipient = c
            .optional_text(&r.recipient, "recipient", 128)
            .unwrap_or_default()
            .to_owned();
        let purpose = match kind {
            Some(OptOutKind::Purpose) => match Purpose::try_from(r.purpose) {
                Ok(Purpose::Unspecified) | Err(_) => {
                    c.fail(
                        "purpose",
                        "required: the purpose whose consent is withdrawn",
                    );
                    None
                }
                Ok(p) if !s.register.rule(p).is_some_and(|rule| rule.consent_required) => {
                    c.fail(
                        "purpose",
                        "the processing register does not base this purpose on consent",
                    );
                    None
                }
                Ok(p) => Some(p),
            },
            Some(OptOutKind::ThirdPartyDisclosure) => Some(Purpose::ThirdPartyDisclosure),
            Some(OptOutKind::Communications) => {
                (channel == Channel::Unspecified && topic.is_empty()).then_some(Purpose::Marketing)
            }
            _ => None,
        };
        if kind != Some(OptOutKind::Communications) {
            c.ensure(
                channel == Channel::Unspecified && topic.is_empty(),
                "channel",
                "only for an opt-out from communications",
            );
        }
        let evidence = parse_evidence(&mut c, call.principal(), r.evidence.as_ref(), "evidence");
        let evidence = c.parsed(evidence)?;
        let access = Self::contact_access(call, r.contact.as_ref()).await?;
        let mut unsubscribed = 0u32;
        if kind == Some(OptOutKind::Communications) {
            let mut query = access.find::<subscription::Entity>().filter(
                subscription::Column::State
                    .is_in([State::Pending.as_str(), State::Confirmed.as_str()]),
            );
            if channel != Channel::Unspecified {
                query = query.filter(subscription::Column::Channel.eq(channel_name(channel)));
            }
            if !topic.is_empty() {
                query = query.filter(subscription::Column::Topic.eq(topic));
            }
            for row in query.all(&s.db).await? {
                if s.transition(
                    &row,
                    State::Unsubscribed,
                    "opt_out",
                    None,
                    &call.principal().id,
                    &access,
                )
                .await?
                {
                    unsubscribed += 1;
                }
            }
        }
        let withdrawal = match purpose {
            None => None,
            Some(purpose) => {
                let append = Append {
                    subject: access.subject_id().to_owned(),
                    purpose,
                    recipient: if purpose == Purpose::Marketing {
                        String::new()
                    } else {
                        recipient
                    },
                    granted: false,
                    evidence,
                    occurred_at: None,
                    idempotency: None,
                };
                Some(
                    s.append_consent(call.scope(), &append, &call.principal().id, &access)
                        .await?,
                )
            }
        };
        access.record_response();
        tracing::info!(
            unsubscribed,
            withdrew = withdrawal.is_some(),
            "opt-out recorded"
        );
        Ok(OptOutResponse {
            subscriptions_unsubscribed: unsubscribed,
            withdrawal,
        })
    }

    async fn record_events(
        &self,
        call: &Authorized,
        r: &RecordEventsRequest,
    ) -> Result<RecordEventsResponse> {
        let s = &self.subs;
        let mut c = Checks::new();
        c.ensure(
            (1..=1000).contains(&r.events.len()),
            "events",
            "between 1 and 1000 events",
        );
        let now = s.clock.now();
        let mut checked = Vec::with_capacity(r.events.len());
        for (i, e) in r.events.iter().enumerate() {
            let id = Uuid::parse_str(e.subscription_id.trim()).ok();
            c.ensure(
                id.is_some(),
                &format!("events[{i}].subscription_id"),
                "must be a UUID",
            );
            c.required_text(&e.message_id, &format!("events[{i}].message_id"), 256);
            let kind = match DeliveryKind::try_from(e.kind) {
                Ok(DeliveryKind::Unspecified) | Err(_) => {
                    c.fail(
                        format!("events[{i}].kind"),
                        "required: an event of tutela.subscription.v1.EventKind",
                    );
                    None
                }
                Ok(k) => Some(k),
            };
            let at = match &e.occurred_at {
                None => Some(now),
                Some(ts) => match u32::try_from(ts.nanos)
                    .ok()
                    .and_then(|n| DateTime::from_timestamp(ts.seconds, n))
                {
                    Some(at) if at <= now + chrono::Duration::seconds(60) => Some(at),
                    _ => {
                        c.fail(
                            format!("events[{i}].occurred_at"),
                            "a valid time, not in the future",
                        );
                        None
                    }
                },
            };
            if let (Some(id), Some(kind), Some(at)) = (id, kind, at) {
                checked.push((id.to_string(), e.message_id.trim().to_owned(), kind, at));
            }
        }
        c.finish()?;
        let tenant = call.tenant();
        let ids: Vec<&str> = checked.iter().map(|(id, ..)| id.as_str()).collect();
        let rows = call
            .find::<subscription::Entity>()
            .filter(subscription::Column::SubscriptionId.is_in(ids))
            .all(&s.db)
            .await?;
        let by_id: std::collections::HashMap<&str, &subscription::Model> = rows
            .iter()
            .map(|r| (r.subscription_id.as_str(), r))
            .collect();
        let mut recorded = 0u32;
        let mut suppressed = 0u32;
        let txn = s.db.begin().await?;
        for (id, message_id, kind, at) in &checked {
            // An erased contact's subscription is gone: its events are not kept.
            let Some(row) = by_id.get(id.as_str()) else {
                continue;
            };
            event::ActiveModel {
                tenant: Set(tenant.to_owned()),
                contact_id: Set(row.contact_id.clone()),
                subscription_id: Set(row.subscription_id.clone()),
                message_id: Set(message_id.clone()),
                kind: Set(kind_name(*kind).to_owned()),
                occurred_at: Set(*at),
                recorded_at: Set(now),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
            recorded += 1;
            if matches!(kind, DeliveryKind::HardBounce | DeliveryKind::Complaint) {
                suppressed +=
                    suppress(&txn, row, kind_name(*kind), &call.principal().id, now).await?;
            }
        }
        let summary = s
            .audit
            .summarise_in(
                &txn,
                call,
                CategorySet::of(&[DataCategory::Communication]),
                format!("events recorded: {recorded}; subscriptions suppressed: {suppressed}"),
            )
            .await?;
        txn.commit().await?;
        summary.append().await?;
        Ok(RecordEventsResponse {
            recorded,
            suppressed,
        })
    }
}

/// Puts `row`'s address on the suppression list and suppresses every subscription of it on the
/// channel; returns how many subscriptions changed.
pub(crate) async fn suppress<C: sea_orm::ConnectionTrait>(
    db: &C,
    row: &subscription::Model,
    reason: &str,
    recorded_by: &str,
    now: DateTime<Utc>,
) -> Result<u32> {
    // The first suppression of an address keeps its reason; later ones change nothing.
    suppression::Entity::insert(suppression::ActiveModel {
        tenant: Set(row.tenant.clone()),
        channel: Set(row.channel.clone()),
        address_index: Set(row.address_index.clone()),
        reason: Set(reason.to_owned()),
        created_at: Set(now),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::columns([
            suppression::Column::Tenant,
            suppression::Column::Channel,
            suppression::Column::AddressIndex,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    let affected = Tenant::of_row(row)?
        .find::<subscription::Entity>()
        .filter(subscription::Column::Channel.eq(row.channel.as_str()))
        .filter(subscription::Column::AddressIndex.eq(row.address_index.as_str()))
        .filter(subscription::Column::State.ne(State::Suppressed.as_str()))
        .all(db)
        .await?;
    let mut changed = 0;
    for other in affected {
        subscription::Entity::update_many()
            .col_expr(
                subscription::Column::State,
                Expr::value(State::Suppressed.as_str()),
            )
            .col_expr(subscription::Column::UpdatedAt, Expr::value(now))
            .filter(subscription::Column::Seq.eq(other.seq))
            .exec(db)
            .await?;
        Subscriptions::evidence_row(
            &other,
            Some(State::of(&other.state)),
            State::Suppressed,
            reason,
            None,
            recorded_by,
            now,
        )
        .insert(db)
        .await?;
        changed += 1;
    }
    Ok(changed)
}

#[tonic::async_trait]
impl SubscriptionApi for SubscriptionService {
    async fn put_topic(
        &self,
        request: Request<PutTopicRequest>,
    ) -> std::result::Result<Response<PutTopicResponse>, Status> {
        let call = Authorized::of(&request)?;
        let t = request.get_ref().topic.clone().unwrap_or_default();
        let mut c = Checks::new();
        c.ensure(
            valid_topic_id(t.topic_id.trim()),
            "topic.topic_id",
            "required: 1 to 64 characters of [a-z0-9_]",
        );
        c.required_text(&t.description, "topic.description", 500);
        c.finish()?;
        let id = t.topic_id.trim().to_owned();
        let description = t.description.trim().to_owned();
        let db = &self.subs.db;
        let now = self.subs.clock.now();
        let existing = call
            .find::<topic::Entity>()
            .filter(topic::Column::TopicId.eq(id.as_str()))
            .one(db)
            .await
            .map_err(Error::from)?;
        let txn = db.begin().await.map_err(Error::from)?;
        match existing {
            Some(row) => {
                let mut row: topic::ActiveModel = row.into();
                row.description = Set(description.clone());
                row.updated_at = Set(now);
                row.update(&txn).await.map_err(Error::from)?;
            }
            None => {
                topic::ActiveModel {
                    tenant: Set(call.tenant().to_owned()),
                    topic_id: Set(id.clone()),
                    description: Set(description.clone()),
                    updated_at: Set(now),
                    ..Default::default()
                }
                .insert(&txn)
                .await
                .map_err(|err| {
                    if tutela_store::is_unique_violation(&err) {
                        Error::AlreadyExists("topic")
                    } else {
                        err.into()
                    }
                })?;
            }
        }
        call.record_in(&txn).await?;
        txn.commit().await.map_err(Error::from)?;
        Ok(Response::new(PutTopicResponse {
            topic: Some(Topic {
                topic_id: id,
                description,
            }),
        }))
    }

    async fn list_topics(
        &self,
        request: Request<ListTopicsRequest>,
    ) -> std::result::Result<Response<ListTopicsResponse>, Status> {
        let call = Authorized::of(&request)?;
        let topics = call
            .find::<topic::Entity>()
            .order_by_asc(topic::Column::TopicId)
            .all(&self.subs.db)
            .await
            .map_err(Error::from)?
            .into_iter()
            .map(|t| Topic {
                topic_id: t.topic_id,
                description: t.description,
            })
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> std::result::Result<Response<SubscribeResponse>, Status> {
        let call = Authorized::of(&request)?;
        let input = check_subscribe(request.get_ref(), self.subs.clock.now().date_naive())?;
        Ok(Response::new(self.subscribe(&call, input).await?))
    }

    async fn confirm_subscription(
        &self,
        request: Request<ConfirmSubscriptionRequest>,
    ) -> std::result::Result<Response<ConfirmSubscriptionResponse>, Status> {
        let call = TokenCall::of(&request)?;
        call.for_purpose(Purpose::ConsentManagement);
        let confirmed = async {
            let (row, method, opt_in) = self.checked_confirmation(request.get_ref()).await?;
            let audit = Subscriptions::token_resolved(&call, &row, "confirmed");
            self.confirm(row, method, &opt_in, &audit).await
        }
        .await;
        if let Err(err) = &confirmed {
            call.refused(err);
        }
        Ok(Response::new(confirmed?))
    }

    async fn unsubscribe(
        &self,
        request: Request<UnsubscribeRequest>,
    ) -> std::result::Result<Response<UnsubscribeResponse>, Status> {
        let call = TokenCall::of(&request)?;
        let (subscription_id, state, changed) = self
            .subs
            .unsubscribe_with_token(&request.get_ref().token, &call)
            .await?;
        Ok(Response::new(UnsubscribeResponse {
            subscription_id,
            state: state.proto() as i32,
            changed,
        }))
    }

    async fn opt_out(
        &self,
        request: Request<OptOutRequest>,
    ) -> std::result::Result<Response<OptOutResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(self.opt_out(&call, request.get_ref()).await?))
    }

    async fn list_subscriptions(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> std::result::Result<Response<ListSubscriptionsResponse>, Status> {
        let call = Authorized::of(&request)?;
        let access = Self::contact_access(&call, request.get_ref().contact.as_ref()).await?;
        let opened = self.subs.of_contact(&access).await?;
        access.record_response();
        Ok(Response::new(ListSubscriptionsResponse {
            subscriptions: opened
                .into_iter()
                .map(|o| Subscriptions::to_subscription(&o.row, o.address))
                .collect(),
        }))
    }

    type ResolveAudienceStream = audience::AudienceStream;

    async fn resolve_audience(
        &self,
        request: Request<ResolveAudienceRequest>,
    ) -> std::result::Result<Response<Self::ResolveAudienceStream>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let mut c = Checks::new();
        let channel = check_channel(&mut c, r.channel, "channel");
        c.ensure(
            valid_topic_id(r.topic.trim()),
            "topic",
            "required: a topic id of [a-z0-9_], at most 64",
        );
        c.ensure(r.batch_size <= 5000, "batch_size", "at most 5000");
        let channel = c.parsed(channel)?;
        let batch = if r.batch_size == 0 {
            1000
        } else {
            r.batch_size as usize
        };
        Ok(Response::new(audience::resolve(
            self.subs.clone(),
            call,
            r.topic.trim().to_owned(),
            channel,
            batch,
        )))
    }

    async fn record_events(
        &self,
        request: Request<RecordEventsRequest>,
    ) -> std::result::Result<Response<RecordEventsResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(
            self.record_events(&call, request.get_ref()).await?,
        ))
    }
}
