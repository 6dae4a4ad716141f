//! Test doubles shared by Paddock's test suites.
//!
//! Fake model vendors that answer scripted, deterministic streams over each vendor's real wire
//! protocol and record every request they receive: [`FakeOpenAi`] (Chat Completions),
//! [`FakeAnthropic`] (the Messages API) and [`FakeGemini`] (`streamGenerateContent`). They share
//! one [`Script`] language, [`Gate`]s to pause a stream, and the scripting and recording
//! methods of [`FakeServer`], which each of them dereferences to.

// Test code: a failed expectation should stop the test with a clear panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fake_anthropic;
pub mod fake_gemini;
pub mod fake_mcp;
pub mod fake_openai;
mod fake_server;

pub use fake_anthropic::FakeAnthropic;
pub use fake_gemini::FakeGemini;
pub use fake_mcp::{FakeMcp, McpRequest};
pub use fake_openai::FakeOpenAi;
pub use fake_server::{FakeServer, Gate, RecordedRequest, Responder, Script};
