//! Model providers against fake vendor servers speaking the real wire protocols, the local model and llama.cpp's real server.
//!
//! One test binary for the whole suite (each file a module): the crate links once, not once per
//! file, which saves minutes of linking and gigabytes of disk in CI.

// Test code: a failed expectation should stop the test with a clear panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod anthropic;
mod common;
mod google;
mod local_model;
mod openai;
mod pull;
mod real_openai_server;
mod registry;
