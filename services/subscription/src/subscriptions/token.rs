//! The token flow: confirmation tokens and codes (issue, check, confirm) and unsubscribing
//! with a token (the gRPC call and the RFC 8058 POST). These calls are authorised by the token
//! inside the message, not by a principal, so they are kept together and apart from the
//! guarded handlers.

use std::sync::Arc;

use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tutela_policy::Precondition;
use tutela_policy::audit::TokenCallAudit;
use tutela_policy::error::AuthFailure;
use tutela_policy::token_call::{TOKEN_HOLDER, TokenCall};
use tutela_policy::validate::{Checks, timestamp};
use tutela_policy::{CategorySet, Error, Result, Tenant};
use tutela_proto::common::{DataCategory, Purpose};
use tutela_proto::consent::{ConsentActor, ConsentEvidence, ConsentMethod};
use tutela_proto::subscription::{
    ConfirmSubscriptionRequest, ConfirmSubscriptionResponse, OptInEvidence, SubscriptionState,
};
use uuid::Uuid;

use super::checks::check_opt_in;
use super::entity::subscription;
use super::service::SubscriptionService;
use super::state::State;
use super::store::Subscriptions;
use crate::tokens::TokenError;
use tutela_ledger::Append;

/// How long a confirmation token (email, post) is valid.
pub const TOKEN_VALIDITY: chrono::Duration = chrono::Duration::days(7);
/// How long a confirmation code (SMS, phone) is valid.
pub const CODE_VALIDITY: chrono::Duration = chrono::Duration::hours(1);
/// Wrong codes before a code is void.
pub const MAX_CODE_ATTEMPTS: i32 = 5;
/// The RFC 8058 POST body.
pub const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

/// Constant-time equality of two short strings (stored code hashes).
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A six-digit code from the operating system's random source (through UUID v4).
pub(super) fn six_digits() -> String {
    let bytes = Uuid::new_v4().into_bytes();
    let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) % 1_000_000;
    format!("{n:06}")
}

impl Subscriptions {
    /// The token resolved to `row`: the call's audit record names its contact (by pseudonym)
    /// and its writes stage their records through the returned handle; the guard writes the
    /// record itself once the call is done.
    pub(super) fn token_resolved(
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
}

impl SubscriptionService {
    /// Confirms `row` after its token or code was checked.
    pub(super) async fn confirm(
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

    pub(super) async fn checked_confirmation(
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
