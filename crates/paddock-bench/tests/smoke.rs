//! Every scenario at tiny sizes, in this process: asserts only that each produces sane
//! numbers (present, finite, positive, no failures), never timings. Keeps the harness from
//! rotting; the real figures come from `scripts/bench`.

use paddock_bench::report::Row;
use paddock_bench::scenarios::{Ctx, Scale};
use paddock_bench::target::{Fake, TargetSpec};

fn sane(row: &Row) -> bool {
    let dist_ok = row
        .summary
        .is_some_and(|s| s.n > 0 && s.min.is_finite() && s.min >= 0.0 && s.p99 >= s.min);
    let value_ok = row.value.is_some_and(|v| v.is_finite() && v >= 0.0);
    dist_ok || value_ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_produces_sane_numbers() -> anyhow::Result<()> {
    let ctx = Ctx {
        spec: TargetSpec::InProcess,
        scale: Scale::smoke(),
        fake: Fake::start(None).await?,
        exe: None,
        verbose: false,
    };
    let report = paddock_bench::run(&ctx, &[], "smoke").await;
    let md = report.markdown();
    for name in [
        "accept latency",
        "end-to-end runs/s",
        "time to first token",
        "SSE fan-out",
        "active runs at scale",
        "replay",
        "soak",
    ] {
        let rows: Vec<&Row> = report.rows.iter().filter(|r| r.scenario == name).collect();
        assert!(!rows.is_empty(), "no rows for {name}:\n{md}");
        for r in rows {
            assert!(sane(r), "{name} / {}: not a sane figure:\n{md}", r.case);
            assert!(
                !r.note.contains("errors"),
                "{name} / {}: {}\n{md}",
                r.case,
                r.note
            );
        }
    }
    assert!(
        !report.rows.iter().any(|r| r.case == "FAILED"),
        "a scenario failed:\n{md}"
    );
    // The bare-axum baseline and the per-run figures are there too.
    assert!(report.rows.iter().any(|r| r.case.starts_with("bare axum")));
    assert!(md.contains("| Scenario |"));
    serde_json::from_str::<serde_json::Value>(&report.json())?;
    Ok(())
}

/// The cluster scenario at tiny sizes on the PostgreSQL database the other multi-node tests
/// use (`PADDOCK_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`; it
/// fails without one, never skipped): sane rows for 1 and 3 nodes, and no schema left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scenario_produces_sane_numbers_and_drops_its_schemas() -> anyhow::Result<()> {
    let url = std::env::var("PADDOCK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let ctx = Ctx {
        spec: TargetSpec::InProcess,
        scale: Scale {
            runs_levels: vec![3],
            runs_max: 9,
            ..Scale::smoke()
        },
        fake: Fake::start(None).await?,
        exe: None,
        verbose: false,
    };
    let report = paddock_bench::run_cluster(&ctx, &url, &[1, 3], "smoke").await;
    let md = report.markdown();
    for case in [
        "paddock, PostgreSQL, 1 node, concurrency 3",
        "paddock, PostgreSQL, 3 nodes, concurrency 3",
    ] {
        let row = report.rows.iter().find(|r| r.case == case);
        let Some(row) = row else {
            panic!("no row {case}:\n{md}");
        };
        assert!(sane(row), "{case}: not a sane figure:\n{md}");
        assert_eq!(row.unit, "runs/s");
        assert!(!row.note.contains("errors"), "{case}: {}\n{md}", row.note);
        assert!(row.note.contains("cores"), "{case}: {}", row.note);
    }
    assert!(
        !report.rows.iter().any(|r| r.case.contains("FAILED")),
        "a node count failed:\n{md}"
    );
    let pool = sqlx::PgPool::connect(&url).await?;
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'bench\\_cluster\\_' || $1 || '\\_%'",
    )
    .bind(std::process::id().to_string())
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    assert_eq!(left, 0, "schemas left behind");
    Ok(())
}
