//! `pull` from a local path: the hash is checked and a mismatch leaves nothing behind.

use std::path::Path;

use paddock_model::pull::{PullError, pull};
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
async fn pull_from_a_path_checks_the_hash() {
    let src_dir = tempfile::tempdir().expect("tempdir");
    let models = tempfile::tempdir().expect("tempdir");
    let source = src_dir.path().join("m.gguf");
    let content = b"GGUF not really a model".repeat(1000);
    std::fs::write(&source, &content).expect("write");
    let source = source.to_str().expect("utf-8 path");

    let good = models.path().join("good.gguf");
    let mut reports = Vec::new();
    let got = pull(
        source,
        &good,
        Some(&sha256_hex(&content).to_uppercase()),
        &mut |p| reports.push(p),
    )
    .await
    .expect("pull with the right hash");
    assert_eq!(got, good);
    assert_eq!(std::fs::read(&good).expect("read"), content);
    let last = reports.last().expect("progress reported");
    assert_eq!(last.downloaded, content.len() as u64);
    assert_eq!(last.total, Some(content.len() as u64));

    let bad = models.path().join("bad.gguf");
    let err = pull(source, &bad, Some(&"0".repeat(64)), &mut |_| {})
        .await
        .expect_err("a wrong hash must fail");
    assert!(matches!(err, PullError::HashMismatch { .. }), "{err}");
    assert!(!bad.exists());
    assert_eq!(dir_entries(models.path()), ["good.gguf"]);

    let err = pull(source, &bad, Some("not-a-hash"), &mut |_| {})
        .await
        .expect_err("an invalid hash must fail");
    assert!(matches!(err, PullError::InvalidHash(_)), "{err}");
    let err = pull("/does/not/exist.gguf", &bad, None, &mut |_| {})
        .await
        .expect_err("a missing source must fail");
    assert!(matches!(err, PullError::Io { .. }), "{err}");
    assert_eq!(dir_entries(models.path()), ["good.gguf"]);
}
