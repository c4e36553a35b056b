//! `tutela.sharing.v1.WebhookService`: partners' endpoints and their outbox, for the dpo.
//!
//! Setting an endpoint makes a fresh signing secret, sealed through the vault in the same
//! transaction as the endpoint's row and the call's audit record, and returns it once; reading
//! the endpoint never does.

use sea_orm::{ActiveModelTrait, ColumnTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use tonic::{Request, Response, Status};
use tutela_policy::audit::Change;
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::scope::found;
use tutela_policy::validate::{Checks, timestamp};
use tutela_policy::{Authorized, Error, Result};
use tutela_proto::common::PageResponse;
use tutela_proto::sharing::webhook_service_server::WebhookService as WebhookApi;
use tutela_proto::sharing::{
    GetWebhookEndpointRequest, GetWebhookEndpointResponse, ListWebhookMessagesRequest,
    ListWebhookMessagesResponse, SetWebhookEndpointRequest, SetWebhookEndpointResponse,
    WebhookEndpoint, WebhookMessage, WebhookMessageState,
};

use super::entity::{endpoint, message};
use super::outbox::{DELIVERED, ENDPOINT_DISABLED, FAILED, PENDING};
use super::signature::Secret;
use super::ssrf::TargetRules;
use crate::sharing::{Sharing, next_page, page_size, record_id};

// An endpoint row remembers the idempotency key and request of the SetWebhookEndpoint that last
// set it.
tutela_policy::idempotent_rows!(endpoint);

const SET: &str = "tutela.sharing.v1.WebhookService/SetWebhookEndpoint";

fn to_endpoint(row: &endpoint::Model) -> WebhookEndpoint {
    WebhookEndpoint {
        partner_id: row.partner_id.clone(),
        url: row.url.clone(),
        enabled: row.enabled,
        disabled_reason: row.disabled_reason.clone().unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

fn to_message(row: &message::Model) -> WebhookMessage {
    let state = match row.state.as_str() {
        PENDING => WebhookMessageState::Pending,
        DELIVERED => WebhookMessageState::Delivered,
        FAILED => WebhookMessageState::Failed,
        ENDPOINT_DISABLED => WebhookMessageState::EndpointDisabled,
        _ => WebhookMessageState::Unspecified,
    };
    WebhookMessage {
        message_id: row.message_id.clone(),
        event_type: row.event_type.clone(),
        state: state as i32,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        next_attempt_at: Some(timestamp(row.next_attempt_at)),
        last_status: row
            .last_status
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(0),
        last_error: row.last_error.clone().unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
    }
}

/// A SetWebhookEndpointRequest, checked.
struct NewEndpoint {
    partner_id: String,
    url: String,
    idempotency: Option<Idempotency>,
}

impl NewEndpoint {
    fn parse(r: &SetWebhookEndpointRequest, rules: &TargetRules) -> Result<Self> {
        let mut c = Checks::new();
        let partner_id = c.uuid(&r.partner_id, "partner_id");
        let url = match c.required(&r.url, "url", 2048) {
            Ok(url) => match rules.check_url(url) {
                // The parsed form: one spelling of the same URL.
                Ok(parsed) => Ok(parsed.to_string()),
                Err(refusal) => Err(c.flag("url", refusal.to_string())),
            },
            Err(flagged) => Err(flagged),
        };
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        let (partner_id, url, key) = c.parsed((partner_id, url, key))?;
        Ok(Self {
            partner_id,
            url,
            idempotency: Idempotency::of_request(key, SET, r, |m| m.idempotency_key = None),
        })
    }
}

/// `tutela.sharing.v1.WebhookService`.
#[derive(Debug, Clone)]
pub struct WebhookService {
    sharing: Sharing,
    rules: TargetRules,
}

impl WebhookService {
    /// The service over `sharing`, accepting endpoints that `rules` allow.
    pub fn new(sharing: Sharing, rules: TargetRules) -> Self {
        Self { sharing, rules }
    }

    async fn set(&self, call: &Authorized, new: NewEndpoint) -> Result<(endpoint::Model, Secret)> {
        let s = &self.sharing;
        if let Some(row) =
            idempotency::replay::<endpoint::Entity>(call, &s.db, new.idempotency.as_ref()).await?
        {
            let secret = s
                .keys
                .open_webhook_secret(call.tenant(), &row.partner_id, &row.sealed_secret)
                .await?;
            return Ok((row, secret));
        }
        let (key, request_hash) = Idempotency::columns(new.idempotency.as_ref());
        let now = s.now();
        let txn = tutela_store::begin(&s.db).await?;
        // The decision's record first: on SQLite the transaction then holds the write lock.
        call.record_in(&txn).await?;
        // NOT_FOUND outside the tenant; and two Sets of one partner take turns.
        s.lock_partner(&txn, call, &new.partner_id, false).await?;
        let secret = Secret::generate()?;
        let sealed = s
            .keys
            .seal_webhook_secret(&txn, call.tenant(), &new.partner_id, &secret)
            .await?;
        let existing = call
            .find::<endpoint::Entity>()
            .filter(endpoint::Column::PartnerId.eq(new.partner_id.as_str()))
            .one(&txn)
            .await?;
        let created_at = existing.as_ref().map_or(now, |e| e.created_at);
        let row = endpoint::ActiveModel {
            partner_id: Set(new.partner_id.clone()),
            tenant: Set(call.tenant().to_owned()),
            url: Set(new.url),
            sealed_secret: Set(sealed),
            enabled: Set(true),
            disabled_reason: Set(None),
            created_at: Set(created_at),
            updated_at: Set(now),
            idempotency_key: Set(key),
            request_hash: Set(request_hash),
        };
        let row = if existing.is_some() {
            row.update(&txn).await
        } else {
            row.insert(&txn).await
        }
        .map_err(idempotency::key_taken)?;
        let staged = s
            .audit
            .change_in(
                &txn,
                call,
                Change::WebhookEndpointSet {
                    partner_id: new.partner_id.clone(),
                },
            )
            .await?;
        txn.commit().await?;
        staged.append().await?;
        tracing::info!(partner_id = %row.partner_id, "webhook endpoint set");
        Ok((row, secret))
    }
}

#[tonic::async_trait]
impl WebhookApi for WebhookService {
    async fn set_webhook_endpoint(
        &self,
        request: Request<SetWebhookEndpointRequest>,
    ) -> std::result::Result<Response<SetWebhookEndpointResponse>, Status> {
        let call = Authorized::of(&request)?;
        let new = NewEndpoint::parse(request.get_ref(), &self.rules)?;
        let (row, secret) = self.set(&call, new).await?;
        Ok(Response::new(SetWebhookEndpointResponse {
            endpoint: Some(to_endpoint(&row)),
            signing_secret: secret.serialise().to_string(),
        }))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<GetWebhookEndpointRequest>,
    ) -> std::result::Result<Response<GetWebhookEndpointResponse>, Status> {
        let call = Authorized::of(&request)?;
        let id = record_id(&request.get_ref().partner_id, "partner_id")?;
        let row = found(
            call.find::<endpoint::Entity>()
                .filter(endpoint::Column::PartnerId.eq(id))
                .one(&self.sharing.db)
                .await
                .map_err(Error::from)?,
            "webhook endpoint",
        )?;
        Ok(Response::new(GetWebhookEndpointResponse {
            endpoint: Some(to_endpoint(&row)),
        }))
    }

    async fn list_webhook_messages(
        &self,
        request: Request<ListWebhookMessagesRequest>,
    ) -> std::result::Result<Response<ListWebhookMessagesResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let id = record_id(&r.partner_id, "partner_id")?;
        self.sharing.partner(&self.sharing.db, &call, &id).await?;
        let size = page_size(r.page.as_ref());
        // The token is the last message id of the previous page: ids are UUIDv7, so their
        // order is the outbox's order.
        let after = r
            .page
            .as_ref()
            .map(|p| p.page_token.trim())
            .unwrap_or_default();
        let mut query = call
            .find::<message::Entity>()
            .filter(message::Column::PartnerId.eq(id))
            .order_by_asc(message::Column::MessageId)
            .limit(size + 1);
        if !after.is_empty() {
            let after = record_id(after, "page.page_token").map_err(|_| {
                Error::invalid("page.page_token", "not a token this service returned")
            })?;
            query = query.filter(message::Column::MessageId.gt(after));
        }
        let mut rows = query.all(&self.sharing.db).await.map_err(Error::from)?;
        let next_page_token = next_page(&mut rows, size, |r| r.message_id.clone());
        Ok(Response::new(ListWebhookMessagesResponse {
            messages: rows.iter().map(to_message).collect(),
            page: Some(PageResponse { next_page_token }),
        }))
    }
}
