//! `tutela.sharing.v1.AgreementService`: versioned data-sharing agreements.
//!
//! Guarantees: an agreement names only fields that exist in the enrolment contract, each of a
//! data category the processing register allows for the purpose it is named under, on a legal
//! basis the register gives that purpose; a partner abroad without adequacy gets nothing without
//! a named safeguard; the terms are written once and never changed (there is no update: a change
//! is a new version); and no two active versions of one partner's agreement overlap in time.
//! Version numbers and activations of one partner take turns under the partner's row lock, so
//! concurrent calls cannot both take a version or both pass the overlap check.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use tonic::{Request, Response, Status};
use tutela_policy::audit::Change;
use tutela_policy::idempotency::{self, Idempotency};
use tutela_policy::scope::found;
use tutela_policy::validate::{Checks, timestamp};
use tutela_policy::{Authorized, CategorySet, Error, Precondition, Result, Violation};
use tutela_proto::common::{LegalBasis, PageResponse, Purpose};
use tutela_proto::sharing::agreement_service_server::AgreementService as AgreementApi;
use tutela_proto::sharing::{
    ActivateAgreementRequest, ActivateAgreementResponse, Agreement, AgreementPurpose,
    AgreementState, CreateAgreementRequest, CreateAgreementResponse, GetAgreementRequest,
    GetAgreementResponse, ListAgreementsRequest, ListAgreementsResponse, PurposeTerms,
    TerminateAgreementRequest, TerminateAgreementResponse, TransferSafeguard,
};

use crate::duration::IsoDuration;
use crate::entity::{agreement, agreement_purpose, partner};
use crate::paths;
use crate::sharing::{Sharing, next_page, page_size, record_id, time_of};
use crate::terms::{
    ACTIVE, DRAFT, SAFEGUARDS, TERMINATED, agreement_purpose, name, number, purpose_of, state_at,
};

// An agreement row remembers the idempotency key and request of the CreateAgreement that made it.
tutela_policy::idempotent_rows!(agreement);

const CREATE: &str = "tutela.sharing.v1.AgreementService/CreateAgreement";

/// One purpose's terms, checked against the contract and the register.
#[derive(Debug, Clone)]
struct Terms {
    purpose: Purpose,
    basis: LegalBasis,
    fields: Vec<String>,
}

/// A CreateAgreementRequest, checked.
#[derive(Debug)]
struct NewAgreement {
    partner_id: String,
    valid_from: DateTime<Utc>,
    valid_to: Option<DateTime<Utc>>,
    purposes: Vec<Terms>,
    partner_retention: String,
    access_period: String,
    safeguard: TransferSafeguard,
    safeguard_reference: String,
    idempotency: Option<Idempotency>,
}

impl NewAgreement {
    /// Checks the request: every field's shape, then (when those are sound) the data categories
    /// of the named fields against the register. Shape problems come first and all at once
    /// (INVALID_ARGUMENT); a category the register does not allow for its purpose is then
    /// CATEGORY_NOT_FOR_PURPOSE, a violation per field, like the enrolment service's writes.
    fn check(r: &CreateAgreementRequest, register: &tutela_policy::Register) -> Result<Self> {
        let mut c = Checks::new();
        let partner_id = match uuid::Uuid::parse_str(r.partner_id.trim()) {
            Ok(id) => Ok(id.hyphenated().to_string()),
            Err(_) => Err(c.flag("partner_id", "required: the partner's id (a UUID)")),
        };
        let valid_from = c.parse(
            r.valid_from.as_ref().and_then(time_of),
            "valid_from",
            "required: when the agreement starts to apply",
        );
        let valid_to = r.valid_to.as_ref().and_then(time_of);
        if let (Ok(from), Some(to)) = (&valid_from, valid_to) {
            c.ensure(to > *from, "valid_to", "must be after valid_from");
        }
        c.ensure(
            !r.purposes.is_empty(),
            "purposes",
            "required: at least one purpose with its basis and fields",
        );
        let mut purposes = Vec::new();
        let mut categories: Vec<Vec<(String, CategorySet)>> = Vec::new();
        for (i, p) in r.purposes.iter().enumerate() {
            let (terms, fields) = Self::purpose(&mut c, i, p, register, &purposes);
            if let Some(terms) = terms {
                purposes.push(terms);
                categories.push(fields);
            }
        }
        let retention = match IsoDuration::parse(&r.partner_retention) {
            Ok(d) => Ok(d.to_string()),
            Err(why) if r.partner_retention.trim().is_empty() => {
                Err(c.flag("partner_retention", format!("required: {why}")))
            }
            Err(why) => Err(c.flag("partner_retention", why)),
        };
        let access = if r.access_period.trim().is_empty() {
            Ok(String::new())
        } else {
            IsoDuration::parse(&r.access_period)
                .map(|d| d.to_string())
                .map_err(|why| c.flag("access_period", why))
        };
        let safeguard = match TransferSafeguard::try_from(r.transfer_safeguard) {
            Ok(TransferSafeguard::Unspecified) => Ok(TransferSafeguard::None),
            Ok(s) => Ok(s),
            Err(_) => Err(c.flag("transfer_safeguard", "not a transfer safeguard")),
        };
        let reference = r.safeguard_reference.trim();
        if let Ok(s) = &safeguard {
            if *s == TransferSafeguard::None {
                c.ensure(
                    reference.is_empty(),
                    "safeguard_reference",
                    "only with a transfer safeguard",
                );
            } else {
                c.ensure(
                    !reference.is_empty(),
                    "safeguard_reference",
                    "required with a transfer safeguard: where it is documented",
                );
            }
        }
        let key = c.key(r.idempotency_key.as_ref(), "idempotency_key");
        let (partner_id, valid_from, retention, access, safeguard, key) =
            c.parsed((partner_id, valid_from, retention, access, safeguard, key))?;

        // Data minimisation (S3): each field's categories within what the register lets the
        // purpose touch.
        let mut not_allowed = Vec::new();
        for (terms, fields) in purposes.iter().zip(&categories) {
            let rule = register
                .rule(terms.purpose)
                .ok_or(Error::PurposeNotRegistered(terms.purpose.short_name()))?;
            for (path, cats) in fields {
                let outside = cats.without(rule.categories);
                if !outside.is_empty() {
                    not_allowed.push(Violation::new(
                        path.clone(),
                        format!(
                            "{} data is not allowed for the purpose {} (processing register)",
                            outside.names().join(", "),
                            terms.purpose.short_name()
                        ),
                    ));
                }
            }
        }
        if !not_allowed.is_empty() {
            return Err(Error::NotForPurpose(not_allowed));
        }
        Ok(Self {
            partner_id,
            valid_from,
            valid_to,
            purposes,
            partner_retention: retention,
            access_period: access,
            safeguard,
            safeguard_reference: reference.to_owned(),
            idempotency: Idempotency::of_request(key, CREATE, r, |m| m.idempotency_key = None),
        })
    }

    /// The terms of `purposes[i]`, with the categories of each of its fields by violation path;
    /// `None` when the purpose itself is unusable (its violation recorded).
    fn purpose(
        c: &mut Checks,
        i: usize,
        p: &PurposeTerms,
        register: &tutela_policy::Register,
        earlier: &[Terms],
    ) -> (Option<Terms>, Vec<(String, CategorySet)>) {
        let at = |field: &str| format!("purposes[{i}].{field}");
        let purpose = AgreementPurpose::try_from(p.purpose)
            .ok()
            .and_then(purpose_of);
        let Some(purpose) = purpose else {
            c.fail(
                at("purpose"),
                "required: exam_booking, exam_results, funder_reporting, \
                 malpractice_investigation or legal_obligation",
            );
            return (None, Vec::new());
        };
        if earlier.iter().any(|t| t.purpose == purpose) {
            c.fail(at("purpose"), "named twice: one entry per purpose");
        }
        let bases = register
            .rule(purpose)
            .map(|r| r.legal_bases.clone())
            .unwrap_or_default();
        let basis = LegalBasis::try_from(p.legal_basis)
            .ok()
            .filter(|b| *b != LegalBasis::Unspecified);
        match basis {
            None => c.fail(at("legal_basis"), "required: the disclosure's legal basis"),
            Some(b) if !bases.is_empty() && !bases.contains(&b) => c.fail(
                at("legal_basis"),
                format!(
                    "not a basis the processing register gives {}: {}",
                    purpose.short_name(),
                    bases
                        .iter()
                        .map(|b| b.short_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(_) => {}
        }
        if p.fields.is_empty() {
            c.fail(
                at("fields"),
                "required: at least one field the partner may receive",
            );
        }
        let mut fields = Vec::new();
        let mut categories = Vec::new();
        for (j, raw) in p.fields.iter().enumerate() {
            let path = raw.trim();
            let field = at(&format!("fields[{j}]"));
            if fields.iter().any(|f: &String| f == path) {
                c.fail(field, "named twice");
                continue;
            }
            match paths::categories(path) {
                Ok(cats) => {
                    fields.push(path.to_owned());
                    categories.push((field, cats));
                }
                Err(err) => c.fail(field, err.describe()),
            }
        }
        let terms = basis.map(|basis| Terms {
            purpose,
            basis,
            fields,
        });
        (terms, categories)
    }
}

/// An agreement as the API shows it, with its terms, in its state at `now`.
fn to_agreement(
    row: &agreement::Model,
    purposes: &[agreement_purpose::Model],
    now: DateTime<Utc>,
) -> Agreement {
    Agreement {
        agreement_id: row.agreement_id.clone(),
        partner_id: row.partner_id.clone(),
        version: u32::try_from(row.version).unwrap_or(0),
        state: state_at(&row.state, row.valid_to, now) as i32,
        valid_from: Some(timestamp(row.valid_from)),
        valid_to: row.valid_to.map(timestamp),
        purposes: purposes
            .iter()
            .filter(|p| p.agreement_id == row.agreement_id)
            .map(|p| PurposeTerms {
                purpose: agreement_purpose(&p.purpose) as i32,
                legal_basis: LegalBasis::from_short_name(&p.legal_basis).map_or(0, |b| b as i32),
                fields: serde_json::from_str(&p.fields).unwrap_or_default(),
            })
            .collect(),
        partner_retention: row.partner_retention.clone(),
        access_period: row.access_period.clone(),
        transfer_safeguard: number(&SAFEGUARDS, &row.transfer_safeguard),
        safeguard_reference: row.safeguard_reference.clone(),
        created_at: Some(timestamp(row.created_at)),
        activated_at: row.activated_at.map(timestamp),
        terminated_at: row.terminated_at.map(timestamp),
    }
}

/// Refuses a transfer to `partner`'s country that needs a safeguard when `safeguard` is none.
fn check_transfer(sharing: &Sharing, partner: &partner::Model, safeguard: &str) -> Result<()> {
    if safeguard == "none" && sharing.register.transfers.needs_safeguard(&partner.country) {
        return Err(Error::TransferSafeguardRequired {
            country: partner.country.clone(),
        });
    }
    Ok(())
}

/// Whether two validity periods share a moment (an absent end is open).
fn overlap(
    a: (DateTime<Utc>, Option<DateTime<Utc>>),
    b: (DateTime<Utc>, Option<DateTime<Utc>>),
) -> bool {
    a.1.is_none_or(|end| b.0 < end) && b.1.is_none_or(|end| a.0 < end)
}

/// `tutela.sharing.v1.AgreementService`.
#[derive(Debug, Clone)]
pub struct AgreementService {
    sharing: Sharing,
}

impl AgreementService {
    /// The service over `sharing`.
    pub fn new(sharing: Sharing) -> Self {
        Self { sharing }
    }

    async fn agreement<C: ConnectionTrait>(
        &self,
        conn: &C,
        call: &Authorized,
        agreement_id: &str,
    ) -> Result<agreement::Model> {
        found(
            call.find::<agreement::Entity>()
                .filter(agreement::Column::AgreementId.eq(agreement_id))
                .one(conn)
                .await?,
            "agreement",
        )
    }

    async fn purposes<C: ConnectionTrait>(
        &self,
        conn: &C,
        call: &Authorized,
        ids: Vec<String>,
    ) -> Result<Vec<agreement_purpose::Model>> {
        Ok(call
            .find::<agreement_purpose::Entity>()
            .filter(agreement_purpose::Column::AgreementId.is_in(ids))
            .all(conn)
            .await?)
    }

    /// One agreement as the API shows it.
    async fn shown(&self, call: &Authorized, row: &agreement::Model) -> Result<Agreement> {
        let purposes = self
            .purposes(&self.sharing.db, call, vec![row.agreement_id.clone()])
            .await?;
        Ok(to_agreement(row, &purposes, self.sharing.now()))
    }

    async fn create(&self, call: &Authorized, new: NewAgreement) -> Result<agreement::Model> {
        let s = &self.sharing;
        if let Some(row) =
            idempotency::replay::<agreement::Entity>(call, &s.db, new.idempotency.as_ref()).await?
        {
            return Ok(row);
        }
        let safeguard = name(&SAFEGUARDS, new.safeguard).unwrap_or("none");
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        let partner = s.lock_partner(&txn, call, &new.partner_id, false).await?;
        check_transfer(s, &partner, safeguard)?;
        let versions: Vec<i32> = call
            .find::<agreement::Entity>()
            .select_only()
            .column(agreement::Column::Version)
            .filter(agreement::Column::PartnerId.eq(new.partner_id.as_str()))
            .into_tuple()
            .all(&txn)
            .await?;
        let version = versions.into_iter().max().unwrap_or(0) + 1;
        let (key, request_hash) = Idempotency::columns(new.idempotency.as_ref());
        let agreement_id = uuid::Uuid::now_v7().to_string();
        let row = agreement::ActiveModel {
            agreement_id: Set(agreement_id.clone()),
            tenant: Set(call.tenant().to_owned()),
            partner_id: Set(new.partner_id),
            version: Set(version),
            state: Set(DRAFT.to_owned()),
            valid_from: Set(new.valid_from),
            valid_to: Set(new.valid_to),
            partner_retention: Set(new.partner_retention),
            access_period: Set(new.access_period),
            transfer_safeguard: Set(safeguard.to_owned()),
            safeguard_reference: Set(new.safeguard_reference),
            created_at: Set(s.now()),
            activated_at: Set(None),
            terminated_at: Set(None),
            idempotency_key: Set(key),
            request_hash: Set(request_hash),
        }
        .insert(&txn)
        .await
        .map_err(idempotency::key_taken)?;
        let rows: Vec<agreement_purpose::ActiveModel> = new
            .purposes
            .iter()
            .map(|t| agreement_purpose::ActiveModel {
                agreement_id: Set(agreement_id.clone()),
                purpose: Set(t.purpose.short_name().to_owned()),
                tenant: Set(call.tenant().to_owned()),
                legal_basis: Set(t.basis.short_name().to_owned()),
                fields: Set(serde_json::Value::from(t.fields.clone()).to_string()),
            })
            .collect();
        agreement_purpose::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(row)
    }

    async fn activate(&self, call: &Authorized, agreement_id: &str) -> Result<agreement::Model> {
        let s = &self.sharing;
        let now = s.now();
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        let row = self.agreement(&txn, call, agreement_id).await?;
        // Under the partner's lock, so that two activations of one partner take turns.
        let partner = s.lock_partner(&txn, call, &row.partner_id, false).await?;
        if row.state != DRAFT {
            return Err(Error::FailedPrecondition {
                reason: Precondition::InvalidTransition,
                message: "only a draft can be activated; an agreement in force is never \
                          changed: create a new version"
                    .into(),
            });
        }
        if row.valid_to.is_some_and(|end| end <= now) {
            return Err(Error::FailedPrecondition {
                reason: Precondition::InvalidTransition,
                message: "the draft's validity has already ended".into(),
            });
        }
        check_transfer(s, &partner, &row.transfer_safeguard)?;
        let active: Vec<agreement::Model> = call
            .find::<agreement::Entity>()
            .filter(agreement::Column::PartnerId.eq(row.partner_id.as_str()))
            .filter(agreement::Column::State.eq(ACTIVE))
            .all(&txn)
            .await?;
        if let Some(other) = active
            .iter()
            .find(|a| overlap((a.valid_from, a.valid_to), (row.valid_from, row.valid_to)))
        {
            return Err(Error::FailedPrecondition {
                reason: Precondition::AgreementOverlap,
                message: format!(
                    "version {} of this partner's agreement is active for part of the same \
                     period; terminate it first, or start this one when it ends",
                    other.version
                ),
            });
        }
        let updated = call
            .update::<agreement::Entity>()
            .col_expr(agreement::Column::State, Expr::value(ACTIVE))
            .col_expr(agreement::Column::ActivatedAt, Expr::value(Some(now)))
            .filter(agreement::Column::AgreementId.eq(agreement_id))
            .filter(agreement::Column::State.eq(DRAFT))
            .exec_with_returning(&txn)
            .await?;
        let row = found(updated.into_iter().next(), "agreement")?;
        let staged = s
            .audit
            .change_in(
                &txn,
                call,
                Change::AgreementActivated {
                    agreement_id: row.agreement_id.clone(),
                    partner_id: row.partner_id.clone(),
                    version: u32::try_from(row.version).unwrap_or(0),
                },
            )
            .await?;
        txn.commit().await?;
        staged.append().await?;
        tracing::info!(
            agreement_id,
            partner_id = %row.partner_id,
            version = row.version,
            "agreement activated"
        );
        Ok(row)
    }

    async fn terminate(&self, call: &Authorized, agreement_id: &str) -> Result<agreement::Model> {
        let s = &self.sharing;
        let now = s.now();
        let txn = tutela_store::begin(&s.db).await?;
        call.record_in(&txn).await?;
        let row = self.agreement(&txn, call, agreement_id).await?;
        if state_at(&row.state, row.valid_to, now) != AgreementState::Active {
            return Err(Error::FailedPrecondition {
                reason: Precondition::InvalidTransition,
                message: "only an agreement in force can be terminated".into(),
            });
        }
        let updated = call
            .update::<agreement::Entity>()
            .col_expr(agreement::Column::State, Expr::value(TERMINATED))
            .col_expr(agreement::Column::TerminatedAt, Expr::value(Some(now)))
            .filter(agreement::Column::AgreementId.eq(agreement_id))
            .filter(agreement::Column::State.eq(ACTIVE))
            .exec_with_returning(&txn)
            .await?;
        let row = found(updated.into_iter().next(), "agreement")?;
        txn.commit().await?;
        Ok(row)
    }
}

#[tonic::async_trait]
impl AgreementApi for AgreementService {
    async fn create_agreement(
        &self,
        request: Request<CreateAgreementRequest>,
    ) -> std::result::Result<Response<CreateAgreementResponse>, Status> {
        let call = Authorized::of(&request)?;
        let new = NewAgreement::check(request.get_ref(), &self.sharing.register)?;
        let row = self.create(&call, new).await?;
        Ok(Response::new(CreateAgreementResponse {
            agreement: Some(self.shown(&call, &row).await?),
        }))
    }

    async fn activate_agreement(
        &self,
        request: Request<ActivateAgreementRequest>,
    ) -> std::result::Result<Response<ActivateAgreementResponse>, Status> {
        let call = Authorized::of(&request)?;
        let id = record_id(&request.get_ref().agreement_id, "agreement_id")?;
        let row = self.activate(&call, &id).await?;
        Ok(Response::new(ActivateAgreementResponse {
            agreement: Some(self.shown(&call, &row).await?),
        }))
    }

    async fn get_agreement(
        &self,
        request: Request<GetAgreementRequest>,
    ) -> std::result::Result<Response<GetAgreementResponse>, Status> {
        let call = Authorized::of(&request)?;
        let id = record_id(&request.get_ref().agreement_id, "agreement_id")?;
        let row = self.agreement(&self.sharing.db, &call, &id).await?;
        Ok(Response::new(GetAgreementResponse {
            agreement: Some(self.shown(&call, &row).await?),
        }))
    }

    async fn list_agreements(
        &self,
        request: Request<ListAgreementsRequest>,
    ) -> std::result::Result<Response<ListAgreementsResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let partner_id = record_id(&r.partner_id, "partner_id")?;
        let size = page_size(r.page.as_ref());
        // The token is the last version of the previous page.
        let token = r
            .page
            .as_ref()
            .map(|p| p.page_token.trim())
            .unwrap_or_default();
        let after = if token.is_empty() {
            0
        } else {
            token
                .strip_prefix('v')
                .and_then(|v| v.parse::<i32>().ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| {
                    Error::invalid("page.page_token", "not a token this service returned")
                })?
        };
        let db = &self.sharing.db;
        // Another tenant's partner is NOT_FOUND, not an empty list.
        self.sharing.partner(db, &call, &partner_id).await?;
        let mut rows = call
            .find::<agreement::Entity>()
            .filter(agreement::Column::PartnerId.eq(partner_id.as_str()))
            .filter(agreement::Column::Version.gt(after))
            .order_by_asc(agreement::Column::Version)
            .limit(size + 1)
            .all(db)
            .await
            .map_err(Error::from)?;
        let next_page_token = next_page(&mut rows, size, |r| format!("v{}", r.version));
        let ids = rows.iter().map(|r| r.agreement_id.clone()).collect();
        let purposes = self.purposes(db, &call, ids).await?;
        let now = self.sharing.now();
        Ok(Response::new(ListAgreementsResponse {
            agreements: rows
                .iter()
                .map(|row| to_agreement(row, &purposes, now))
                .collect(),
            page: Some(PageResponse { next_page_token }),
        }))
    }

    async fn terminate_agreement(
        &self,
        request: Request<TerminateAgreementRequest>,
    ) -> std::result::Result<Response<TerminateAgreementResponse>, Status> {
        let call = Authorized::of(&request)?;
        let id = record_id(&request.get_ref().agreement_id, "agreement_id")?;
        let row = self.terminate(&call, &id).await?;
        Ok(Response::new(TerminateAgreementResponse {
            agreement: Some(self.shown(&call, &row).await?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_overlap_when_they_share_a_moment() {
        let t = |d: u32| {
            DateTime::parse_from_rfc3339(&format!("2027-01-{d:02}T00:00:00Z"))
                .unwrap()
                .to_utc()
        };
        assert!(overlap((t(1), Some(t(10))), (t(5), Some(t(20)))));
        assert!(overlap((t(1), None), (t(20), Some(t(25)))));
        assert!(overlap((t(5), None), (t(1), None)));
        // End is exclusive: one may start the moment the other ends.
        assert!(!overlap((t(1), Some(t(10))), (t(10), None)));
        assert!(!overlap((t(10), Some(t(20))), (t(1), Some(t(10)))));
    }
}
