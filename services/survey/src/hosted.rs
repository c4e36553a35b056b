//! The survey service as a `tutela` process hosts it: its settings section (`[survey]`: where
//! the enrolment service is), its migrations, its three gRPC services and its part in
//! data-subject rights.

use std::sync::Arc;

use tutela_enrolment_client::EnrolmentSettings;
use tutela_host::{BuildError, Context, HostedService, Served};
use tutela_proto::survey::release_service_server::ReleaseServiceServer;
use tutela_proto::survey::response_service_server::ResponseServiceServer;
use tutela_proto::survey::survey_service_server::SurveyServiceServer;

use crate::people::People;
use crate::{
    ReleaseService, ResponseService, SERVICE, SurveyMigrator, SurveyRights, SurveyService, Surveys,
};

/// The `[survey]` settings section: the enrolment service the invitees' names and respondents'
/// attributes are read from (`enrolment_endpoint`, `enrolment_ca_file`), and nothing else.
fn settings(section: Option<&serde_json::Value>) -> Result<EnrolmentSettings, String> {
    /// The section's keys other than the enrolment service's: none.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {}
    let (enrolment, rest) = EnrolmentSettings::split(SERVICE, section)?;
    serde_json::from_value::<Own>(rest).map_err(|e| format!("survey settings: {e}"))?;
    Ok(enrolment)
}

/// The survey service's [`HostedService`].
pub(crate) struct Hosted;

impl HostedService for Hosted {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn migrations(&self) -> Vec<Box<dyn tutela_store::Migrations>> {
        vec![tutela_store::migrations_of::<SurveyMigrator>(SERVICE)]
    }

    fn check_settings(&self, section: Option<&serde_json::Value>) -> Result<(), String> {
        settings(section).map(|_| ())
    }

    fn build(&self, ctx: &Context, served: &mut Served) -> Result<(), BuildError> {
        let enrolment = settings(Some(&ctx.settings))?
            .client(ctx.local_endpoint.as_ref(), ctx.service_tokens.clone())?;
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
                    People::new(enrolment),
                ))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            )
            .grpc(
                ReleaseServiceServer::new(ReleaseService::new(
                    surveys.clone(),
                    ctx.register.releases,
                ))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            )
            .subject_data(Arc::new(SurveyRights::new(surveys)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_are_the_enrolment_endpoint_and_nothing_else() {
        assert!(settings(None).unwrap().endpoint().is_empty());
        let remote = serde_json::json!({ "enrolment_endpoint": "http://enrolment:50051" });
        assert_eq!(
            settings(Some(&remote)).unwrap().endpoint(),
            "http://enrolment:50051"
        );
        let err = settings(Some(&serde_json::json!({ "x": 1 }))).unwrap_err();
        assert!(
            err.contains("survey settings") && err.contains('x'),
            "{err}"
        );
    }
}
