//! Errors of the storage layer. Services map them to gRPC statuses in their one error mapping.

use sea_orm::DbErr;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the operation.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    /// The subject's data key was destroyed by an erasure: what it protected is gone for good.
    #[error("the subject's data was erased")]
    Erased,
    /// No data key exists for the subject in this scope.
    #[error("no data key exists for the subject")]
    KeyNotFound,
    /// A ciphertext did not authenticate: it was altered, or it belongs to another subject or
    /// field than the one asked for.
    #[error("ciphertext failed authentication (altered, or bound to another subject or field)")]
    Decrypt,
    /// The key-encryption key that wrapped a data key is not in the configured keyring.
    #[error("key-encryption key {0:?} is not configured")]
    UnknownKek(String),
    /// Configuration of the store is invalid (the message names the setting, never a secret).
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Random,
}

/// Result of a storage operation.
pub type StoreResult<T> = Result<T, StoreError>;
