//! The guarded client against real local HTTP servers. Test servers listen on 127.0.0.2 (the
//! stand-in for a public server, allowed by CIDR) and 127.0.0.1 (the "internal" target that
//! must stay unreachable); refused literal addresses are refused before any connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use paddock_net::{AddressPolicy, FetchError, FetchLimits, GuardedClient};

const LIMITS: FetchLimits = FetchLimits {
    max_bytes: 1024 * 1024,
    total_timeout: Duration::from_secs(5),
};

async fn serve(ip: [u8; 4], app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A server with the routes the tests use; `internal` is where redirects point.
fn app(internal: Option<SocketAddr>) -> Router {
    Router::new()
        .route("/ok", get(|| async { "hello" }))
        .route(
            "/to-internal",
            get(move || async move {
                let target = internal.map_or("http://127.0.0.1:9/".to_owned(), |a| {
                    format!("http://{a}/secret")
                });
                Redirect::temporary(&target)
            }),
        )
        .route(
            "/to-localhost",
            get(move || async move {
                let port = internal.map_or(9, |a| a.port());
                Redirect::temporary(&format!("http://localhost:{port}/secret"))
            }),
        )
        .route(
            "/hop/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    "arrived".into_response()
                } else {
                    Redirect::temporary(&format!("/hop/{}", n - 1)).into_response()
                }
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 2 * 1024 * 1024] }))
        .route(
            "/big-chunked",
            get(|| async {
                let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 64 * 1024]));
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(Body::from_stream(futures::stream::iter(chunks)))
                    .unwrap()
            }),
        )
        .route(
            "/slow",
            get(|| async {
                let trickle = futures::stream::unfold(0u32, |i| async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    (i < 100).then(|| (Ok::<_, std::io::Error>(vec![b'z'; 10]), i + 1))
                });
                Body::from_stream(trickle)
            }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
}

fn public_like() -> AddressPolicy {
    AddressPolicy {
        allowed_networks: vec!["127.0.0.2/32".parse().unwrap()],
        ..AddressPolicy::default()
    }
}

fn client(policy: AddressPolicy) -> GuardedClient {
    GuardedClient::new(policy, Duration::from_secs(2)).unwrap()
}

fn refused_reason(result: Result<paddock_net::Fetched, FetchError>) -> String {
    match result {
        Err(FetchError::Refused { reason, .. }) => reason.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn literal_private_addresses_in_every_spelling_are_refused_with_the_reason() {
    let c = client(AddressPolicy::default());
    let cases = [
        ("http://127.0.0.1:1/", "address 127.0.0.1 is loopback"),
        ("http://[::1]:1/", "address ::1 is loopback"),
        ("http://10.0.0.5/", "address 10.0.0.5 is private"),
        ("http://172.16.3.4/", "address 172.16.3.4 is private"),
        ("http://192.168.1.1/", "address 192.168.1.1 is private"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "address 169.254.169.254 is a cloud metadata address",
        ),
        ("http://[fc00::1]/", "address fc00::1 is private"),
        (
            "http://[fd00:ec2::254]/",
            "address fd00:ec2::254 is a cloud metadata address",
        ),
        (
            "http://[::ffff:127.0.0.1]/",
            "address ::ffff:127.0.0.1 is loopback",
        ),
        (
            "http://[::ffff:10.0.0.1]/",
            "address ::ffff:10.0.0.1 is private",
        ),
        // Decimal, octal, hex and short IPv4 spellings all mean 127.0.0.1.
        ("http://2130706433/", "address 127.0.0.1 is loopback"),
        ("http://0177.0.0.1/", "address 127.0.0.1 is loopback"),
        ("http://0x7f.0.0.1/", "address 127.0.0.1 is loopback"),
        ("http://0x7f000001/", "address 127.0.0.1 is loopback"),
        ("http://127.1/", "address 127.0.0.1 is loopback"),
        ("http://0/", "address 0.0.0.0 is unspecified"),
        (
            "https://100.64.0.1/",
            "address 100.64.0.1 is carrier-grade NAT",
        ),
    ];
    for (url, reason) in cases {
        assert_eq!(refused_reason(c.get(url, LIMITS).await), reason, "{url}");
    }
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused() {
    let internal = serve([127, 0, 0, 1], app(None)).await;
    let c = client(AddressPolicy::default());
    let reason = refused_reason(
        c.get(&format!("http://localhost:{}/ok", internal.port()), LIMITS)
            .await,
    );
    assert!(reason.ends_with("is loopback"), "{reason}");
}

#[tokio::test]
async fn allowed_networks_and_hosts_are_fetched() {
    let public = serve([127, 0, 0, 2], app(None)).await;
    let c = client(public_like());
    let got = c.get(&format!("http://{public}/ok"), LIMITS).await.unwrap();
    assert_eq!(&got.body[..], b"hello");
    assert_eq!(
        got.content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );

    let internal = serve([127, 0, 0, 1], app(None)).await;
    let by_name = client(AddressPolicy {
        allowed_hosts: vec!["localhost".to_owned()],
        ..AddressPolicy::default()
    });
    let got = by_name
        .get(&format!("http://localhost:{}/ok", internal.port()), LIMITS)
        .await
        .unwrap();
    assert_eq!(&got.body[..], b"hello");
}

#[tokio::test]
async fn a_public_url_that_redirects_to_a_private_one_is_refused() {
    let internal = serve([127, 0, 0, 1], app(None)).await;
    let public = serve([127, 0, 0, 2], app(Some(internal))).await;
    let c = client(public_like());
    let literal = refused_reason(c.get(&format!("http://{public}/to-internal"), LIMITS).await);
    assert_eq!(literal, "address 127.0.0.1 is loopback");
    let by_name = refused_reason(
        c.get(&format!("http://{public}/to-localhost"), LIMITS)
            .await,
    );
    assert!(by_name.ends_with("is loopback"), "{by_name}");
}

#[tokio::test]
async fn at_most_five_redirects_are_followed() {
    let public = serve([127, 0, 0, 2], app(None)).await;
    let c = client(public_like());
    let got = c
        .get(&format!("http://{public}/hop/5"), LIMITS)
        .await
        .unwrap();
    assert_eq!(&got.body[..], b"arrived");
    assert!(got.final_url.path().ends_with("/hop/0"));
    let err = c
        .get(&format!("http://{public}/hop/6"), LIMITS)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooManyRedirects), "{err:?}");
}

#[tokio::test]
async fn oversize_and_slow_downloads_are_cut_at_their_limits() {
    let public = serve([127, 0, 0, 2], app(None)).await;
    let c = client(public_like());
    for path in ["big", "big-chunked"] {
        let err = c
            .get(&format!("http://{public}/{path}"), LIMITS)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit } if limit == LIMITS.max_bytes),
            "{path}: {err:?}"
        );
    }
    let quick = FetchLimits {
        max_bytes: LIMITS.max_bytes,
        total_timeout: Duration::from_millis(500),
    };
    let err = c
        .get(&format!("http://{public}/slow"), quick)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err:?}");
    assert_eq!(err.to_string(), "no complete response within 500ms");
}

#[tokio::test]
async fn other_schemes_bad_urls_and_error_statuses_are_named() {
    let public = serve([127, 0, 0, 2], app(None)).await;
    let c = client(public_like());
    for url in ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/"] {
        let err = c.get(url, LIMITS).await.unwrap_err();
        assert!(matches!(err, FetchError::Scheme(_)), "{url}: {err:?}");
    }
    let err = c.get("not a url", LIMITS).await.unwrap_err();
    assert!(matches!(err, FetchError::InvalidUrl(_)), "{err:?}");
    let err = c
        .get(&format!("http://{public}/missing"), LIMITS)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "the server answered HTTP 404");
    let err = c
        .get("http://no-such-host.invalid/x", LIMITS)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Unresolvable(_)), "{err:?}");
}
