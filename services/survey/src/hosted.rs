//! The survey service as a `tutela` process hosts it: its migrations, its two gRPC services and
//! its part in data-subject rights. It has no settings yet.

use std::sync::Arc;

use tutela_host::{BuildError, Context, HostedService, Served};
use tutela_proto::survey::response_service_server::ResponseServiceServer;
use tutela_proto::survey::survey_service_server::SurveyServiceServer;

use crate::scrub::Scrubbing;
use crate::{ResponseService, SERVICE, SurveyMigrator, SurveyRights, SurveyService, Surveys};

/// The survey service's [`HostedService`].
pub(crate) struct Hosted;

impl HostedService for Hosted {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn migrations(&self) -> Vec<Box<dyn tutela_store::Migrations>> {
        vec![tutela_store::migrations_of::<SurveyMigrator>(SERVICE)]
    }

    fn build(&self, ctx: &Context, served: &mut Served) -> Result<(), BuildError> {
        let surveys = Surveys::new(ctx.db.clone(), ctx.keyring.clone(), ctx.clock.clone());
        let max = ctx.max_message_bytes;
        served
            .grpc(
                SurveyServiceServer::new(SurveyService::new(surveys.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .grpc(
                ResponseServiceServer::new(ResponseService::new(
                    surveys.clone(),
                    Scrubbing::new()?,
                ))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            )
            .subject_data(Arc::new(SurveyRights::new(surveys)));
        Ok(())
    }
}
