//! Tenant scoping of every query: services find rows through these helpers, which add the
//! caller's tenant to the query, so a row of another tenant is never read and looks exactly like
//! one that does not exist (NOT_FOUND).

use sea_orm::{
    ColumnTrait, DeleteMany, EntityTrait, ModelTrait, QueryFilter, Select, UpdateMany, Value,
};

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

/// A tenant that queries may be scoped to, held only by code that reached it legitimately:
/// an authorised call ([`Authorized::scope`], made by the guard), or a row already read
/// ([`Tenant::of_row`]): one found by the globally unique id a verified message token names, or
/// by a sweeper's scan of due rows. Nothing makes one from a string, so a query cannot be
/// scoped to a tenant taken from a request's fields (in the manner of svix's `secure_find`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tenant(String);

// A tenant id names a training organisation, not a person.
impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Tenant").field(&self.0).finish()
    }
}

impl Tenant {
    /// The tenant of a verified principal (the guard's, through [`Authorized`]).
    pub(crate) fn verified(tenant: String) -> Self {
        Self(tenant)
    }

    /// A tenant named outright, for tests that drive a consent source or a query directly.
    #[cfg(any(test, feature = "testing"))]
    pub fn named(tenant: &str) -> Self {
        Self(tenant.to_owned())
    }

    /// The tenant `row` belongs to: what a token-authorised call or a sweeper scopes the rest
    /// of its work to, once it has found the row by its globally unique id or as due.
    pub fn of_row<M>(row: &M) -> Result<Self>
    where
        M: ModelTrait,
        M::Entity: TenantScoped,
    {
        match row.get(<M::Entity as TenantScoped>::TENANT) {
            Value::String(Some(tenant)) => Ok(Self(tenant)),
            _ => Err(Error::internal("a tenant-scoped row without its tenant")),
        }
    }

    /// The tenant's id, for the rows a write inserts.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rows of `E` in this tenant.
    pub fn find<E: TenantScoped>(&self) -> Select<E> {
        E::find().filter(E::TENANT.eq(self.0.as_str()))
    }

    /// Updates rows of `E` in this tenant (narrowed further by the caller's filter).
    pub fn update<E: TenantScoped>(&self) -> UpdateMany<E> {
        E::update_many().filter(E::TENANT.eq(self.0.as_str()))
    }

    /// Rows of `E` of `subject` in this tenant.
    pub fn find_subject<E: SubjectScoped>(&self, subject: &str) -> Select<E> {
        self.find::<E>().filter(E::SUBJECT.eq(subject))
    }

    /// Deletes the rows of `E` of `subject` in this tenant (erasure).
    pub fn delete_subject<E: SubjectScoped>(&self, subject: &str) -> DeleteMany<E> {
        E::delete_many()
            .filter(E::TENANT.eq(self.0.as_str()))
            .filter(E::SUBJECT.eq(subject))
    }

    /// Updates the rows of `E` of `subject` in this tenant.
    pub fn update_subject<E: SubjectScoped>(&self, subject: &str) -> UpdateMany<E> {
        E::update_many()
            .filter(E::TENANT.eq(self.0.as_str()))
            .filter(E::SUBJECT.eq(subject))
    }
}

impl Authorized {
    /// Rows of `E` in the caller's tenant.
    pub fn find<E: TenantScoped>(&self) -> Select<E> {
        self.scope().find::<E>()
    }

    /// Updates rows of `E` in the caller's tenant (narrowed further by the caller's filter).
    pub fn update<E: TenantScoped>(&self) -> UpdateMany<E> {
        self.scope().update::<E>()
    }
}

impl SubjectAccess {
    /// Rows of `E` of this subject in the caller's tenant.
    pub fn find<E: SubjectScoped>(&self) -> Select<E> {
        self.call().scope().find_subject::<E>(self.subject_id())
    }

    /// Deletes the rows of `E` of this subject in the caller's tenant (erasure).
    pub fn delete<E: SubjectScoped>(&self) -> DeleteMany<E> {
        self.call().scope().delete_subject::<E>(self.subject_id())
    }

    /// Updates the rows of `E` of this subject in the caller's tenant.
    pub fn update<E: SubjectScoped>(&self) -> UpdateMany<E> {
        self.call().scope().update_subject::<E>(self.subject_id())
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

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, QueryTrait};

    use super::*;

    mod note {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "notes")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub seq: i64,
            pub tenant: String,
            pub subject_id: String,
        }

        crate::scoped_entity!(tenant: Tenant, subject: SubjectId);
    }

    #[test]
    fn a_row_yields_its_own_tenant_and_queries_scoped_by_it_filter_on_it() {
        let row = note::Model {
            seq: 1,
            tenant: "acme".into(),
            subject_id: "s-1".into(),
        };
        let tenant = Tenant::of_row(&row).unwrap();
        assert_eq!(tenant, Tenant::named("acme"));

        let find = tenant
            .find::<note::Entity>()
            .build(DbBackend::Sqlite)
            .to_string();
        assert!(find.contains(r#""notes"."tenant" = 'acme'"#), "{find}");
        let delete = tenant
            .delete_subject::<note::Entity>("s-1")
            .build(DbBackend::Sqlite)
            .to_string();
        assert!(
            delete.contains(r#""notes"."tenant" = 'acme'"#)
                && delete.contains(r#""notes"."subject_id" = 's-1'"#),
            "{delete}"
        );
    }
}
