//! Certificates and badges (with their Open Badges 3.0 export), and feedback, compliments and
//! complaints: `tutela.enrolment.v1.CertificateService` and `FeedbackService`.

use sea_orm::{ActiveModelTrait, ColumnTrait, QueryFilter, QueryOrder, Set};
use tonic::{Request, Response, Status};
use tutela_policy::Precondition;
use tutela_policy::idempotency::Idempotency;
use tutela_policy::scope::found;
use tutela_policy::validate::timestamp;
use tutela_policy::{Authorized, CategorySet, Error, Register, Result, SubjectAccess, fields};
use tutela_proto::common::{DataCategory, SubjectRef};
use tutela_proto::enrolment::certificate_service_server::CertificateService as CertificateApi;
use tutela_proto::enrolment::feedback_service_server::FeedbackService as FeedbackApi;
use tutela_proto::enrolment::{
    AwardKind, Certificate, EnrolmentStatus, ExportOpenBadgeRequest, ExportOpenBadgeResponse,
    Feedback, FeedbackKind, IssueCertificateRequest, IssueCertificateResponse,
    ListCertificatesRequest, ListCertificatesResponse, ListFeedbackRequest, ListFeedbackResponse,
    RecordFeedbackRequest, RecordFeedbackResponse,
};

use crate::records::{Records, status_of};
use crate::requests::{NewCertificate, NewFeedback};
use entity::certificate::to_certificate;

/// The certificate and feedback tables.
pub mod entity {
    /// A certificate or badge.
    pub mod certificate {
        use sea_orm::entity::prelude::*;
        use tutela_policy::validate::timestamp;
        use tutela_proto::common::SubjectRef;
        use tutela_proto::enrolment::{AwardKind, Certificate};

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "certificates")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub seq: i64,
            pub tenant: String,
            pub certificate_id: String,
            pub learner_id: String,
            pub enrolment_id: String,
            pub course_id: String,
            /// The kind's proto name.
            pub kind: String,
            pub title: String,
            pub issued_at: DateTimeUtc,
            pub idempotency_key: Option<String>,
            pub request_hash: Option<String>,
        }

        tutela_policy::scoped_entity!(tenant: Tenant, subject: LearnerId);

        /// The row as the contract's message.
        pub(crate) fn to_certificate(row: &Model) -> Certificate {
            Certificate {
                certificate_id: row.certificate_id.clone(),
                learner: Some(SubjectRef {
                    subject_id: row.learner_id.clone(),
                }),
                enrolment_id: row.enrolment_id.clone(),
                course_id: row.course_id.clone(),
                kind: AwardKind::from_str_name(&row.kind).unwrap_or(AwardKind::Certificate) as i32,
                title: row.title.clone(),
                issued_at: Some(timestamp(row.issued_at)),
            }
        }
    }

    /// Feedback, a compliment or a complaint; the text sealed under the learner's key.
    pub mod feedback {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "feedback")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub seq: i64,
            pub tenant: String,
            pub feedback_id: String,
            pub learner_id: String,
            pub course_id: String,
            /// The kind's proto name.
            pub kind: String,
            pub sealed: Vec<u8>,
            pub received_at: DateTimeUtc,
            pub recorded_by: String,
            pub idempotency_key: Option<String>,
            pub request_hash: Option<String>,
        }

        tutela_policy::scoped_entity!(tenant: Tenant, subject: LearnerId);
    }
}

use entity::{certificate, feedback};

// Each row of these tables remembers the idempotency key and request of the write that made it.
tutela_policy::idempotent_rows!(certificate, feedback);

fn feedback_field(id: &str) -> String {
    format!("feedback.text/{id}")
}

/// Certificates and feedback of learners, shared by the gRPC services and the rights provider.
#[derive(Debug, Clone)]
pub struct Outcomes {
    records: Records,
}

impl Outcomes {
    /// Outcomes of the learners in `records`.
    pub fn new(records: Records) -> Self {
        Self { records }
    }

    /// A learner's certificates and feedback (texts opened), oldest first, recording the
    /// access.
    pub async fn of_learner(
        &self,
        access: &SubjectAccess,
    ) -> Result<(Vec<Certificate>, Vec<Feedback>)> {
        let db = self.records.db();
        let certificates = access
            .find::<certificate::Entity>()
            .order_by_asc(certificate::Column::Seq)
            .all(db)
            .await?;
        let rows = access
            .find::<feedback::Entity>()
            .order_by_asc(feedback::Column::Seq)
            .all(db)
            .await?;
        let feedback = self.open_feedback(access, rows).await?;
        let mut read = CategorySet::EMPTY;
        if !certificates.is_empty() {
            read.insert(DataCategory::Education);
        }
        if !feedback.is_empty() {
            read.insert(DataCategory::Communication);
        }
        access.record(read);
        Ok((certificates.iter().map(to_certificate).collect(), feedback))
    }

    async fn open_feedback(
        &self,
        access: &SubjectAccess,
        rows: Vec<feedback::Model>,
    ) -> Result<Vec<Feedback>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let key = self
            .records
            .learners()
            .key(access.tenant(), access.subject_id())
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Feedback {
                    text: key.open_string(&feedback_field(&row.feedback_id), &row.sealed)?,
                    feedback_id: row.feedback_id,
                    learner: Some(SubjectRef {
                        subject_id: row.learner_id,
                    }),
                    course_id: row.course_id,
                    kind: FeedbackKind::from_str_name(&row.kind).unwrap_or(FeedbackKind::Comment)
                        as i32,
                    received_at: Some(timestamp(row.received_at)),
                })
            })
            .collect()
    }

    /// Deletes a learner's feedback, and their certificates unless `keep_certificates`;
    /// returns how many rows went.
    pub async fn erase(&self, access: &SubjectAccess, keep_certificates: bool) -> Result<u64> {
        let txn = tutela_store::begin(self.records.db()).await?;
        let mut erased = access
            .delete::<feedback::Entity>()
            .exec(&txn)
            .await?
            .rows_affected;
        if !keep_certificates {
            erased += access
                .delete::<certificate::Entity>()
                .exec(&txn)
                .await?
                .rows_affected;
        }
        access
            .record_in(
                &txn,
                CategorySet::of(&[DataCategory::Education, DataCategory::Communication]),
            )
            .await?;
        txn.commit().await?;
        Ok(erased)
    }
}

/// `tutela.enrolment.v1.CertificateService`.
#[derive(Debug, Clone)]
pub struct CertificateService {
    records: Records,
    register: std::sync::Arc<Register>,
}

impl CertificateService {
    /// The service over `records`; `register` names the issuing organisation in badges.
    pub fn new(records: Records, register: std::sync::Arc<Register>) -> Self {
        Self { records, register }
    }
}

#[tonic::async_trait]
impl CertificateApi for CertificateService {
    async fn issue_certificate(
        &self,
        request: Request<IssueCertificateRequest>,
    ) -> std::result::Result<Response<IssueCertificateResponse>, Status> {
        let call = Authorized::of(&request)?;
        let NewCertificate {
            idempotency,
            enrolment_id,
            title,
            kind,
        } = NewCertificate::try_from(request.get_ref())?;
        let db = self.records.db();
        let enrolment = self.records.enrolment(&call, &enrolment_id).await?;
        let access = call.subject(&enrolment.learner_id).await?;
        if let Some(stored) = self
            .records
            .replay::<certificate::Entity>(&call, idempotency.as_ref())
            .await?
        {
            access.record_response();
            return Ok(Response::new(IssueCertificateResponse {
                certificate: Some(to_certificate(&stored)),
            }));
        }
        if status_of(&enrolment) != EnrolmentStatus::Completed {
            return Err(Error::FailedPrecondition {
                reason: Precondition::EnrolmentNotCompleted,
                message: "certificates are issued for completed enrolments".into(),
            }
            .into());
        }
        let course = self.records.course(&call, &enrolment.course_id).await?;
        let (key, request_hash) = Idempotency::columns(idempotency.as_ref());
        let txn = tutela_store::begin(db).await.map_err(Error::from)?;
        let row = certificate::ActiveModel {
            tenant: Set(access.tenant().to_owned()),
            certificate_id: Set(uuid::Uuid::new_v4().to_string()),
            learner_id: Set(enrolment.learner_id.clone()),
            enrolment_id: Set(enrolment.enrolment_id.clone()),
            course_id: Set(course.course_id.clone()),
            kind: Set(kind.as_str_name().to_owned()),
            title: Set(if title.is_empty() {
                course.title
            } else {
                title
            }),
            issued_at: Set(self.records.now()),
            idempotency_key: Set(key),
            request_hash: Set(request_hash),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(Error::from)?;
        access
            .record_in(&txn, CategorySet::of(&[DataCategory::Education]))
            .await?;
        txn.commit().await.map_err(Error::from)?;
        Ok(Response::new(IssueCertificateResponse {
            certificate: Some(to_certificate(&row)),
        }))
    }

    async fn list_certificates(
        &self,
        request: Request<ListCertificatesRequest>,
    ) -> std::result::Result<Response<ListCertificatesResponse>, Status> {
        let call = Authorized::of(&request)?;
        let (access, rows) = self
            .records
            .learner_rows::<certificate::Entity>(
                &call,
                request.get_ref().learner.as_ref(),
                certificate::Column::Seq,
            )
            .await?;
        if !rows.is_empty() {
            access.record_response();
        }
        Ok(Response::new(ListCertificatesResponse {
            certificates: rows.iter().map(to_certificate).collect(),
        }))
    }

    async fn export_open_badge(
        &self,
        request: Request<ExportOpenBadgeRequest>,
    ) -> std::result::Result<Response<ExportOpenBadgeResponse>, Status> {
        let call = Authorized::of(&request)?;
        let id = request.get_ref().certificate_id.trim();
        if id.is_empty() {
            return Err(Error::invalid("certificate_id", "required").into());
        }
        let row = found(
            call.find::<certificate::Entity>()
                .filter(certificate::Column::CertificateId.eq(id))
                .one(self.records.db())
                .await
                .map_err(Error::from)?,
            "certificate",
        )?;
        let access = call.subject(&row.learner_id).await?;
        let course = self.records.course(&call, &row.course_id).await?;
        let organisation = &self.register.organisation;
        let credential = serde_json::json!({
            "@context": [
                "https://www.w3.org/ns/credentials/v2",
                "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
            ],
            "id": format!("urn:uuid:{}", row.certificate_id),
            "type": ["VerifiableCredential", "OpenBadgeCredential"],
            "issuer": {
                "id": format!("urn:tutela:tenant:{}", row.tenant),
                "type": ["Profile"],
                "name": organisation.name,
            },
            "validFrom": row.issued_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "name": row.title,
            "credentialSubject": {
                // The learner by their tutela id only: no name or email leaves in a badge.
                "id": format!("urn:uuid:{}", row.learner_id),
                "type": ["AchievementSubject"],
                "achievement": {
                    "id": format!("urn:uuid:{}", course.course_id),
                    "type": ["Achievement"],
                    "achievementType": if row.kind == AwardKind::Badge.as_str_name() { "Badge" } else { "Certificate" },
                    "name": row.title,
                    "description": course.title,
                    "criteria": {
                        "narrative": format!("Completed the course {} ({}).", course.title, course.code)
                    },
                }
            }
        });
        access.record_response();
        Ok(Response::new(ExportOpenBadgeResponse {
            media_type: "application/ld+json".into(),
            credential: serde_json::to_vec_pretty(&credential).map_err(Error::internal)?,
        }))
    }
}

/// `tutela.enrolment.v1.FeedbackService`.
#[derive(Debug, Clone)]
pub struct FeedbackService {
    records: Records,
}

impl FeedbackService {
    /// The service over `records`. Prohibited identifiers in the text never reach it: the guard
    /// scans every request first.
    pub fn new(records: Records) -> Self {
        Self { records }
    }
}

#[tonic::async_trait]
impl FeedbackApi for FeedbackService {
    async fn record_feedback(
        &self,
        request: Request<RecordFeedbackRequest>,
    ) -> std::result::Result<Response<RecordFeedbackResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let NewFeedback {
            idempotency,
            text,
            course_id,
            kind,
        } = NewFeedback::try_from(r)?;
        fields::minimise(
            [("feedback.text", DataCategory::Communication)],
            call.rule().categories,
            call.purpose().short_name(),
        )?;
        let access = self
            .records
            .learner_access(
                &call,
                r.feedback.as_ref().and_then(|f| f.learner.as_ref()),
                "feedback.learner",
            )
            .await?;
        if !course_id.is_empty() {
            self.records.course(&call, &course_id).await?;
        }
        let db = self.records.db();
        let stored = self
            .records
            .replay::<feedback::Entity>(&call, idempotency.as_ref())
            .await?;
        let row = match stored {
            Some(row) => row,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                let data_key = self
                    .records
                    .learners()
                    .key_for_writing(access.tenant(), access.subject_id())
                    .await?;
                let (key, request_hash) = Idempotency::columns(idempotency.as_ref());
                let txn = tutela_store::begin(db).await.map_err(Error::from)?;
                let row = feedback::ActiveModel {
                    tenant: Set(access.tenant().to_owned()),
                    feedback_id: Set(id.clone()),
                    learner_id: Set(access.subject_id().to_owned()),
                    course_id: Set(course_id),
                    kind: Set(kind.as_str_name().to_owned()),
                    sealed: Set(data_key
                        .seal(&feedback_field(&id), text.as_bytes())
                        .map_err(Error::from)?),
                    received_at: Set(self.records.now()),
                    recorded_by: Set(call.principal().id.clone()),
                    idempotency_key: Set(key),
                    request_hash: Set(request_hash),
                    ..Default::default()
                }
                .insert(&txn)
                .await
                .map_err(Error::from)?;
                access
                    .record_in(&txn, CategorySet::of(&[DataCategory::Communication]))
                    .await?;
                txn.commit().await.map_err(Error::from)?;
                row
            }
        };
        // A replay stores nothing; its read is audited all the same.
        access.record_response();
        Ok(Response::new(RecordFeedbackResponse {
            feedback: Some(Feedback {
                feedback_id: row.feedback_id,
                learner: Some(SubjectRef {
                    subject_id: row.learner_id,
                }),
                course_id: row.course_id,
                kind: kind as i32,
                text,
                received_at: Some(timestamp(row.received_at)),
            }),
        }))
    }

    async fn list_feedback(
        &self,
        request: Request<ListFeedbackRequest>,
    ) -> std::result::Result<Response<ListFeedbackResponse>, Status> {
        let call = Authorized::of(&request)?;
        let (access, rows) = self
            .records
            .learner_rows::<feedback::Entity>(
                &call,
                request.get_ref().learner.as_ref(),
                feedback::Column::Seq,
            )
            .await?;
        let outcomes = Outcomes::new(self.records.clone());
        let feedback = outcomes.open_feedback(&access, rows).await?;
        if !feedback.is_empty() {
            access.record_response();
        }
        Ok(Response::new(ListFeedbackResponse { feedback }))
    }
}
