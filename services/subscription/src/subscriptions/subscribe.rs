//! The `Subscribe` handler: checking the request and storing the contact and the pending
//! subscription with its confirmation token or code.

use chrono::{DateTime, NaiveDate};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use tutela_policy::Precondition;
use tutela_policy::validate::{Checks, timestamp};
use tutela_policy::{Authorized, CategorySet, Error, Result};
use tutela_proto::common::DataCategory;
use tutela_proto::subscription::{Channel, OptInEvidence, SubscribeRequest, SubscribeResponse};
use uuid::Uuid;

use super::address::{address_field, normalise_address};
use super::checks::{check_channel, check_opt_in, valid_topic_id};
use super::entity::{contact, subscription, suppression, topic};
use super::service::SubscriptionService;
use super::state::{State, channel_name};
use super::store::{PROFILE_FIELD, Profile, Subscriptions};
use super::token::{CODE_VALIDITY, TOKEN_VALIDITY, six_digits};

/// A subscribe request, checked.
pub(super) struct SubscribeInput {
    contact: Option<String>,
    channel: Channel,
    topic: String,
    address: String,
    normalised: String,
    profile: Profile,
    opt_in: OptInEvidence,
}

pub(super) fn check_subscribe(r: &SubscribeRequest, today: NaiveDate) -> Result<SubscribeInput> {
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
    pub(super) async fn subscribe(
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
        let txn = tutela_store::begin(&s.db).await?;
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
}
