//! The rights service's own part in rights handling: what it holds on a person is the record of
//! their requests (kept after an erasure, as the evidence that each request was handled, GDPR
//! Art. 5(2)) and the exports kept for their access bundles (erased: the rows lose them and the
//! subject's key in this service's vault is shredded, so no copy stays readable).

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
use serde_json::json;
use tutela_policy::rights::{SubjectDataProvider, rfc3339};
use tutela_policy::validate::timestamp;
use tutela_policy::{CategorySet, Error, Result, SubjectAccess};
use tutela_proto::common::DataCategory;
use tutela_proto::privacy::{RetainedRecord, ServiceErasure, ServiceExport, ServiceHoldings};

use crate::entity::{request, task};
use crate::{Rights, SERVICE};

/// Why the requests stay after an erasure.
const KEPT: &str = "the record of each rights request is kept to show it was handled (GDPR Art. 5(2)); it holds no data beyond the request itself";

/// Describe, export and erase what the rights service holds on a person.
#[derive(Debug, Clone)]
pub struct OwnRights {
    rights: Rights,
}

impl OwnRights {
    /// The provider over `rights`.
    pub fn new(rights: Rights) -> Self {
        Self { rights }
    }

    async fn requests(&self, access: &SubjectAccess) -> Result<Vec<request::Model>> {
        Ok(access
            .find::<request::Entity>()
            .order_by_asc(request::Column::Seq)
            .all(&self.rights.db)
            .await?)
    }

    async fn kept_exports(&self, access: &SubjectAccess) -> Result<u64> {
        Ok(access
            .find::<task::Entity>()
            .filter(task::Column::Export.is_not_null())
            .all(&self.rights.db)
            .await?
            .len() as u64)
    }
}

fn held(requests: &[request::Model], exports: u64) -> CategorySet {
    let mut held = CategorySet::EMPTY;
    if !requests.is_empty() {
        held.insert(DataCategory::Identity);
    }
    if exports > 0 {
        // The kept exports are copies of every category the services export.
        held = held.union(CategorySet::personal());
    }
    held
}

#[async_trait::async_trait]
impl SubjectDataProvider for OwnRights {
    fn service(&self) -> &'static str {
        SERVICE
    }

    async fn describe(&self, access: &SubjectAccess) -> Result<ServiceHoldings> {
        let requests = self.requests(access).await?;
        let exports = self.kept_exports(access).await?;
        Ok(ServiceHoldings {
            service: SERVICE.to_owned(),
            categories: held(&requests, exports).iter().map(|c| c as i32).collect(),
            restricted: false,
            objected_to: Vec::new(),
            legal_hold: false,
        })
    }

    async fn export(&self, access: &SubjectAccess) -> Result<ServiceExport> {
        let requests = self.requests(access).await?;
        let listed: Vec<serde_json::Value> = requests
            .iter()
            .map(|r| {
                json!({
                    "request_id": r.request_id,
                    "kind": r.kind,
                    "requester": r.requester,
                    "state": r.state,
                    "reference": r.reference,
                    "received_at": rfc3339(r.received_at),
                    "deadline": rfc3339(r.deadline),
                    "extension_reason": r.extension_reason,
                    "identity_verified_at": r.identity_verified_at.map(rfc3339),
                    "refusal_reason": r.refusal_reason,
                    "finished_at": r.finished_at.map(rfc3339),
                })
            })
            .collect();
        let document = json!({ "service": SERVICE, "rights_requests": listed });
        let categories = if requests.is_empty() {
            Vec::new()
        } else {
            vec![DataCategory::Identity as i32]
        };
        Ok(ServiceExport {
            service: SERVICE.to_owned(),
            media_type: "application/json".into(),
            document: serde_json::to_vec(&document).map_err(Error::internal)?,
            categories,
        })
    }

    async fn erase(&self, access: &SubjectAccess, _reason: &str) -> Result<ServiceErasure> {
        let requests = self.requests(access).await?;
        let exports = self.kept_exports(access).await?;
        let txn = tutela_store::begin(&self.rights.db).await?;
        access.record_in(&txn, held(&requests, exports)).await?;
        let erased = access
            .update::<task::Entity>()
            .col_expr(task::Column::Export, Expr::value(Option::<Vec<u8>>::None))
            .filter(task::Column::Export.is_not_null())
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        // Then the key: a copy of an export in a backup stays sealed for good.
        self.rights
            .vault
            .shred(access.tenant(), access.subject_id())
            .await
            .map_err(Error::from)?;
        Ok(ServiceErasure {
            service: SERVICE.to_owned(),
            records_erased: erased,
            retained: if requests.is_empty() {
                Vec::new()
            } else {
                vec![RetainedRecord {
                    record_type: "rights_request".into(),
                    count: requests.len() as u64,
                    hold_reason: KEPT.into(),
                }]
            },
            erased_at: Some(timestamp(self.rights.now())),
        })
    }
}
