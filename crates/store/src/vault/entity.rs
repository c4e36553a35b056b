//! Row of the key vault.

use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tutela_subject_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub scope: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject_id: String,
    /// Assigned by the database in creation order; see [`super::SubjectKey::handle`].
    pub seq: i64,
    pub kek_id: String,
    pub wrapped_key: Option<Vec<u8>>,
    pub created_at: DateTimeUtc,
    pub shredded_at: Option<DateTimeUtc>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectKeyRow")
            .field("scope", &self.scope)
            .field("tenant", &self.tenant)
            .field("kek_id", &self.kek_id)
            .field("shredded", &self.shredded_at.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
