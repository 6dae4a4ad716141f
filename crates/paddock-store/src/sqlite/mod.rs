//! The SQLite implementation of [`Store`](crate::Store).
//!
//! One file holds the whole database in WAL mode. Writes go through a pool of exactly one
//! connection, so write transactions are serialised in-process and never meet `SQLITE_BUSY`;
//! reads use a separate pool and see committed data only.

// The statements and their Rust are shared with the PostgreSQL backend (`src/sql/`, written
// once); what differs between the two databases is in `dialect`.
#[path = "../sql/automations.rs"]
#[allow(clippy::duplicate_mod)] // compiled once per backend, on purpose
mod automations;
#[path = "../sql/credit_holds.rs"]
#[allow(clippy::duplicate_mod)] // compiled once per backend, on purpose
mod credit_holds;
mod dialect;
#[path = "../sql/dreaming.rs"]
#[allow(clippy::duplicate_mod)] // compiled once per backend, on purpose
mod dreaming;
#[path = "../sql/map.rs"]
#[allow(clippy::duplicate_mod)] // compiled once per backend, on purpose
mod map;
#[path = "../sql/memories.rs"]
#[allow(clippy::duplicate_mod)] // compiled once per backend, on purpose
mod memories;
#[path = "../sql/paging.rs"]
#[allow(clippy::duplicate_mod)] // compiled once per backend, on purpose
mod paging;
#[path = "../sql/skills.rs"]
#[allow(clippy::duplicate_mod)] // compiled once per backend, on purpose
mod skills;
#[path = "../sql/store_impl.rs"]
#[allow(clippy::duplicate_mod)] // compiled once per backend, on purpose
mod store_impl;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::StoreError;

/// The names the shared statements (`src/sql/`) are written against.
type Db = sqlx::Sqlite;
type DbConn = sqlx::SqliteConnection;
type DbPool = SqlitePool;
type DbRow = sqlx::sqlite::SqliteRow;
type DbStore = SqliteStore;

/// Paddock's store on one SQLite file. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode loses nothing on a process crash (kill -9); only an OS
            // crash or power loss can drop the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }
}
