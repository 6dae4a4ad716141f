//! The PostgreSQL implementation of [`Store`](crate::Store), for several Paddock nodes sharing
//! one database.
//!
//! It runs the same statements as the SQLite store (`src/sql/`, written once); what differs is
//! in `dialect`. The shared statements were written for one serialised writer, so every write
//! transaction first takes one transaction-scoped advisory lock: transactions commit one at a
//! time across all nodes, exactly as on SQLite, while reads and single-statement writes (lease
//! renewals, key touches) run concurrently. Claims lock the rows they take
//! (`FOR UPDATE SKIP LOCKED`), and a transaction that checks a run's lease locks the run row,
//! so a run is never driven by two nodes.

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

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::StoreError;

/// The names the shared statements (`src/sql/`) are written against.
type Db = sqlx::Postgres;
type DbConn = sqlx::PgConnection;
type DbPool = PgPool;
type DbRow = sqlx::postgres::PgRow;
type DbStore = PgStore;

/// How a [`PgStore`] connects.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database?…` (libpq-style URL).
    pub url: String,
    /// The most connections this node opens.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// The schema to keep Paddock's tables in (created if missing); `None` uses the
    /// connection's `search_path` (normally `public`). Lets tests, or several installations,
    /// share one database.
    pub schema: Option<String>,
}

impl PgSettings {
    /// Settings with the defaults: 10 connections, 10 s acquire timeout, default schema.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            schema: None,
        }
    }
}

/// Paddock's store on a PostgreSQL database. Cheap to clone; every clone shares one pool.
#[derive(Clone)]
pub struct PgStore {
    // The shared statements name a writer and a reader pool (SQLite keeps them apart); here
    // both are the one pool.
    writer: PgPool,
    reader: PgPool,
}

impl PgStore {
    /// Connects and applies pending migrations (a PostgreSQL advisory lock makes concurrent
    /// starts of several nodes apply them once).
    pub async fn connect(settings: &PgSettings) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(&settings.url)?;
        if let Some(schema) = &settings.schema {
            if !is_plain_identifier(schema) {
                return Err(StoreError::Config(format!(
                    "PostgreSQL schema `{schema}` must be letters, digits and `_`, starting with a letter or `_`"
                )));
            }
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options.clone())
                .await?;
            // The name was checked above: it cannot close the quotes.
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&admin)
                .await?;
            admin.close().await;
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
        })
    }

    /// The connection pool, for the event wake-ups (`LISTEN`) and tests.
    pub fn pool(&self) -> &PgPool {
        &self.reader
    }
}

fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}
