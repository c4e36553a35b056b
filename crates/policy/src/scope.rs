//! Tenant scoping of every query: services find rows through these helpers, which add the
//! caller's tenant to the query, so a row of another tenant is never read and looks exactly like
//! one that does not exist (NOT_FOUND).

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Select};

use crate::authorized::{Authorized, SubjectAccess};
use crate::error::{Error, Result};

/// An entity whose rows belong to one tenant.
pub trait TenantScoped: EntityTrait {
    /// The column that holds the tenant.
    const TENANT: Self::Column;
}

/// An entity whose rows belong to one data subject within a tenant.
pub trait SubjectScoped: TenantScoped {
    /// The column that holds the subject id.
    const SUBJECT: Self::Column;
}

/// Rows of `E` in `tenant`.
pub fn within<E: TenantScoped>(tenant: &str) -> Select<E> {
    E::find().filter(E::TENANT.eq(tenant))
}

impl Authorized {
    /// Rows of `E` in the caller's tenant.
    pub fn find<E: TenantScoped>(&self) -> Select<E> {
        within::<E>(self.tenant())
    }
}

impl SubjectAccess {
    /// Rows of `E` of this subject in the caller's tenant.
    pub fn find<E: SubjectScoped>(&self) -> Select<E> {
        within::<E>(self.tenant()).filter(E::SUBJECT.eq(self.subject_id()))
    }
}

/// The row a scoped query found, or NOT_FOUND naming `what`.
pub fn found<T>(row: Option<T>, what: &'static str) -> Result<T> {
    row.ok_or(Error::NotFound(what))
}

/// What every tutela entity module repeats after its `Model`: no relations, the default
/// behaviour, and the tenant (and subject) column the scoping helpers filter on. Use it inside
/// the entity's module, after `use sea_orm::entity::prelude::*;`.
#[macro_export]
macro_rules! scoped_entity {
    (tenant: $tenant:ident) => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}

        impl $crate::scope::TenantScoped for Entity {
            const TENANT: Column = Column::$tenant;
        }
    };
    (tenant: $tenant:ident, subject: $subject:ident) => {
        $crate::scoped_entity!(tenant: $tenant);

        impl $crate::scope::SubjectScoped for Entity {
            const SUBJECT: Column = Column::$subject;
        }
    };
}
