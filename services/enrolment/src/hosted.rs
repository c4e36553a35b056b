//! The enrolment service as a `tutela` process hosts it: its migrations, its six gRPC services,
//! its part in data-subject rights and its retention sweep.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tutela_host::{BuildError, Context, HostedService, Progress, Served, SweepReport, Sweeper};
use tutela_proto::enrolment::certificate_service_server::CertificateServiceServer;
use tutela_proto::enrolment::course_service_server::CourseServiceServer;
use tutela_proto::enrolment::enrolment_service_server::EnrolmentServiceServer;
use tutela_proto::enrolment::feedback_service_server::FeedbackServiceServer;
use tutela_proto::enrolment::learner_service_server::LearnerServiceServer;
use tutela_proto::enrolment::legal_hold_service_server::LegalHoldServiceServer;

use crate::{
    CertificateService, CourseService, EnrolmentMigrator, EnrolmentRights, EnrolmentService,
    FeedbackService, Holds, LearnerService, Learners, LegalHoldService, Records, SERVICE,
    SweepReport as Report,
};

/// The enrolment service's [`HostedService`].
pub(crate) struct Enrolment;

fn learners(ctx: &Context) -> Learners {
    Learners::new(
        ctx.db.clone(),
        ctx.keyring.clone(),
        ctx.audit.keys().clone(),
        ctx.clock.clone(),
    )
}

impl HostedService for Enrolment {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn migrations(&self) -> Vec<Box<dyn tutela_store::Migrations>> {
        vec![tutela_store::migrations_of::<EnrolmentMigrator>(SERVICE)]
    }

    fn build(&self, ctx: &Context, served: &mut Served) -> Result<(), BuildError> {
        let learners = learners(ctx);
        let records = Records::new(ctx.db.clone(), learners.clone());
        let learner_service = LearnerService::new(learners.clone(), ctx.register.clone());
        served.subject_data(Arc::new(EnrolmentRights::new(
            learner_service.clone(),
            learners,
            records.clone(),
            Holds::new(ctx.db.clone()),
        )));
        let max = ctx.max_message_bytes;
        served
            .grpc(
                LearnerServiceServer::new(learner_service)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .grpc(
                CourseServiceServer::new(CourseService::new(records.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .grpc(
                EnrolmentServiceServer::new(EnrolmentService::new(records.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .grpc(
                LegalHoldServiceServer::new(LegalHoldService::new(records.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .grpc(
                CertificateServiceServer::new(CertificateService::new(
                    records.clone(),
                    ctx.register.clone(),
                ))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            )
            .grpc(
                FeedbackServiceServer::new(FeedbackService::new(records))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            );
        Ok(())
    }

    fn sweepers(&self, ctx: &Context) -> Result<Vec<Arc<dyn Sweeper>>, BuildError> {
        Ok(vec![
            Arc::new(Retention(crate::Sweeper::new(
                ctx.db.clone(),
                learners(ctx),
                Holds::new(ctx.db.clone()),
                ctx.register.clone(),
            ))),
            Arc::new(ChangeFeed(learners(ctx))),
        ])
    }
}

/// The learners' change feed, kept for [`crate::CHANGES_KEPT_DAYS`] days.
struct ChangeFeed(Learners);

#[async_trait::async_trait]
impl Sweeper for ChangeFeed {
    fn name(&self) -> &'static str {
        "learner changes"
    }

    async fn sweep(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        progress: Progress<'_>,
    ) -> tutela_policy::Result<SweepReport> {
        let removed = self.0.sweep_changes(now, dry_run).await?;
        progress("learner changes", removed, removed);
        Ok(Box::new(format!(
            "{removed} learner change(s) older than {} days",
            crate::CHANGES_KEPT_DAYS
        )))
    }
}

/// The enrolment records' retention.
struct Retention(crate::Sweeper);

/// What the retention sweep removed, as `tutela retention sweep` prints it.
struct Printed(Report);

impl std::fmt::Display for Printed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = &self.0;
        write!(
            f,
            "{} result(s), {} enrolment(s), {} certificate(s), {} feedback record(s), {} learner(s); {} record(s) due but kept under a legal hold",
            e.results, e.enrolments, e.certificates, e.feedback, e.learners, e.held
        )
    }
}

#[async_trait::async_trait]
impl Sweeper for Retention {
    fn name(&self) -> &'static str {
        "retention"
    }

    async fn sweep(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
        progress: Progress<'_>,
    ) -> tutela_policy::Result<SweepReport> {
        let report = self.0.sweep(now, dry_run, progress).await?;
        Ok(Box::new(Printed(report)))
    }
}
