//! The store suite, run against SQLite and PostgreSQL.
//!
//! One test binary for the whole suite (each file a module): the crate links once, not once per
//! file, which saves minutes of linking and gigabytes of disk in CI.

// Test code: a failed expectation should stop the test with a clear panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Declared first: its macros are used by the modules below.
#[macro_use]
mod common;
mod automations;
mod credit_holds;
mod leases;
mod rate_buckets;
