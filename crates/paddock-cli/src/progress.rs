//! Download progress on stderr: a line every few percent (or every few megabytes when the size
//! is unknown), so logs and non-terminal stderr stay readable.

use paddock_model::pull::Progress;

/// Percentage points between two lines when the total size is known.
const PERCENT_STEP: u64 = 5;
/// Bytes between two lines when it is not.
const BYTES_STEP: u64 = 10_000_000;

/// Prints a title on the first report, then progress lines.
pub struct ProgressPrinter {
    title: String,
    started: bool,
    last_percent: Option<u64>,
    last_bytes: Option<u64>,
}

impl ProgressPrinter {
    /// A printer whose first line (printed only if any progress is reported) is `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            started: false,
            last_percent: None,
            last_bytes: None,
        }
    }

    /// Reports `progress` on stderr if it has moved enough since the last line.
    pub fn report(&mut self, progress: Progress) {
        if !self.started {
            self.started = true;
            eprintln!("{}", self.title);
        }
        if let Some(line) = self.next_line(progress) {
            eprintln!("{line}");
        }
    }

    /// The line to print for `progress`, if any.
    fn next_line(&mut self, progress: Progress) -> Option<String> {
        let Progress { downloaded, total } = progress;
        match total.filter(|&t| t > 0) {
            Some(total) => {
                let percent = (downloaded.saturating_mul(100) / total).min(100);
                let due = match self.last_percent {
                    None => true,
                    Some(last) => percent >= last + PERCENT_STEP || (percent == 100 && last < 100),
                };
                if !due {
                    return None;
                }
                self.last_percent = Some(percent);
                Some(format!(
                    "  {percent:>3}%  {} of {}",
                    megabytes(downloaded),
                    megabytes(total)
                ))
            }
            None => {
                let due = self
                    .last_bytes
                    .is_none_or(|last| downloaded >= last + BYTES_STEP);
                if !due {
                    return None;
                }
                self.last_bytes = Some(downloaded);
                Some(format!("  {}", megabytes(downloaded)))
            }
        }
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(total: Option<u64>, steps: &[u64]) -> Vec<String> {
        let mut printer = ProgressPrinter::new("t");
        steps
            .iter()
            .filter_map(|&downloaded| printer.next_line(Progress { downloaded, total }))
            .collect()
    }

    #[test]
    fn known_size_prints_every_few_percent_and_the_end() {
        let steps: Vec<u64> = (0..=1000).step_by(7).chain([1000]).collect();
        let out = lines(Some(1000), &steps);
        assert_eq!(
            out.first().map(String::as_str),
            Some("    0%  0.0 MB of 0.0 MB")
        );
        assert!(out.last().is_some_and(|l| l.contains("100%")), "{out:?}");
        assert!(out.len() >= 20 && out.len() <= 22, "{}: {out:?}", out.len());
    }

    #[test]
    fn unknown_size_prints_every_few_megabytes() {
        let out = lines(None, &[0, 1_000_000, 10_000_000, 15_000_000, 20_000_001]);
        assert_eq!(out, ["  0.0 MB", "  10.0 MB", "  20.0 MB"]);
    }
}
