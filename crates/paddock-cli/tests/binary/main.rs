//! The `paddock` binary as users run it: real processes, signals, crashes and several nodes.
//!
//! One test binary for the whole suite (each file a module): the crate links once, not once per
//! file, which saves minutes of linking and gigabytes of disk in CI.

// Test code: a failed expectation should stop the test with a clear panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod common;
mod crash;
mod durability;
mod keys;
mod logs;
mod shutdown;
mod walkthrough;
