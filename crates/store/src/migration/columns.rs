//! The column and index shapes every service's tables use, one spelling for all of them: the same
//! SeaQuery definitions give the same types on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;

/// A row number: 64-bit, assigned by the database, the primary key.
pub fn seq<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

/// Required text.
pub fn text<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name).string().not_null().to_owned()
}

/// Optional text.
pub fn optional<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name).string().null().to_owned()
}

/// A required instant, with its time zone.
pub fn time<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

/// An optional instant, with its time zone.
pub fn optional_time<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

/// A required 32-bit integer.
pub fn number<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name).integer().not_null().to_owned()
}

/// Creates the index `name` on `columns` of `table`, unique or not.
pub async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    columns: Vec<DynIden>,
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table);
    for c in columns {
        index.col(c);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}
