//! The server's HTTP API suite: real servers on port 0, driven by `paddock-client` and raw HTTP.
//!
//! One test binary for the whole suite (each file a module): the crate links once, not once per
//! file, which saves minutes of linking and gigabytes of disk in CI.

// Test code: a failed expectation should stop the test with a clear panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attachments;
mod automations;
mod cancel;
mod common;
mod compaction;
mod credits;
mod dreaming;
mod events;
mod files;
mod flow;
mod mcp;
mod memories;
mod models;
mod openapi;
mod protocol;
mod resources;
mod restarts;
mod sandbox;
mod secrets;
mod skills;
mod steering;
