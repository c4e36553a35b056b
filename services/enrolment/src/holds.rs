//! Legal holds: `tutela.enrolment.v1.LegalHoldService`, and what erasure and the retention
//! sweeper ask of holds.

use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
};
use tonic::{Request, Response, Status};
use tutela_policy::Precondition;
use tutela_policy::scope::found;
use tutela_policy::validate::timestamp;
use tutela_policy::{Authorized, Error, Result, SubjectAccess};
use tutela_proto::common::SubjectRef;
use tutela_proto::enrolment::legal_hold_service_server::LegalHoldService as HoldApi;
use tutela_proto::enrolment::{
    HoldScope, LegalHold, ListLegalHoldsRequest, ListLegalHoldsResponse, PlaceLegalHoldRequest,
    PlaceLegalHoldResponse, ReleaseLegalHoldRequest, ReleaseLegalHoldResponse,
};

pub use crate::held::Held;
use crate::records::Records;
use crate::records::entity::{enrolment, result};
use crate::requests::{NewHold, Release};

/// The legal-hold table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "legal_holds")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant: String,
        pub hold_id: String,
        pub learner_id: String,
        /// The scope's proto name (`HOLD_SCOPE_RESULT`, ...).
        pub scope: String,
        pub record_id: String,
        pub reason: String,
        pub placed_by: String,
        pub placed_at: DateTimeUtc,
        pub released_at: Option<DateTimeUtc>,
        pub released_by: Option<String>,
        pub release_reason: Option<String>,
    }

    tutela_policy::scoped_entity!(tenant: Tenant, subject: LearnerId);
}

/// Hold look-ups.
#[derive(Debug, Clone)]
pub struct Holds {
    db: DatabaseConnection,
}

impl Holds {
    /// Holds in `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The holds in force on a learner.
    pub async fn of(&self, access: &SubjectAccess) -> Result<Held> {
        let mut held = Held::default();
        for row in access
            .find::<entity::Entity>()
            .filter(entity::Column::ReleasedAt.is_null())
            .all(&self.db)
            .await?
        {
            held.protect(&row.scope, &row.record_id, &row.reason);
        }
        Ok(held)
    }

    /// The holds in force on the learners `which` selects, by tenant and learner (the retention
    /// sweeper asks for one page of learners at a time, and so sees a hold placed mid-sweep).
    pub async fn in_force(
        &self,
        which: sea_orm::Condition,
    ) -> Result<HashMap<(String, String), Held>> {
        let mut all: HashMap<(String, String), Held> = HashMap::new();
        for row in entity::Entity::find()
            .filter(entity::Column::ReleasedAt.is_null())
            .filter(which)
            .all(&self.db)
            .await?
        {
            all.entry((row.tenant.clone(), row.learner_id.clone()))
                .or_default()
                .protect(&row.scope, &row.record_id, &row.reason);
        }
        Ok(all)
    }
}

fn to_hold(row: &entity::Model) -> LegalHold {
    LegalHold {
        hold_id: row.hold_id.clone(),
        learner: Some(SubjectRef {
            subject_id: row.learner_id.clone(),
        }),
        scope: HoldScope::from_str_name(&row.scope).unwrap_or(HoldScope::Learner) as i32,
        record_id: row.record_id.clone(),
        reason: row.reason.clone(),
        placed_by: row.placed_by.clone(),
        placed_at: Some(timestamp(row.placed_at)),
        released_at: row.released_at.map(timestamp),
        released_by: row.released_by.clone().unwrap_or_default(),
        release_reason: row.release_reason.clone().unwrap_or_default(),
    }
}

/// `tutela.enrolment.v1.LegalHoldService`.
#[derive(Debug, Clone)]
pub struct LegalHoldService {
    db: DatabaseConnection,
    records: Records,
}

impl LegalHoldService {
    /// The service over the learners' `records`.
    pub fn new(records: Records) -> Self {
        Self {
            db: records.db().clone(),
            records,
        }
    }
}

#[tonic::async_trait]
impl HoldApi for LegalHoldService {
    async fn place_legal_hold(
        &self,
        request: Request<PlaceLegalHoldRequest>,
    ) -> std::result::Result<Response<PlaceLegalHoldResponse>, Status> {
        let call = Authorized::of(&request)?;
        let r = request.get_ref();
        let NewHold {
            reason,
            scope,
            record_id,
        } = NewHold::try_from(r)?;
        let access = self
            .records
            .learner_access(&call, r.learner.as_ref(), "learner")
            .await?;
        let exists = match scope {
            HoldScope::Enrolment => access
                .find::<enrolment::Entity>()
                .filter(enrolment::Column::EnrolmentId.eq(&record_id))
                .one(&self.db)
                .await
                .map_err(Error::from)?
                .is_some(),
            HoldScope::Result => access
                .find::<result::Entity>()
                .filter(result::Column::ResultId.eq(&record_id))
                .one(&self.db)
                .await
                .map_err(Error::from)?
                .is_some(),
            _ => true,
        };
        if !exists {
            return Err(Error::NotFound("record").into());
        }
        let txn = tutela_store::begin(&self.db).await.map_err(Error::from)?;
        let row = entity::ActiveModel {
            tenant: Set(access.tenant().to_owned()),
            hold_id: Set(uuid::Uuid::new_v4().to_string()),
            learner_id: Set(access.subject_id().to_owned()),
            scope: Set(scope.as_str_name().to_owned()),
            record_id: Set(record_id),
            reason: Set(reason),
            placed_by: Set(call.principal().id.clone()),
            placed_at: Set(self.records.now()),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(Error::from)?;
        access
            .record_in(&txn, tutela_policy::CategorySet::EMPTY)
            .await?;
        txn.commit().await.map_err(Error::from)?;
        tracing::info!(scope = scope.as_str_name(), "legal hold placed");
        Ok(Response::new(PlaceLegalHoldResponse {
            hold: Some(to_hold(&row)),
        }))
    }

    async fn release_legal_hold(
        &self,
        request: Request<ReleaseLegalHoldRequest>,
    ) -> std::result::Result<Response<ReleaseLegalHoldResponse>, Status> {
        let call = Authorized::of(&request)?;
        let Release { hold_id, reason } = Release::try_from(request.get_ref())?;
        let row = found(
            call.find::<entity::Entity>()
                .filter(entity::Column::HoldId.eq(&hold_id))
                .one(&self.db)
                .await
                .map_err(Error::from)?,
            "legal hold",
        )?;
        // Releasing is processing of the learner's records too: within reach, audited.
        let access = call.subject(&row.learner_id).await?;
        if row.released_at.is_some() {
            return Err(Error::FailedPrecondition {
                reason: Precondition::HoldReleased,
                message: "the hold was released already".into(),
            }
            .into());
        }
        let mut active: entity::ActiveModel = row.into();
        active.released_at = Set(Some(self.records.now()));
        active.released_by = Set(Some(call.principal().id.clone()));
        active.release_reason = Set(Some(reason));
        let txn = tutela_store::begin(&self.db).await.map_err(Error::from)?;
        let row = active.update(&txn).await.map_err(Error::from)?;
        access
            .record_in(&txn, tutela_policy::CategorySet::EMPTY)
            .await?;
        txn.commit().await.map_err(Error::from)?;
        tracing::info!("legal hold released");
        Ok(Response::new(ReleaseLegalHoldResponse {
            hold: Some(to_hold(&row)),
        }))
    }

    async fn list_legal_holds(
        &self,
        request: Request<ListLegalHoldsRequest>,
    ) -> std::result::Result<Response<ListLegalHoldsResponse>, Status> {
        let call = Authorized::of(&request)?;
        let access = self
            .records
            .subject_access(&call, request.get_ref().learner.as_ref(), "learner")
            .await?;
        let rows = access
            .find::<entity::Entity>()
            .order_by_asc(entity::Column::Seq)
            .all(&self.db)
            .await
            .map_err(Error::from)?;
        // Holds outlive the profile: those of an erased learner keep their records, and the dpo
        // must be able to find them.
        if rows.is_empty() && !self.records.learners().exists(&access).await? {
            return Err(Error::NotFound("learner").into());
        }
        access.record(tutela_policy::CategorySet::EMPTY);
        Ok(Response::new(ListLegalHoldsResponse {
            holds: rows.iter().map(to_hold).collect(),
        }))
    }
}
