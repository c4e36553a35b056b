//! `tutela.audit.v1.AuditService`: this process's audit log as a dpo asks it during a breach
//! investigation (X2), over gRPC, so that a deployment of separate processes, each with its own
//! log and its own pseudonym key, is asked process by process and answers in subject ids. The
//! subject asked about is turned into this process's pseudonym here; subjects found are resolved
//! to ids (an erased one resolves to no one), and each one named in the answer is itself an
//! access, audited as such.

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tonic::{Request, Response, Status};
use tutela_proto::audit::audit_service_server::AuditService as AuditApi;
use tutela_proto::audit::{AccessKind, AccessRecord, ListAccessesRequest, ListAccessesResponse};
use tutela_proto::common::{DataCategory, PageResponse, SubjectRef};

use super::entity;
use super::record::{EventKind, Outcome};
use super::writer::AuditLog;
use crate::validate::{Checks, next_page, page_token, time_of, timestamp};
use crate::{Authorized, CategorySet, Result};

/// The service over this process's log.
#[derive(Debug, Clone)]
pub struct AuditQueries {
    db: DatabaseConnection,
    log: AuditLog,
}

impl AuditQueries {
    /// Queries of the log in `db`, whose pseudonyms `log`'s keys make.
    pub fn new(db: DatabaseConnection, log: AuditLog) -> Self {
        Self { db, log }
    }

    async fn list(
        &self,
        call: &Authorized,
        r: &ListAccessesRequest,
    ) -> Result<ListAccessesResponse> {
        let mut c = Checks::new();
        let (size, after) = c.page(r.page.as_ref(), "page");
        let principal = c.optional(&r.principal_id, "principal_id", 128);
        let subject = match &r.subject {
            None => Ok(None),
            Some(s) => c.subject(Some(s), "subject").map(Some),
        };
        let from = c.parse(
            r.from.as_ref().and_then(time_of),
            "from",
            "required: the start of the window",
        );
        let to = c.parse(
            r.to.as_ref().and_then(time_of),
            "to",
            "required: the end of the window",
        );
        if let (Ok(from), Ok(to)) = (&from, &to) {
            c.ensure(from <= to, "to", "not before from");
        }
        let (principal, subject, from, to) = c.parsed((principal, subject, from, to))?;
        if principal.is_empty() && subject.is_none() {
            return Err(crate::Error::invalid(
                "principal_id",
                "give principal_id, subject or both: whose accesses, or to whom",
            ));
        }
        use entity::record::Column as C;
        let tenant = call.tenant();
        let mut query = entity::record::Entity::find()
            .filter(C::Tenant.eq(tenant))
            .filter(C::Kind.is_in([EventKind::Access.as_str(), EventKind::Write.as_str()]))
            .filter(C::Subject.is_not_null())
            .filter(C::At.gte(from))
            .filter(C::At.lte(to))
            .filter(C::Seq.gt(after));
        if !principal.is_empty() {
            query = query.filter(C::Principal.eq(principal));
        }
        if let Some(subject) = &subject {
            query = query.filter(C::Subject.eq(self.log.keys().pseudonym(tenant, subject)));
        }
        let mut rows = query
            .order_by_asc(C::Seq)
            .limit(size + 1)
            .all(&self.db)
            .await?;
        let next_page_token = next_page(&mut rows, size, |r| page_token(r.seq));
        let mut pseudonyms: Vec<String> = rows.iter().filter_map(|r| r.subject.clone()).collect();
        pseudonyms.sort_unstable();
        pseudonyms.dedup();
        let ids = super::query::resolve_pseudonyms(&self.db, tenant, &pseudonyms).await?;
        // Naming a subject is reading their identity: one access per subject named.
        // Their consent states are read in one batch, not one look-up per subject.
        let mut named: Vec<String> = ids.values().cloned().collect();
        named.sort_unstable();
        named.dedup();
        for access in call
            .subjects_for(&named, None, crate::consent::ConsentNeed::Register)
            .await?
        {
            access?.record(CategorySet::of(&[DataCategory::Identity]));
        }
        let records = rows
            .into_iter()
            .map(|row| {
                let pseudonym = row.subject.unwrap_or_default();
                AccessRecord {
                    at: Some(timestamp(row.at)),
                    principal_id: row.principal,
                    principal_kind: row.principal_kind,
                    rpc: row.rpc,
                    purpose: row.purpose,
                    subject: ids.get(&pseudonym).map(|id| SubjectRef {
                        subject_id: id.clone(),
                    }),
                    subject_pseudonym: pseudonym,
                    categories: row
                        .categories
                        .split(',')
                        .filter_map(DataCategory::from_short_name)
                        .map(|c| c as i32)
                        .collect(),
                    kind: if row.kind == EventKind::Write.as_str() {
                        AccessKind::Write
                    } else {
                        AccessKind::Read
                    } as i32,
                    allowed: row.decision == Outcome::Allow.as_str(),
                    reason: row.reason,
                }
            })
            .collect();
        Ok(ListAccessesResponse {
            records,
            page: Some(PageResponse { next_page_token }),
        })
    }
}

#[tonic::async_trait]
impl AuditApi for AuditQueries {
    async fn list_accesses(
        &self,
        request: Request<ListAccessesRequest>,
    ) -> std::result::Result<Response<ListAccessesResponse>, Status> {
        let call = Authorized::of(&request)?;
        Ok(Response::new(self.list(&call, request.get_ref()).await?))
    }
}
