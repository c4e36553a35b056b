//! `tutela.sharing.v1.PartnerService`: the partners of a tenant and their pseudonym keys.
//!
//! A partner is created with key version 1 in the same transaction as its row, so no partner
//! ever exists without a key; a rotation adds the next version and retires the previous one in
//! one transaction, which also stages the rotation's audit record. No response carries a key.

use sea_orm::ActiveValue::NotSet;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use tonic::{Request, Response, Status};
use tutela_policy::audit::Change;
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::validate::{Checks, timestamp};
use tutela_policy::{Authorized, Error, Result};
use tutela_proto::common::PageResponse;
use tutela_proto::sharing::partner_service_server::PartnerService as PartnerApi;
use tutela_proto::sharing::{
    CreatePartnerRequest, CreatePartnerResponse, GetPartnerRequest, GetPartnerResponse,
    ListPartnersRequest, ListPartnersResponse, Partner, PartnerKind, PartnerRole,
    RotatePartnerKeyRequest, RotatePartnerKeyResponse,
};

use crate::entity::{partner, partner_key};
use crate::sharing::{Sharing, next_page, page_size, record_id};
use crate::terms::{KINDS, ROLES, name, number};

// A partner row remembers the idempotency key and request of the CreatePartner that made it.
tutela_policy::idempotent_rows!(partner);

const CREATE: &str = "tutela.sharing.v1.PartnerService/CreatePartner";

/// A partner as the API shows it.
pub(crate) fn to_partner(row: &partner::Model) -> Partner {
    Partner {
        partner_id: row.partner_id.clone(),
        legal_name: row.legal_name.clone(),
        kind: number(&KINDS, &row.kind),
        role: number(&ROLES, &row.role),
        country: row.country.clone(),
        contact_email: row.contact_email.clone(),
        key_version: u32::try_from(row.key_version).unwrap_or(0),
        created_at: Some(timestamp(row.created_at)),
    }
}

/// A CreatePartnerRequest, checked.
struct NewPartner {
    legal_name: String,
    kind: &'static str,
    role: &'static str,
    country: String,
    contact_email: String,
    idempotency: Option<Idempotency>,
}

impl TryFrom<&CreatePartnerRequest> for NewPartner {
    type Error = Error;

    fn try_from(r: &CreatePartnerRequest) -> Result<Self> {
        let p = r.partner.clone().unwrap_or_default();
        let mut c = Checks::new();
        let legal_name = c.required(&p.legal_name, "partner.legal_name", 300);
        let kind = PartnerKind::try_from(p.kind)
            .ok()
            .and_then(|k| name(&KINDS, k));
        let kind = c.parse(kind, "partner.kind", "required: one of the partner kinds");
        let role = PartnerRole::try_from(p.role)
            .ok()
            .and_then(|k| name(&ROLES, k));
        let role = c.parse(
            role,
            "partner.role",
            "required: controller, processor or joint controller",
        );
        let country = p.country.trim();
        let country = c.parse(
            tutela_policy::validate::is_assigned_country_code(country).then_some(country),
            "partner.country",
            "required: an assigned ISO 3166-1 alpha-2 code in capitals, e.g. GB",
        );
        let email = p.contact_email.trim();
        let email = c.parse(
            tutela_policy::validate::is_email(email).then_some(email),
            "partner.contact_email",
            "required: an email address",
        );
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        let (legal_name, kind, role, country, email, key) =
            c.parsed((legal_name, kind, role, country, email, key))?;
        Ok(Self {
            legal_name: legal_name.to_owned(),
            kind,
            role,
            country: country.to_owned(),
            contact_email: email.to_owned(),
            idempotency: Idempotency::of_request(key, CREATE, r, |m| m.idempotency_key = None),
        })
    }
}

/// `tutela.sharing.v1.PartnerService`.
#[derive(Debug, Clone)]
pub struct PartnerService {
    sharing: Sharing,
}

impl PartnerService {
    /// The service over `sharing`.
    pub fn new(sharing: Sharing) -> Self {
        Self { sharing }
    }

    async fn create(&self, call: &Authorized, new: NewPartner) -> Result<partner::Model> {
        let s = &self.sharing;
        if let Some(row) =
            idempotency::replay::<partner::Entity>(call, &s.db, new.idempotency.as_ref()).await?
        {
            return Ok(row);
        }
        let (key, request_hash) = Idempotency::columns(new.idempotency.as_ref());
        let now = s.now();
        let partner_id = uuid::Uuid::now_v7().to_string();
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        let row = partner::ActiveModel {
            partner_id: Set(partner_id.clone()),
            tenant: Set(call.tenant().to_owned()),
            legal_name: Set(new.legal_name),
            kind: Set(new.kind.to_owned()),
            role: Set(new.role.to_owned()),
            country: Set(new.country),
            contact_email: Set(new.contact_email),
            key_version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
            idempotency_key: Set(key),
            request_hash: Set(request_hash),
        }
        .insert(&txn)
        .await
        .map_err(idempotency::key_taken)?;
        let sealed = s
            .keys
            .new_sealed(&txn, call.tenant(), &partner_id, 1)
            .await?;
        partner_key::ActiveModel {
            partner_id: Set(partner_id),
            version: Set(1),
            tenant: Set(call.tenant().to_owned()),
            sealed_key: Set(sealed),
            created_at: Set(now),
            retired_at: Set(None),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(row)
    }

    async fn rotate(&self, call: &Authorized, partner_id: &str) -> Result<partner::Model> {
        let s = &self.sharing;
        let now = s.now();
        let txn = tutela_store::begin(&s.db).await?;
        // The decision's record first: on SQLite the transaction then holds the write lock
        // before it reads anything.
        call.record_in(&txn).await?;
        let row = s.lock_partner(&txn, call, partner_id, true).await?;
        let version = row.key_version;
        call.update::<partner_key::Entity>()
            .col_expr(partner_key::Column::RetiredAt, Expr::value(Some(now)))
            .filter(partner_key::Column::PartnerId.eq(partner_id))
            .filter(partner_key::Column::RetiredAt.is_null())
            .exec(&txn)
            .await?;
        let new_version = u32::try_from(version)
            .map_err(|_| Error::internal("a partner key version out of range"))?;
        let sealed = s
            .keys
            .new_sealed(&txn, call.tenant(), partner_id, new_version)
            .await?;
        partner_key::ActiveModel {
            partner_id: Set(partner_id.to_owned()),
            version: Set(version),
            tenant: Set(call.tenant().to_owned()),
            sealed_key: Set(sealed),
            created_at: Set(now),
            retired_at: NotSet,
        }
        .insert(&txn)
        .await?;
        let staged = s
            .audit
            .change_in(
                &txn,
                call,
                Change::PartnerKeyRotated {
                    partner_id: partner_id.to_owned(),
                    key_version: new_version,
                },
            )
            .await?;
        txn.commit().await?;
        staged.append().await?;
        tracing::info!(partner_id, key_version = new_version, "partner key rotated");
        Ok(row)
    }
}

#[tonic::async_trait]
impl PartnerApi for PartnerService {
    async fn create_partner(
        &self,
        request: Request<CreatePartnerRequest>,
    ) -> std::result::Result<Response<CreatePartnerResponse>, Status> {
        let call = Authorized::of(&request)?;
        let new = NewPartner::try_from(request.get_ref())?;
        let row = self.create(&call, new).await?;
        Ok(Response::new(CreatePartnerResponse {
            partner: Some(to_partner(&row)),
        }))
    }

    async fn get_partner(
        &self,
        request: Request<GetPartnerRequest>,
    ) -> std::result::Result<Response<GetPartnerResponse>, Status> {
        let call = Authorized::of(&request)?;
        let id = record_id(&request.get_ref().partner_id, "partner_id")?;
        let row = self.sharing.partner(&self.sharing.db, &call, &id).await?;
        Ok(Response::new(GetPartnerResponse {
            partner: Some(to_partner(&row)),
        }))
    }

    async fn list_partners(
        &self,
        request: Request<ListPartnersRequest>,
    ) -> std::result::Result<Response<ListPartnersResponse>, Status> {
        let call = Authorized::of(&request)?;
        let page = request.get_ref().page.as_ref();
        let size = page_size(page);
        // The token is the last partner id of the previous page: ids are UUIDv7, so their order
        // is their creation order.
        let after = page.map(|p| p.page_token.trim()).unwrap_or_default();
        let mut query = call
            .find::<partner::Entity>()
            .order_by_asc(partner::Column::PartnerId)
            .limit(size + 1);
        if !after.is_empty() {
            let after = record_id(after, "page.page_token").map_err(|_| {
                Error::invalid("page.page_token", "not a token this service returned")
            })?;
            query = query.filter(partner::Column::PartnerId.gt(after));
        }
        let mut rows = query.all(&self.sharing.db).await.map_err(Error::from)?;
        let next_page_token = next_page(&mut rows, size, |r| r.partner_id.clone());
        Ok(Response::new(ListPartnersResponse {
            partners: rows.iter().map(to_partner).collect(),
            page: Some(PageResponse { next_page_token }),
        }))
    }

    async fn rotate_partner_key(
        &self,
        request: Request<RotatePartnerKeyRequest>,
    ) -> std::result::Result<Response<RotatePartnerKeyResponse>, Status> {
        let call = Authorized::of(&request)?;
        let id = record_id(&request.get_ref().partner_id, "partner_id")?;
        let row = self.rotate(&call, &id).await?;
        Ok(Response::new(RotatePartnerKeyResponse {
            partner: Some(to_partner(&row)),
        }))
    }
}
