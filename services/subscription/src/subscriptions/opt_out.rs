//! The `OptOut` handler: unsubscribing a contact from a topic, a channel or everything (the
//! last also withdrawing marketing consent in the ledger).

use sea_orm::{ColumnTrait, QueryFilter};
use tutela_policy::consent::parse_evidence;
use tutela_policy::validate::Checks;
use tutela_policy::{Authorized, Result};
use tutela_proto::common::Purpose;
use tutela_proto::subscription::{Channel, OptOutKind, OptOutRequest, OptOutResponse};

use super::checks::valid_topic_id;
use super::entity::subscription;
use super::service::SubscriptionService;
use super::state::{State, channel_name};
use tutela_ledger::Append;

impl SubscriptionService {
    pub(super) async fn opt_out(
        &self,
        call: &Authorized,
        r: &OptOutRequest,
    ) -> Result<OptOutResponse> {
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
}
