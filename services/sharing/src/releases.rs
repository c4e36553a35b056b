//! Survey releases shared with partners (V1: survey answers leave the organisation only as
//! releases). The release is read from the survey service over its gRPC contract as a `service`
//! principal ([`Surveys`]), its results checked against the output hash the survey service
//! recorded when it made the release, and kept as read, so that what the partner pulls is
//! exactly what was shared, whatever happens to the survey later.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sea_orm::{ActiveModelTrait, ColumnTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tutela_host::peer::{PeerSettings, authorise};
use tutela_host::{BuildError, ServiceTokens};
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::scope::found;
use tutela_policy::validate::{Checks, timestamp};
use tutela_policy::{Authorized, Error, Result};
use tutela_proto::common::PageResponse;
use tutela_proto::sharing::{
    PullSharedReleasesRequest, PullSharedReleasesResponse, ShareReleaseRequest, SharedRelease,
};
use tutela_proto::survey::release_service_client::ReleaseServiceClient;
use tutela_proto::survey::{GetReleaseRequest, Release};

use crate::entity::{partner, release_share};
use crate::sharing::{Sharing, next_page, page_size, record_id};

// A share remembers the idempotency key and request of the ShareRelease that made it.
tutela_policy::idempotent_rows!(release_share);

const SHARE: &str = "tutela.sharing.v1.DisclosureService/ShareRelease";

/// How long reading one release may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The survey service's releases, as the sharing service reads them.
#[derive(Clone)]
pub struct Surveys {
    client: ReleaseServiceClient<Channel>,
    tokens: Arc<dyn ServiceTokens>,
}

impl std::fmt::Debug for Surveys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surveys").finish_non_exhaustive()
    }
}

impl Surveys {
    /// The client of the survey service `settings` name (or this process's own address);
    /// `None` for a command that does not serve and has none configured.
    pub fn new(
        settings: &PeerSettings,
        local_endpoint: Option<&tutela_host::LocalEndpoint>,
        tokens: Arc<dyn ServiceTokens>,
    ) -> std::result::Result<Option<Self>, BuildError> {
        Ok(settings
            .channel(local_endpoint, READ_TIMEOUT)?
            .map(|channel| Self {
                client: ReleaseServiceClient::new(channel),
                tokens,
            }))
    }

    /// The release `release_id` of `tenant`, read for `quality_assurance`, its results checked
    /// against its output hash. NOT_FOUND passes through; any other failure is UNAVAILABLE.
    async fn release(&self, tenant: &str, release_id: &str) -> Result<Release> {
        let token = self
            .tokens
            .token(tenant)
            .map_err(|e| Error::Unavailable(format!("no service token for survey: {e}")))?;
        let mut request = tonic::Request::new(GetReleaseRequest {
            release_id: release_id.to_owned(),
        });
        authorise(&mut request, &token, "quality_assurance")?;
        let release = match self.client.clone().get_release(request).await {
            Ok(response) => response.into_inner().release,
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(Error::NotFound("release"));
            }
            Err(status) => {
                return Err(Error::Unavailable(format!(
                    "the survey service answered {:?}: {}",
                    status.code(),
                    status.message()
                )));
            }
        }
        .ok_or_else(|| Error::Unavailable("the survey service sent no release".into()))?;
        let encoded = release
            .results
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the release came without results".into()))?
            .encoded();
        if hex::encode(Sha256::digest(&encoded)) != release.output_sha256 {
            // What came is not what the survey service recorded making: share nothing.
            return Err(Error::internal(
                "a release's results do not match its recorded output hash",
            ));
        }
        Ok(release)
    }
}

/// Shares a release with a partner (see the RPC's contract).
pub(crate) async fn share(
    sharing: &Sharing,
    surveys: Option<&Surveys>,
    call: &Authorized,
    r: &ShareReleaseRequest,
) -> Result<SharedRelease> {
    let mut c = Checks::new();
    let partner_id = c.uuid(&r.partner_id, "partner_id");
    let release_id = c.uuid(&r.release_id, "release_id");
    let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
    let (partner_id, release_id, key) = c.parsed((partner_id, release_id, key))?;
    let idempotency = Idempotency::of_request(key, SHARE, r, |m| m.idempotency_key = None);
    if let Some(row) =
        idempotency::replay::<release_share::Entity>(call, &sharing.db, idempotency.as_ref())
            .await?
    {
        return to_proto(&row);
    }
    found(
        call.find::<partner::Entity>()
            .filter(partner::Column::PartnerId.eq(&partner_id))
            .one(&sharing.db)
            .await?,
        "partner",
    )?;
    let surveys = surveys.ok_or_else(|| {
        Error::Unavailable("no survey service is configured to read releases from".into())
    })?;
    let release = surveys.release(call.tenant(), &release_id).await?;
    let (key, request_hash) = Idempotency::columns(idempotency.as_ref());
    let txn = tutela_store::begin(&sharing.db).await?;
    call.record_in(&txn).await?;
    let row = release_share::ActiveModel {
        share_id: Set(uuid::Uuid::now_v7().to_string()),
        tenant: Set(call.tenant().to_owned()),
        partner_id: Set(partner_id),
        release_id: Set(release_id),
        survey_id: Set(release.survey_id.clone()),
        output_sha256: Set(release.output_sha256.clone()),
        release: Set(release.encode_to_vec()),
        shared_at: Set(sharing.clock.now()),
        shared_by: Set(call.principal().id.clone()),
        idempotency_key: Set(key),
        request_hash: Set(request_hash),
    }
    .insert(&txn)
    .await
    .map_err(idempotency::key_taken)?;
    txn.commit().await?;
    tracing::info!(share_id = %row.share_id, release_id = %row.release_id, "release shared");
    to_proto(&row)
}

/// The releases shared with the calling partner, a page at a time.
pub(crate) async fn pull(
    sharing: &Sharing,
    call: &Authorized,
    r: &PullSharedReleasesRequest,
) -> Result<PullSharedReleasesResponse> {
    let size = page_size(r.page.as_ref());
    // The rules let only partner tokens here; the partner is the token's, never the request's.
    let Some(partner_id) = call.principal().partner.clone() else {
        return Err(Error::Denied);
    };
    let mut query = call
        .find::<release_share::Entity>()
        .filter(release_share::Column::PartnerId.eq(partner_id))
        .order_by_asc(release_share::Column::ShareId)
        .limit(size + 1);
    // The token is the last share id of the previous page: ids are UUIDv7, so their order is
    // their creation order.
    let after = r
        .page
        .as_ref()
        .map(|p| p.page_token.trim())
        .unwrap_or_default();
    if !after.is_empty() {
        let after = record_id(after, "page.page_token")
            .map_err(|_| Error::invalid("page.page_token", "not a token this service returned"))?;
        query = query.filter(release_share::Column::ShareId.gt(after));
    }
    let mut rows = query.all(&sharing.db).await?;
    let next_page_token = next_page(&mut rows, size, |row| row.share_id.clone());
    Ok(PullSharedReleasesResponse {
        releases: rows.iter().map(to_proto).collect::<Result<_>>()?,
        page: Some(PageResponse { next_page_token }),
    })
}

fn to_proto(row: &release_share::Model) -> Result<SharedRelease> {
    Ok(SharedRelease {
        share_id: row.share_id.clone(),
        partner_id: row.partner_id.clone(),
        release: Some(
            Release::decode(row.release.as_slice())
                .map_err(|_| Error::internal("a shared release does not decode"))?,
        ),
        shared_at: Some(timestamp(row.shared_at)),
        shared_by: row.shared_by.clone(),
    })
}
