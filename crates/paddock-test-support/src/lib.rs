//! Test doubles shared by Paddock's test suites.
//!
//! [`FakeOpenAi`] is an OpenAI-compatible Chat Completions server that answers scripted,
//! deterministic streams over the real wire protocol and records every request it receives.

// Test code: a failed expectation should stop the test with a clear panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fake_openai;

pub use fake_openai::{FakeOpenAi, Gate, Script};
