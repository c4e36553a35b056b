//! The sharing service as a `tutela` process hosts it: its migrations and its two gRPC services.
//! It holds no learner's data yet, so it has no part in data-subject rights and no sweeper.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use tutela_host::{BoxFuture, BuildError, Context, HostedService, RecipientEntry, Served};
use tutela_policy::Register;
use tutela_proto::sharing::agreement_service_server::AgreementServiceServer;
use tutela_proto::sharing::partner_service_server::PartnerServiceServer;

use crate::{AgreementService, PartnerService, SERVICE, Sharing, SharingMigrator};

/// The sharing service's [`HostedService`].
pub(crate) struct Hosted;

impl HostedService for Hosted {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn migrations(&self) -> Vec<Box<dyn tutela_store::Migrations>> {
        vec![tutela_store::migrations_of::<SharingMigrator>(SERVICE)]
    }

    fn build(&self, ctx: &Context, served: &mut Served) -> Result<(), BuildError> {
        let sharing = Sharing::new(
            ctx.db.clone(),
            ctx.keyring.clone(),
            ctx.audit.clone(),
            ctx.clock.clone(),
            ctx.register.clone(),
        );
        let max = ctx.max_message_bytes;
        served
            .grpc(
                PartnerServiceServer::new(PartnerService::new(sharing.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .grpc(
                AgreementServiceServer::new(AgreementService::new(sharing))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            );
        Ok(())
    }

    fn recipients<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        register: &'a Register,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<RecipientEntry>, BuildError>> {
        Box::pin(async move { Ok(crate::recipients::in_force(db, register, now).await?) })
    }
}
