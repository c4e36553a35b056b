//! [`SubscriptionService`] and its tonic `SubscriptionService` implementation: each RPC parses
//! its request and calls the handler module that does the work.

use sea_orm::{ActiveModelTrait, ColumnTrait, QueryFilter, QueryOrder, Set};
use tonic::{Request, Response, Status};
use tutela_policy::token_call::TokenCall;
use tutela_policy::validate::Checks;
use tutela_policy::{Authorized, Error, Result, SubjectAccess};
use tutela_proto::common::{Purpose, SubjectRef};
use tutela_proto::subscription::subscription_service_server::SubscriptionService as SubscriptionApi;
use tutela_proto::subscription::{
    ConfirmSubscriptionRequest, ConfirmSubscriptionResponse, ListSubscriptionsRequest,
    ListSubscriptionsResponse, ListTopicsRequest, ListTopicsResponse, OptOutRequest,
    OptOutResponse, PutTopicRequest, PutTopicResponse, RecordEventsRequest, RecordEventsResponse,
    ResolveAudienceRequest, SubscribeRequest, SubscribeResponse, Topic, UnsubscribeRequest,
    UnsubscribeResponse,
};

use super::audience;
use super::checks::{check_channel, valid_topic_id};
use super::entity::topic;
use super::store::Subscriptions;
use super::subscribe::check_subscribe;

/// `tutela.subscription.v1.SubscriptionService`.
#[derive(Debug, Clone)]
pub struct SubscriptionService {
    pub(super) subs: Subscriptions,
}

impl SubscriptionService {
    /// The service over `subs`.
    pub fn new(subs: Subscriptions) -> Self {
        Self { subs }
    }

    pub(super) async fn contact_access(
        call: &Authorized,
        contact: Option<&SubjectRef>,
    ) -> Result<SubjectAccess> {
        let mut c = Checks::new();
        let id = c.subject(contact, "contact");
        call.subject(&c.parsed(id)?).await
    }
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
        let txn = tutela_store::begin(db).await.map_err(Error::from)?;
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
