//! Outbound requests Paddock makes for its clients (spec §1.13): attachments, `url` skills and
//! MCP servers open connections to URLs a client supplied, so each connection is checked.
//!
//! [`AddressPolicy`] decides which addresses are refused (loopback, private, link-local,
//! carrier-grade NAT, multicast, broadcast, documentation, cloud metadata and reserved ranges,
//! IPv4-mapped forms included) and holds the operator's exceptions. [`GuardedClient`] is an
//! HTTP client that applies the policy to every address a host name resolves to and after
//! every redirect (at most 5), connects to the address it checked, and fetches within a size
//! cap and a total timeout. It sends no credentials of the server's: it has none.
//!
//! ```no_run
//! # async fn example() -> Result<(), paddock_net::FetchError> {
//! use paddock_net::{AddressPolicy, FetchLimits, GuardedClient};
//! use std::time::Duration;
//!
//! let client = GuardedClient::new(AddressPolicy::default(), Duration::from_secs(10))?;
//! let limits = FetchLimits { max_bytes: 100 * 1024, total_timeout: Duration::from_secs(10) };
//! let skill = client.get("https://example.com/SKILL.md", limits).await?;
//! println!("{} bytes", skill.body.len());
//! # Ok(()) }
//! ```

mod client;
mod policy;

pub use client::{FetchError, FetchLimits, Fetched, GuardedClient, MAX_REDIRECTS, from_reqwest};
pub use policy::{AddressClass, AddressPolicy, Cidr, InvalidCidr, RefusedAddress, classify};
