//! The result table, as markdown and JSON.

use serde::Serialize;

use crate::machine::Machine;
use crate::stats::Summary;

/// Whether a row meets its target.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// The target could not be judged on this run (scaled down, not measured).
    NotJudged,
}

/// One line of the table: a distribution (`summary`) or a single figure (`value`).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// e.g. `accept latency`.
    pub scenario: String,
    /// e.g. `paddock, 200 clients`.
    pub case: String,
    /// Unit of `summary` / `value`, e.g. `ms`.
    pub unit: String,
    pub summary: Option<Summary>,
    pub value: Option<f64>,
    /// The target, in words (`p99 ≤ 5 ms`), if this row has one.
    pub target: Option<String>,
    pub verdict: Option<Verdict>,
    /// What was non-default, what the figure includes, what went wrong.
    pub note: String,
}

impl Row {
    /// A row holding a distribution.
    pub fn dist(scenario: &str, case: impl Into<String>, unit: &str, values: &[f64]) -> Row {
        Row {
            scenario: scenario.to_owned(),
            case: case.into(),
            unit: unit.to_owned(),
            summary: Summary::of(values),
            value: None,
            target: None,
            verdict: None,
            note: String::new(),
        }
    }

    /// A row holding one figure.
    pub fn value(scenario: &str, case: impl Into<String>, unit: &str, value: f64) -> Row {
        Row {
            scenario: scenario.to_owned(),
            case: case.into(),
            unit: unit.to_owned(),
            summary: None,
            value: Some(value),
            target: None,
            verdict: None,
            note: String::new(),
        }
    }

    /// Adds a note (appended to any earlier one).
    pub fn note(mut self, note: impl AsRef<str>) -> Row {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note.as_ref());
        self
    }

    /// Judges the row: `met` decides from the measured figure; `missed_by` says by how much.
    pub fn target(mut self, target: &str, met: Option<bool>, how: impl AsRef<str>) -> Row {
        self.target = Some(target.to_owned());
        self.verdict = Some(match met {
            Some(true) => Verdict::Met,
            Some(false) => Verdict::Missed,
            None => Verdict::NotJudged,
        });
        if !how.as_ref().is_empty() {
            self = self.note(how);
        }
        self
    }
}

/// A whole run: the machine, the command, the rows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub started_unix: u64,
    pub duration_s: f64,
    /// Load average when the run ended (other work on the box shows here).
    pub load_average_end: String,
    pub rows: Vec<Row>,
}

fn fmt_num(x: f64) -> String {
    if x == 0.0 {
        "0".to_owned()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

impl Report {
    /// The table in GitHub markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("Machine: {}\n\n", self.machine.line()));
        out.push_str(&format!(
            "Command: `{}` ({:.0} s; load average at end {})\n\n",
            self.command, self.duration_s, self.load_average_end
        ));
        out.push_str(
            "| Scenario | Case | n | min | median | p99 | value | unit | target | verdict | notes |\n",
        );
        out.push_str("|---|---|---:|---:|---:|---:|---:|---|---|---|---|\n");
        for r in &self.rows {
            let (n, min, med, p99) = match &r.summary {
                Some(s) => (
                    s.n.to_string(),
                    fmt_num(s.min),
                    fmt_num(s.median),
                    fmt_num(s.p99),
                ),
                None => (String::new(), String::new(), String::new(), String::new()),
            };
            let value = r.value.map(fmt_num).unwrap_or_default();
            let verdict = match r.verdict {
                Some(Verdict::Met) => "met",
                Some(Verdict::Missed) => "**missed**",
                Some(Verdict::NotJudged) => "not judged",
                None => "",
            };
            out.push_str(&format!(
                "| {} | {} | {n} | {min} | {med} | {p99} | {value} | {} | {} | {verdict} | {} |\n",
                r.scenario,
                r.case,
                r.unit,
                r.target.clone().unwrap_or_default(),
                r.note.replace('|', "/"),
            ));
        }
        out
    }

    /// The report as pretty JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
