//! The guarded HTTP client: every connection goes to an address the [`AddressPolicy`] allows.
//!
//! Host names are resolved by Paddock's own resolver, which refuses the whole name when any of
//! its addresses is refused, and hands reqwest exactly the addresses it checked, so there is
//! no second resolution between check and connect. Literal IP hosts (which reqwest never
//! resolves; the URL parser has already turned decimal, octal and hex IPv4 spellings into
//! ordinary addresses) are checked before the request and at every redirect. Proxies from the
//! environment are ignored, so a proxy cannot reach what the policy refuses.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Url, redirect};

use crate::policy::{AddressPolicy, RefusedAddress};

/// Most redirects a fetch follows (spec §1.13).
pub const MAX_REDIRECTS: usize = 5;

/// Size and time limits of one fetch. Each feature has its own (attachments: 50 MiB and
/// 60 s; `url` skills: 100 KiB and 10 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Most body bytes read; a larger body fails the fetch.
    pub max_bytes: u64,
    /// The whole fetch, redirects and body included.
    pub total_timeout: Duration,
}

/// What a successful fetch brought back.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Bytes,
    /// The `Content-Type` the server sent, if any (not to be trusted: sniff the body).
    pub content_type: Option<String>,
    /// The URL after redirects.
    pub final_url: Url,
}

/// Why a fetch failed. The `Display` text names the reason and is meant for the client or
/// the model (it never contains credentials: Paddock sends none).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{0}` is not a valid URL")]
    InvalidUrl(String),
    #[error("only http and https URLs are fetched, not `{0}`")]
    Scheme(String),
    #[error("refused {host}: {reason}")]
    Refused {
        host: String,
        reason: RefusedAddress,
    },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("the response is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("could not resolve {0}")]
    Unresolvable(String),
    #[error("{0}")]
    Transport(String),
}

/// The refusal raised inside reqwest (resolver, redirect policy), found again by walking the
/// error's sources.
#[derive(Debug, thiserror::Error)]
enum Inner {
    #[error("refused {host}: {reason}")]
    Refused {
        host: String,
        reason: RefusedAddress,
    },
    #[error("only http and https URLs are fetched, not `{0}`")]
    Scheme(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("could not resolve {0}")]
    Unresolvable(String),
}

impl From<Inner> for FetchError {
    fn from(e: Inner) -> Self {
        match e {
            Inner::Refused { host, reason } => FetchError::Refused { host, reason },
            Inner::Scheme(s) => FetchError::Scheme(s),
            Inner::TooManyRedirects => FetchError::TooManyRedirects,
            Inner::Unresolvable(h) => FetchError::Unresolvable(h),
        }
    }
}

/// Resolves host names and refuses those with a refused address.
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => addrs.collect(),
                Err(_) => Vec::new(),
            };
            if addrs.is_empty() {
                return Err(Box::new(Inner::Unresolvable(host)) as Box<dyn StdError + Send + Sync>);
            }
            if !policy.host_allowed(&host) {
                for addr in &addrs {
                    if let Err(reason) = policy.check(addr.ip()) {
                        return Err(Box::new(Inner::Refused { host, reason }) as _);
                    }
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Checks what can be checked of a URL before any connection: the scheme, and a literal IP
/// host against the policy.
fn check_url_with(policy: &AddressPolicy, url: &Url) -> Result<(), Inner> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(Inner::Scheme(other.to_owned())),
    }
    let Some(host) = url.host_str() else {
        return Err(Inner::Unresolvable(url.to_string()));
    };
    // The URL parser has normalised every IPv4 spelling (decimal, octal, hex, short forms) to
    // dotted decimal; IPv6 literals keep their brackets.
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    if policy.host_allowed(host) {
        return Ok(());
    }
    policy.check(ip).map_err(|reason| Inner::Refused {
        host: host.to_owned(),
        reason,
    })
}

/// An HTTP client for URLs that clients supply (see the module documentation). Cheap to
/// clone; one per server is enough.
#[derive(Clone, Debug)]
pub struct GuardedClient {
    policy: Arc<AddressPolicy>,
    client: reqwest::Client,
}

impl GuardedClient {
    /// A client enforcing `policy`, with `connect_timeout` per connection attempt.
    pub fn new(policy: AddressPolicy, connect_timeout: Duration) -> Result<Self, FetchError> {
        let policy = Arc::new(policy);
        let client = Self::builder_for(policy.clone(), connect_timeout)
            .build()
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        Ok(GuardedClient { policy, client })
    }

    /// A reqwest builder that enforces `policy` (resolver, redirects, no proxy), for callers
    /// that need their own client on top (the MCP transport adds its headers and timeouts).
    pub fn builder(policy: AddressPolicy, connect_timeout: Duration) -> reqwest::ClientBuilder {
        Self::builder_for(Arc::new(policy), connect_timeout)
    }

    fn builder_for(
        policy: Arc<AddressPolicy>,
        connect_timeout: Duration,
    ) -> reqwest::ClientBuilder {
        let redirects = policy.clone();
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(connect_timeout)
            .user_agent(concat!("paddock/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { policy }))
            .redirect(redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    return attempt.error(Inner::TooManyRedirects);
                }
                match check_url_with(&redirects, attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            }))
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// The underlying reqwest client (already guarded).
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// Checks a URL's scheme and literal IP host before a request is made with [`Self::http`]
    /// (host names are checked when they are resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        check_url_with(&self.policy, url).map_err(FetchError::from)
    }

    /// GETs `url` within `limits`: the body in full, or why not.
    pub async fn get(&self, url: &str, limits: FetchLimits) -> Result<Fetched, FetchError> {
        let parsed = Url::parse(url).map_err(|_| FetchError::InvalidUrl(url.to_owned()))?;
        self.check_url(&parsed)?;
        match tokio::time::timeout(limits.total_timeout, self.get_checked(parsed, limits)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(limits.total_timeout)),
        }
    }

    async fn get_checked(&self, url: Url, limits: FetchLimits) -> Result<Fetched, FetchError> {
        let response = self.client.get(url).send().await.map_err(from_reqwest)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > limits.max_bytes)
        {
            return Err(FetchError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        let final_url = response.url().clone();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(from_reqwest)?;
            if (body.len() + chunk.len()) as u64 > limits.max_bytes {
                return Err(FetchError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            body: body.freeze(),
            content_type,
            final_url,
        })
    }
}

/// Finds Paddock's own refusal inside a reqwest error, else describes the error.
pub fn from_reqwest(e: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(inner) = s.downcast_ref::<Inner>() {
            return match inner {
                Inner::Refused { host, reason } => FetchError::Refused {
                    host: host.clone(),
                    reason: *reason,
                },
                Inner::Scheme(s) => FetchError::Scheme(s.clone()),
                Inner::TooManyRedirects => FetchError::TooManyRedirects,
                Inner::Unresolvable(h) => FetchError::Unresolvable(h.clone()),
            };
        }
        source = s.source();
    }
    if e.is_timeout() {
        return FetchError::Transport("timed out".to_owned());
    }
    // reqwest's own text plus its innermost cause ("connection refused", a TLS error…).
    let mut text = e.to_string();
    let mut cause = e.source();
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    if let Some(last) = last {
        text = format!("{text}: {last}");
    }
    FetchError::Transport(text)
}
