//! The survey service's part in data-subject rights (`tutela.privacy.v1.SubjectData`): the
//! learner's invitations and their own responses (opened with their key, free text as it was
//! stored: scrubbed), and on erasure both deleted and the learner's key in this service's scope
//! shredded, so that no copy of a response in a backup opens either. Releases, being anonymous,
//! are not the learner's data: they stay, marked as built from erased responses.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
use serde_json::json;
use tutela_policy::rights::{SubjectDataProvider, rfc3339};
use tutela_policy::validate::timestamp;
use tutela_policy::{CategorySet, Error, Result, SubjectAccess};
use tutela_proto::common::DataCategory;
use tutela_proto::privacy::{ServiceErasure, ServiceExport, ServiceHoldings};

use crate::SERVICE;
use crate::answers;
use crate::entity::{invitation, response, survey};
use crate::responses::sealed_field;
use crate::surveys::Surveys;

/// Describe, export and erase what the survey service holds of a learner.
#[derive(Debug, Clone)]
pub struct SurveyRights {
    surveys: Surveys,
}

impl SurveyRights {
    /// The provider over `surveys`.
    pub fn new(surveys: Surveys) -> Self {
        Self { surveys }
    }

    async fn invitations(&self, access: &SubjectAccess) -> Result<Vec<invitation::Model>> {
        Ok(access
            .find::<invitation::Entity>()
            .order_by_asc(invitation::Column::Seq)
            .all(&self.surveys.db)
            .await?)
    }

    async fn responses(&self, access: &SubjectAccess) -> Result<Vec<response::Model>> {
        Ok(access
            .find::<response::Entity>()
            .order_by_asc(response::Column::SubmittedAt)
            .all(&self.surveys.db)
            .await?)
    }
}

/// What the rows say of the learner: that they were invited (identity), in which cohort
/// (education), and what they answered (survey responses).
fn categories_of(invitations: &[invitation::Model], responses: &[response::Model]) -> CategorySet {
    let mut held = CategorySet::EMPTY;
    if !invitations.is_empty() {
        held.insert(DataCategory::Identity);
    }
    if invitations.iter().any(|i| !i.cohort.is_empty()) {
        held.insert(DataCategory::Education);
    }
    if !responses.is_empty() {
        held.insert(DataCategory::SurveyResponse);
    }
    held
}

#[async_trait::async_trait]
impl SubjectDataProvider for SurveyRights {
    fn service(&self) -> &'static str {
        SERVICE
    }

    async fn describe(&self, access: &SubjectAccess) -> Result<ServiceHoldings> {
        let held = categories_of(
            &self.invitations(access).await?,
            &self.responses(access).await?,
        );
        Ok(ServiceHoldings {
            service: SERVICE.to_owned(),
            categories: held.iter().map(|c| c as i32).collect(),
            restricted: false,
            objected_to: Vec::new(),
            legal_hold: false,
        })
    }

    async fn export(&self, access: &SubjectAccess) -> Result<ServiceExport> {
        let s = &self.surveys;
        let invitations = self.invitations(access).await?;
        let responses = self.responses(access).await?;
        let ids: Vec<String> = invitations.iter().map(|i| i.survey_id.clone()).collect();
        let titles: HashMap<String, String> = access
            .call()
            .find::<survey::Entity>()
            .filter(survey::Column::SurveyId.is_in(ids))
            .all(&s.db)
            .await?
            .into_iter()
            .map(|row| (row.survey_id, row.title))
            .collect();
        let key = if responses.is_empty() {
            None
        } else {
            Some(
                s.vault
                    .get(access.tenant(), access.subject_id())
                    .await
                    .map_err(Error::from)?,
            )
        };
        let mut answered = Vec::with_capacity(responses.len());
        for r in &responses {
            let sealed: answers::Sealed = match &key {
                Some(key) => {
                    let json = key
                        .open_string(&sealed_field(&r.response_id), &r.sealed)
                        .map_err(Error::from)?;
                    serde_json::from_str(&json)
                        .map_err(|_| Error::internal("a stored response does not parse"))?
                }
                None => answers::Sealed::default(),
            };
            answered.push(json!({
                "survey_id": r.survey_id,
                "survey": titles.get(&r.survey_id),
                "submitted_at": rfc3339(r.submitted_at),
                "answers": sealed.answers.iter().map(answers::Stored::to_json).collect::<Vec<_>>(),
                "attributes": sealed.attributes,
                "identifiers_replaced": r.identifiers_replaced,
                "held_for_review": r.held_for_review,
                "comment_withheld": r.comment_withheld,
            }));
        }
        let invited: Vec<serde_json::Value> = invitations
            .iter()
            .map(|i| {
                json!({
                    "survey_id": i.survey_id,
                    "survey": titles.get(&i.survey_id),
                    "cohort": i.cohort,
                    "state": i.state,
                    "invited_at": rfc3339(i.invited_at),
                    "answered_at": i.answered_at.map(rfc3339),
                    "reminders": i.reminders,
                })
            })
            .collect();
        let document = json!({
            "service": SERVICE,
            "invitations": invited,
            "responses": answered,
        });
        Ok(ServiceExport {
            service: SERVICE.to_owned(),
            media_type: "application/json".into(),
            document: serde_json::to_vec(&document).map_err(Error::internal)?,
            categories: categories_of(&invitations, &responses)
                .iter()
                .map(|c| c as i32)
                .collect(),
        })
    }

    async fn erase(&self, access: &SubjectAccess, _reason: &str) -> Result<ServiceErasure> {
        let s = &self.surveys;
        let invitations = self.invitations(access).await?;
        let responses = self.responses(access).await?;
        let txn = tutela_store::begin(&s.db).await?;
        access
            .record_in(&txn, categories_of(&invitations, &responses))
            .await?;
        let mut erased = access
            .delete::<response::Entity>()
            .exec(&txn)
            .await?
            .rows_affected;
        erased += access
            .delete::<invitation::Entity>()
            .exec(&txn)
            .await?
            .rows_affected;
        // The releases made from their responses stay (they are anonymous) and are marked; a
        // mark is no record of the learner, so it does not count as erased.
        crate::releases::mark_erased(&txn, access, &responses).await?;
        txn.commit().await?;
        // After the rows are gone, the key: any copy of a response elsewhere (a backup) stays
        // sealed for good. Shredding again on a re-run is harmless.
        s.vault
            .shred(access.tenant(), access.subject_id())
            .await
            .map_err(Error::from)?;
        Ok(ServiceErasure {
            service: SERVICE.to_owned(),
            records_erased: erased,
            retained: Vec::new(),
            erased_at: Some(timestamp(s.now())),
        })
    }
}
