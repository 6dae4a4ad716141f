//! Integration tests of the HTTP API: a real server on port 0 with the real SQLite store, a
//! fake OpenAI-compatible model server, and the typed client. One test binary (faster to link);
//! one module per area.

// Test code: a failed expectation should stop the test with a clear panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
