//! The databases the store suite runs on: every test runs once on SQLite (a file in a fresh
//! temporary directory) and once on PostgreSQL (a fresh schema in the database named by
//! `PADDOCK_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`). A
//! PostgreSQL that cannot be reached fails the PostgreSQL half; it is never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use paddock_store::{PgSettings, PgStore, SqliteStore, Store};

/// Which implementation a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database URL PostgreSQL tests connect to.
pub fn postgres_url() -> String {
    std::env::var("PADDOCK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Keeps a test's database alive, and removes it when the test ends.
pub struct TestDatabase {
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        // The tests run on a multi-threaded runtime (see `on_both_backends!`), so the
        // schema can be dropped synchronously here, even while a failed test unwinds.
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&postgres_url()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        });
    }
}

/// An empty, migrated store on `backend`.
pub async fn open(backend: Backend) -> (TestDatabase, Arc<dyn Store>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("paddock.db"))
                .await
                .unwrap();
            let db = TestDatabase {
                _dir: Some(dir),
                schema: None,
            };
            (db, Arc::new(store))
        }
        Backend::Postgres => {
            static N: AtomicU32 = AtomicU32::new(0);
            let schema = format!(
                "store_test_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let mut settings = PgSettings::new(postgres_url());
            settings.schema = Some(schema.clone());
            let store = PgStore::connect(&settings).await.unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {} is needed by the store suite: {e}",
                    postgres_url()
                )
            });
            let db = TestDatabase {
                _dir: None,
                schema: Some(schema),
            };
            (db, Arc::new(store))
        }
    }
}

/// Turns each `async fn name(backend: Backend)` named into two tests, `sqlite::name` and
/// `postgres::name`, on a multi-threaded runtime (concurrency is part of what is tested).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}
