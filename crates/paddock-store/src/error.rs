use thiserror::Error;

/// Why a store operation did not happen.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The named thing does not exist (or belongs to someone else). The string names it.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// A uniqueness or state rule refused the change; the message is for humans.
    #[error("{0}")]
    Conflict(String),
    /// A count limit was reached (e.g. active runs per deployment).
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// The run has ended, or is no longer `running` (it waits on a human); nothing more may
    /// be recorded for it by its worker.
    #[error("run has finished")]
    RunFinished,
    /// Another node holds the run's lease now: this worker must stop driving it.
    #[error("the run's lease is held by another node")]
    LeaseLost,
    /// The run's account has a balance ≤ 0 (spec §16.1): no model call may be made for it.
    #[error("the account has no credits left")]
    InsufficientCredits,
    /// The store's settings are unusable (e.g. a malformed schema name); the message says why.
    #[error("store configuration: {0}")]
    Config(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON document could not be read back.
    #[error("corrupt stored document: {0}")]
    Corrupt(#[from] serde_json::Error),
}
