//! Reading a command's output while capping what is kept.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;

use crate::CapturedOutput;

/// Bytes kept so far from one stream, and how many were seen.
#[derive(Debug)]
pub(crate) struct Capture {
    data: Vec<u8>,
    cap: usize,
    total: u64,
}

/// A [`Capture`] shared between the task reading a pipe and the supervisor, so that what was
/// read survives even if the reading task has to be abandoned.
pub(crate) type SharedCapture = Arc<Mutex<Capture>>;

impl Capture {
    /// An empty capture keeping at most `cap` bytes.
    pub(crate) fn shared(cap: usize) -> SharedCapture {
        Arc::new(Mutex::new(Capture {
            data: Vec::with_capacity(cap.min(64 * 1024)),
            cap,
            total: 0,
        }))
    }

    /// Counts `chunk` and keeps what fits under the cap.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.total = self.total.saturating_add(chunk.len() as u64);
        let room = self.cap.saturating_sub(self.data.len());
        let keep = room.min(chunk.len());
        self.data.extend_from_slice(&chunk[..keep]);
    }

    /// What was captured, as the public type.
    pub(crate) fn to_output(&self) -> CapturedOutput {
        CapturedOutput {
            data: self.data.clone(),
            total_bytes: self.total,
            truncated: self.total > self.data.len() as u64,
        }
    }
}

/// Locks a capture, ignoring poisoning (a panicking reader cannot leave it inconsistent).
pub(crate) fn lock(capture: &SharedCapture) -> MutexGuard<'_, Capture> {
    capture
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `reader` to its end into `sink`.
pub(crate) async fn pump<R: AsyncRead + Unpin>(mut reader: R, sink: SharedCapture) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => lock(&sink).push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "reading command output failed");
                break;
            }
        }
    }
}

/// What bubblewrap's `--info-fd` report said, or why there was none.
#[derive(Debug)]
pub(crate) enum Info {
    /// The host pid of the sandbox's init process (pid 1 of its pid namespace).
    ChildPid(u32),
    /// No report: bubblewrap failed before creating the sandbox. Its diagnostics.
    Missing(String),
}

/// Largest info report accepted; the real one is about 250 bytes.
const MAX_INFO_BYTES: usize = 16 * 1024;

/// Reads a bubblewrap stderr that starts with the `--info-fd` JSON report (the wrapper points
/// `--info-fd` at stderr). bubblewrap writes the report before it lets the sandboxed child run,
/// so nothing of the command can precede it. The report is sent on `info`; every byte after it
/// goes to `sink`. Without a report, all bytes go to `sink` and `info` gets them as
/// diagnostics.
pub(crate) async fn pump_after_info<R: AsyncRead + Unpin>(
    mut reader: R,
    sink: SharedCapture,
    info: oneshot::Sender<Info>,
) {
    let mut prefix: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let rest_start = loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => {
                lock(&sink).push(&prefix);
                let _ = info.send(Info::Missing(
                    String::from_utf8_lossy(&prefix).trim().to_owned(),
                ));
                return;
            }
            Ok(n) => {
                prefix.extend_from_slice(&buf[..n]);
                if let Some(end) = find(&prefix, b"\n}\n") {
                    break end + 3;
                }
                if prefix.len() > MAX_INFO_BYTES {
                    lock(&sink).push(&prefix);
                    let _ = info.send(Info::Missing(
                        "bubblewrap's start-up report was not recognised".into(),
                    ));
                    pump(reader, sink).await;
                    return;
                }
            }
        }
    };
    let report = &prefix[..rest_start];
    match parse_child_pid(report) {
        Some(pid) => {
            let _ = info.send(Info::ChildPid(pid));
        }
        None => {
            let _ = info.send(Info::Missing(format!(
                "bubblewrap's start-up report had no child-pid: {}",
                String::from_utf8_lossy(report).trim()
            )));
        }
    }
    lock(&sink).push(&prefix[rest_start..]);
    pump(reader, sink).await;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Extracts `"child-pid": N` from bubblewrap's info report.
pub(crate) fn parse_child_pid(report: &[u8]) -> Option<u32> {
    let key = b"\"child-pid\":";
    let at = find(report, key)? + key.len();
    let digits: String = report[at..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect();
    digits.parse().ok().filter(|&pid| pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_counts_everything_keeps_the_cap() {
        let c = Capture::shared(5);
        lock(&c).push(b"abc");
        lock(&c).push(b"defgh");
        let out = lock(&c).to_output();
        assert_eq!(out.data, b"abcde");
        assert_eq!(out.total_bytes, 8);
        assert!(out.truncated);
    }

    #[test]
    fn parses_info() {
        let report = b"{\n    \"child-pid\": 31515,\n    \"net-namespace\": 4026532180\n}\n";
        assert_eq!(parse_child_pid(report), Some(31515));
        assert_eq!(parse_child_pid(b"{}"), None);
    }

    #[tokio::test]
    async fn splits_info_from_stderr() {
        let data: &[u8] = b"{\n    \"child-pid\": 42\n}\nreal stderr\n";
        let sink = Capture::shared(1024);
        let (tx, rx) = oneshot::channel();
        pump_after_info(data, sink.clone(), tx).await;
        assert!(matches!(rx.await.unwrap(), Info::ChildPid(42)));
        assert_eq!(lock(&sink).to_output().data, b"real stderr\n");
    }

    #[tokio::test]
    async fn missing_info_keeps_diagnostics() {
        let data: &[u8] = b"bwrap: setting up uid map: Permission denied\n";
        let sink = Capture::shared(1024);
        let (tx, rx) = oneshot::channel();
        pump_after_info(data, sink.clone(), tx).await;
        match rx.await.unwrap() {
            Info::Missing(text) => assert!(text.contains("uid map")),
            other => panic!("{other:?}"),
        }
    }
}
