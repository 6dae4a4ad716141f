//! `paddock-bench`: a benchmark harness for Paddock.
//!
//! It starts a Paddock server in this process (or targets a running one), a fake
//! OpenAI-compatible model whose latency profile is chosen per request by the model name
//! ([`fake`]), drives the server over real HTTP/SSE from many concurrent clients, and reports
//! min/median/p99 per scenario as markdown and JSON ([`report`]), with the machine's
//! description. See `docs/BENCHMARKS.md`.

pub mod api;
pub mod bare;
pub mod fake;
pub mod machine;
pub mod peers;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod subscribe;
pub mod target;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use report::{Report, Row};
use scenarios::Ctx;

/// Every scenario, in the order a full run does them.
pub const SCENARIOS: &[&str] = &[
    "accept", "runs", "ttft", "fanout", "scale", "replay", "soak",
];

/// `HH:MM:SS` UTC, for progress lines.
pub fn clock() -> String {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// Runs the `only` scenarios (all when empty) and returns the report. A scenario that fails
/// becomes one row saying why; the others still run.
pub async fn run(ctx: &Ctx, only: &[String], command: &str) -> Report {
    measure(command, async {
        let mut rows = Vec::new();
        for &name in SCENARIOS {
            if !only.is_empty() && !only.iter().any(|o| o == name) {
                continue;
            }
            let t = Instant::now();
            let result = match name {
                "accept" => scenarios::accept(ctx).await,
                "runs" => scenarios::runs(ctx).await,
                "ttft" => scenarios::ttft(ctx).await,
                "fanout" => scenarios::fanout(ctx).await,
                "scale" => scenarios::scale(ctx).await,
                "replay" => scenarios::replay(ctx).await,
                "soak" => scenarios::soak(ctx).await,
                _ => Ok(Vec::new()),
            };
            match result {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    rows.push(Row::value(name, "FAILED", "", f64::NAN).note(format!("{e:#}")));
                }
            }
            if ctx.verbose {
                eprintln!(
                    "[bench {}] {name} done in {:.1} s",
                    clock(),
                    t.elapsed().as_secs_f64()
                );
            }
        }
        rows
    })
    .await
}

/// The cluster scenario ([`scenarios::cluster`]) as a whole report.
pub async fn run_cluster(
    ctx: &Ctx,
    database_url: &str,
    node_counts: &[usize],
    command: &str,
) -> Report {
    measure(command, scenarios::cluster(ctx, database_url, node_counts)).await
}

/// Describes the machine (its load before anything runs), awaits `rows`, and wraps them in a
/// report with the command, the duration and the load at the end.
async fn measure(command: &str, rows: impl std::future::Future<Output = Vec<Row>>) -> Report {
    let machine = machine::Machine::describe();
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rows = rows.await;
    Report {
        machine,
        command: command.to_owned(),
        started_unix,
        duration_s: started.elapsed().as_secs_f64(),
        load_average_end: machine::load_average(),
        rows,
    }
}
