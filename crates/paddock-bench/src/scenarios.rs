//! The scenarios. Each returns rows for the table; every loop is bounded in count and time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use tokio::task::JoinSet;

use crate::api::{Api, ready_deployments_across, wait_terminal};
use crate::bare::BareAxum;
use crate::fake::{parse_stamp, unix_micros};
use crate::report::Row;
use crate::stats::Summary;
use crate::subscribe::{self, FANOUT_PREFIX};
use crate::target::{Cluster, Fake, Target, TargetSpec};

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Whether this is the full size the targets are judged at.
    pub full: bool,
    pub accept_levels: Vec<usize>,
    /// Requests per accept level: `max(level × this, accept_min_requests)`.
    pub accept_per_client: usize,
    pub accept_min_requests: usize,
    pub runs_levels: Vec<usize>,
    pub runs_duration: Duration,
    pub runs_max: usize,
    pub ttft_runs: usize,
    /// The streaming profile for time to first token (`stream-<ttft>-<tps>-<tokens>`).
    pub ttft_profile: String,
    pub fanout_subscribers: usize,
    pub fanout_messages: usize,
    pub scale_runs: usize,
    pub scale_run_time: Duration,
    pub replay_events: usize,
    pub soak_duration: Duration,
    pub soak_sample: Duration,
}

impl Scale {
    /// Seconds-long sizes for CI: every scenario, tiny.
    pub fn smoke() -> Scale {
        Scale {
            full: false,
            accept_levels: vec![1, 4, 8],
            accept_per_client: 2,
            accept_min_requests: 4,
            runs_levels: vec![2, 4],
            runs_duration: Duration::from_secs(1),
            runs_max: 8,
            ttft_runs: 3,
            ttft_profile: "stream-5-200-4".to_owned(),
            fanout_subscribers: 8,
            fanout_messages: 2,
            scale_runs: 16,
            scale_run_time: Duration::from_millis(1500),
            replay_events: 400,
            soak_duration: Duration::from_secs(3),
            soak_sample: Duration::from_secs(1),
        }
    }

    /// The sizes the targets are stated at.
    pub fn full() -> Scale {
        Scale {
            full: true,
            accept_levels: vec![1, 50, 200],
            accept_per_client: 10,
            accept_min_requests: 300,
            runs_levels: vec![10, 40],
            runs_duration: Duration::from_secs(15),
            runs_max: 100_000,
            ttft_runs: 40,
            ttft_profile: "stream-50-50-20".to_owned(),
            fanout_subscribers: 10_000,
            fanout_messages: 5,
            scale_runs: 10_000,
            scale_run_time: Duration::from_secs(75),
            replay_events: 100_000,
            soak_duration: Duration::from_secs(180),
            soak_sample: Duration::from_secs(60),
        }
    }
}

/// Everything a scenario needs.
pub struct Ctx {
    pub spec: TargetSpec,
    pub scale: Scale,
    pub fake: Fake,
    /// This binary, for child processes (`None` in tests: everything in-process).
    pub exe: Option<PathBuf>,
    /// Progress lines go to stderr when set.
    pub verbose: bool,
}

impl Ctx {
    fn log(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("[bench {}] {}", crate::clock(), msg.as_ref());
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// Waits (bounded) until the fake has no stream in flight, then a little more for the runs'
/// final writes.
async fn settle(ctx: &Ctx, http: &reqwest::Client, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && ctx.fake.active(http).await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// `c` clients post `total` messages as fast as they are answered; latencies in ms.
async fn accept_loop(
    api: &Api,
    deps: &[String],
    c: usize,
    total: usize,
    thread: Option<&str>,
) -> (Vec<f64>, usize, Option<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let deps = Arc::new(deps.to_vec());
    let mut set = JoinSet::new();
    for _ in 0..c {
        let (api, next, deps) = (api.clone(), next.clone(), deps.clone());
        let thread = thread.map(str::to_owned);
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let dep = &deps[i % deps.len()];
                match api.post_message(dep, thread.as_deref(), "hello").await {
                    Ok(a) => lat.push(ms(a.latency)),
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (lat, errors, first)
        });
    }
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    let mut first = None;
    while let Some(Ok((lat, e, f))) = set.join_next().await {
        all.extend(lat);
        errors += e;
        if first.is_none() {
            first = f;
        }
    }
    (all, errors, first)
}

/// Accept latency: `POST …/messages` → 202 at each concurrency level, against Paddock and
/// against a bare axum handler.
pub async fn accept(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    const S: &str = "accept latency";
    let target = Target::start(&ctx.spec, &ctx.fake, |_| {}).await?;
    let max = ctx.scale.accept_levels.iter().copied().max().unwrap_or(1);
    let deps = target
        .api
        .ready_deployments(max.min(20), &target.model("instant"))
        .await?;
    let bare = BareAxum::start(([127, 0, 0, 1], 0).into()).await?;
    let bare_api = Api::new(bare.base_url(), "none");
    let mut rows = Vec::new();
    for &c in &ctx.scale.accept_levels {
        let total = (c * ctx.scale.accept_per_client).max(ctx.scale.accept_min_requests);
        ctx.log(format!("accept: {c} clients, {total} requests"));
        // Warm the connection pools.
        let _ = accept_loop(&target.api, &deps, c, c, Some("new")).await;
        let _ = accept_loop(&bare_api, &deps, c, c, None).await;
        settle(ctx, &target.api.http, Duration::from_secs(20)).await;
        let (bare_lat, _, _) = accept_loop(&bare_api, &deps, c, total, None).await;
        let (lat, errors, first) = accept_loop(&target.api, &deps, c, total, Some("new")).await;
        settle(ctx, &target.api.http, Duration::from_secs(60)).await;
        let bare_p99 = Summary::of(&bare_lat).map(|s| s.p99);
        let mut row = Row::dist(S, format!("paddock, {c} clients"), "ms", &lat)
            .note("new thread per message (each starts a run on the instant model)");
        if errors > 0 {
            row = row.note(format!(
                "{errors} errors, first: {}",
                first.unwrap_or_default()
            ));
        }
        if let (Some(p), Some(b)) = (row.summary.map(|s| s.p99), bare_p99) {
            row = row.note(format!("p99 {:.1}× bare axum's", p / b.max(1e-9)));
        }
        if c == 200 {
            let p99 = row.summary.map(|s| s.p99);
            let how = match p99 {
                Some(p) if p <= 5.0 => format!("p99 {p:.2} ms ≤ 5 ms"),
                Some(p) => format!("missed by {:.2} ms ({:.1}×)", p - 5.0, p / 5.0),
                None => "no samples".to_owned(),
            };
            row = row.target("p99 ≤ 5 ms", p99.map(|p| p <= 5.0), how);
        }
        rows.push(row);
        rows.push(
            Row::dist(S, format!("bare axum 202, {c} clients"), "ms", &bare_lat)
                .note("the HTTP stack alone: same client, same box, no auth/storage"),
        );
    }
    drop(bare);
    target.stop().await?;
    Ok(rows)
}

/// One worker per deployment: post, wait for the run's terminal status on SSE, repeat. Worker
/// `i` talks to `apis[i % apis.len()]` for both (several nodes: clients spread round-robin).
/// Returns (completed run latencies ms, errors, elapsed).
async fn run_loop(
    apis: &[Api],
    deps: &[String],
    duration: Duration,
    max: usize,
) -> anyhow::Result<(Vec<f64>, usize, Duration, Option<String>)> {
    anyhow::ensure!(!apis.is_empty(), "no server to drive");
    let started = Instant::now();
    let deadline = started + duration;
    let count = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for (i, dep) in deps.iter().enumerate() {
        let (api, dep, count) = (apis[i % apis.len()].clone(), dep.clone(), count.clone());
        set.spawn(async move {
            let mut events = api.events(&dep, None).await?;
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first = None;
            while Instant::now() < deadline && count.fetch_add(1, Ordering::Relaxed) < max {
                let t0 = Instant::now();
                let accepted = api.post_message(&dep, None, "hello").await?;
                let waited = tokio::time::timeout(
                    Duration::from_secs(60),
                    wait_terminal(&mut events, &accepted.run_id, |_| {}),
                )
                .await;
                match waited {
                    Ok(Ok((status, _))) if status == "completed" => lat.push(ms(t0.elapsed())),
                    Ok(Ok((status, _))) => {
                        errors += 1;
                        first.get_or_insert(format!("run ended {status}"));
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => anyhow::bail!("run did not finish in 60 s"),
                }
            }
            anyhow::Ok((lat, errors, first))
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first = None;
    while let Some(joined) = set.join_next().await {
        let (lat, e, f) = joined??;
        all.extend(lat);
        errors += e;
        if first.is_none() {
            first = f;
        }
    }
    Ok((all, errors, started.elapsed(), first))
}

/// How the runs/s rows of one set of servers are named and judged.
struct RunsCase<'a> {
    /// Start of each case: `paddock` gives `paddock, concurrency 10`.
    label: &'a str,
    /// Appended to each runs/s row's note, if any.
    note: Option<&'a str>,
    /// Whether the rows carry the "≥ 50× the peer" target (judged in the peers table).
    peer_target: bool,
}

/// The runs/s driver at each of `ctx.scale.runs_levels`: `c` fresh deployments on the instant
/// model (spread round-robin over `apis`), one client each, for `runs_duration` or
/// `runs_max` runs, whichever comes first; a runs/s row and a per-run latency row per level.
async fn runs_at_levels(
    ctx: &Ctx,
    apis: &[Api],
    model: &str,
    case: &RunsCase<'_>,
) -> anyhow::Result<Vec<Row>> {
    const S: &str = "end-to-end runs/s";
    let label = case.label;
    let mut rows = Vec::new();
    for &c in &ctx.scale.runs_levels {
        ctx.log(format!("runs/s: {label}, concurrency {c}"));
        let deps = ready_deployments_across(apis, c, model).await?;
        let (lat, errors, elapsed, first) =
            run_loop(apis, &deps, ctx.scale.runs_duration, ctx.scale.runs_max).await?;
        let rate = lat.len() as f64 / elapsed.as_secs_f64();
        let mut row =
            Row::value(S, format!("{label}, concurrency {c}"), "runs/s", rate).note(format!(
                "{} runs in {:.1} s; one deployment + SSE stream per client",
                lat.len(),
                elapsed.as_secs_f64()
            ));
        if let Some(note) = case.note {
            row = row.note(note);
        }
        if errors > 0 {
            row = row.note(format!("{errors} errors: {}", first.unwrap_or_default()));
        }
        if case.peer_target {
            row = row.target(
                "≥ 50× the peer's runs/s",
                None,
                "judged against the peer in the peers table (scripts/bench)",
            );
        }
        rows.push(row);
        rows.push(Row::dist(
            S,
            format!("{label}, concurrency {c}: per-run latency"),
            "ms",
            &lat,
        ));
        if let Some(api) = apis.first() {
            settle(ctx, &api.http, Duration::from_secs(20)).await;
        }
    }
    Ok(rows)
}

/// End-to-end runs per second on the instant model: message → `completed` seen on SSE.
pub async fn runs(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let target = Target::start(&ctx.spec, &ctx.fake, |_| {}).await?;
    let case = RunsCase {
        label: "paddock",
        note: None,
        peer_target: true,
    };
    let rows = runs_at_levels(
        ctx,
        std::slice::from_ref(&target.api),
        &target.model("instant"),
        &case,
    )
    .await;
    target.stop().await?;
    rows
}

/// End-to-end runs/s with `n` in-process nodes on one PostgreSQL database, for each `n` of
/// `node_counts` (`docs/scaling-out.md`): a fresh schema per node count in the database at
/// `database_url` (dropped afterwards), then the runs/s driver with its clients spread
/// round-robin over the nodes. A node count that fails becomes a `FAILED` row; the others
/// still run.
pub async fn cluster(ctx: &Ctx, database_url: &str, node_counts: &[usize]) -> Vec<Row> {
    const S: &str = "end-to-end runs/s";
    let machine = crate::machine::Machine::describe();
    let mut rows = Vec::new();
    for &n in node_counts {
        let nodes = if n == 1 { "node" } else { "nodes" };
        let label = format!("paddock, PostgreSQL, {n} {nodes}");
        let schema = format!("bench_cluster_{}_{n}", std::process::id());
        ctx.log(format!("cluster: {n} {nodes} on schema {schema}"));
        let done = async {
            let cluster = Cluster::start(database_url, &schema, n, &ctx.fake, |_| {}).await?;
            let note = format!(
                "{n} {nodes} in this process, clients round-robin over them; every node, \
                 PostgreSQL, the clients and the fake model share this machine's {} cores ({})",
                machine.cores, machine.cpu_model
            );
            let case = RunsCase {
                label: &label,
                note: Some(&note),
                peer_target: false,
            };
            let model = cluster
                .nodes
                .first()
                .map(|t| t.model("instant"))
                .unwrap_or_default();
            let measured = runs_at_levels(ctx, &cluster.apis(), &model, &case).await;
            let stopped = cluster.stop().await;
            let measured = measured?;
            stopped.context("stop the nodes and drop the schema")?;
            anyhow::Ok(measured)
        };
        match done.await {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(
                Row::value(S, format!("{label}: FAILED"), "", f64::NAN).note(format!("{e:#}")),
            ),
        }
    }
    rows
}

/// Time from the model's first content byte (the fake's stamp) to the first `token` event at
/// the client, for each of `runs` sequential runs.
async fn ttft_once(target: &Target, profile: &str, runs: usize) -> anyhow::Result<Vec<f64>> {
    let dep = target
        .api
        .ready_deployment(&target.model(profile), "ttft")
        .await?;
    let mut events = target.api.events(&dep, None).await?;
    let mut out = Vec::new();
    for _ in 0..runs {
        let accepted = target.api.post_message(&dep, None, "hello").await?;
        let mut first: Option<f64> = None;
        let (status, _) = tokio::time::timeout(
            Duration::from_secs(60),
            wait_terminal(&mut events, &accepted.run_id, |delta| {
                if first.is_none() {
                    let now = unix_micros();
                    first = parse_stamp(delta).map(|s| now.saturating_sub(s) as f64 / 1000.0);
                }
            }),
        )
        .await??;
        anyhow::ensure!(status == "completed", "ttft run ended {status}");
        out.extend(first);
    }
    Ok(out)
}

/// Time to first token, with the default token coalescing and (in-process) with it off.
pub async fn ttft(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    const S: &str = "time to first token";
    let profile = ctx.scale.ttft_profile.clone();
    let mut rows = Vec::new();
    let judge = |row: Row| {
        let p99 = row.summary.map(|s| s.p99);
        let how = match p99 {
            Some(p) if p <= 20.0 => format!("p99 {p:.1} ms ≤ 20 ms"),
            Some(p) => format!("missed by {:.1} ms", p - 20.0),
            None => "no samples".to_owned(),
        };
        row.target(
            "≤ 20 ms after the model's first byte (p99)",
            p99.map(|p| p <= 20.0),
            how,
        )
    };
    ctx.log("ttft: default coalescing");
    let target = Target::start(&ctx.spec, &ctx.fake, |_| {}).await?;
    let lat = ttft_once(&target, &profile, ctx.scale.ttft_runs).await?;
    target.stop().await?;
    rows.push(judge(
        Row::dist(S, "paddock, token_coalesce 100 ms (default)", "ms", &lat).note(format!(
            "model `{profile}`; the first delta of a response is sent at once, later ones coalesced"
        )),
    ));
    if matches!(ctx.spec, TargetSpec::InProcess) {
        ctx.log("ttft: coalescing off");
        let target = Target::start(&ctx.spec, &ctx.fake, |s| {
            s.token_coalesce = Duration::ZERO;
        })
        .await?;
        let lat = ttft_once(&target, &profile, ctx.scale.ttft_runs).await?;
        target.stop().await?;
        rows.push(judge(
            Row::dist(S, "paddock, token_coalesce 0 ms (non-default)", "ms", &lat)
                .note(format!("model `{profile}`")),
        ));
    }
    Ok(rows)
}

/// SSE fan-out: `n` subscribers on one deployment; delivery latency of each posted message
/// (send stamp → receipt) at every subscriber.
pub async fn fanout(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    const S: &str = "SSE fan-out";
    let n = ctx.scale.fanout_subscribers;
    let m = ctx.scale.fanout_messages;
    let target = Target::start(&ctx.spec, &ctx.fake, |_| {}).await?;
    let dep = target
        .api
        .ready_deployment(&target.model("instant"), "fanout")
        .await?;
    let limit = Duration::from_secs(120);
    let api = target.api.clone();
    let send = {
        let (api, dep) = (api.clone(), dep.clone());
        move || async move {
            for _ in 0..m {
                let content = format!("{FANOUT_PREFIX}t{} ", unix_micros());
                api.post_message(&dep, Some("new"), &content).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            anyhow::Ok(())
        }
    };
    ctx.log(format!("fan-out: connecting {n} subscribers"));
    let connect_started = Instant::now();
    let (outcome, where_) = match &ctx.exe {
        Some(exe) if n > 500 => (
            subscribe::in_child(exe, &api, &dep, n, m, limit, send).await?,
            "subscribers in a child process",
        ),
        _ => {
            let subs = subscribe::connect(&api, &dep, n, m).await?;
            send().await?;
            (subs.finish(limit).await, "subscribers in this process")
        }
    };
    let connect_time = connect_started.elapsed();
    let rss = target.rss();
    settle(ctx, &target.api.http, Duration::from_secs(20)).await;
    target.stop().await?;
    let mut row = Row::dist(S, format!("paddock, {n} subscribers"), "ms", &outcome.latencies_ms)
        .note(format!(
            "{} connected, {} got all {m} messages, {} failed; {where_}; latency = POST sent → event parsed at subscriber (includes the accept); whole scenario {:.1} s",
            outcome.connected,
            outcome.complete,
            outcome.failed,
            connect_time.as_secs_f64()
        ));
    if let Some(e) = outcome.first_error {
        row = row.note(format!("first error: {e}"));
    }
    if let Some(r) = rss {
        row = row.note(format!("server-process RSS after: {:.0} MiB", mib(r)));
    }
    let p99 = row.summary.map(|s| s.p99);
    let judged = n >= 10_000 && outcome.complete == n;
    let how = match p99 {
        Some(p) if !judged => format!("not at 10,000 complete subscribers (p99 {p:.1} ms)"),
        Some(p) if p <= 50.0 => format!("p99 {p:.1} ms ≤ 50 ms"),
        Some(p) => format!("missed by {:.1} ms", p - 50.0),
        None => "no samples".to_owned(),
    };
    rows_push_target(
        row,
        "10,000 subscribers, p99 ≤ 50 ms",
        if judged { p99.map(|p| p <= 50.0) } else { None },
        how,
    )
}

fn rows_push_target(
    row: Row,
    target: &str,
    met: Option<bool>,
    how: String,
) -> anyhow::Result<Vec<Row>> {
    Ok(vec![row.target(target, met, how)])
}

/// Concurrency at scale: `n` simultaneously active runs on a slow model; peak RSS and
/// per-run memory.
pub async fn scale(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    const S: &str = "active runs at scale";
    let n = ctx.scale.scale_runs;
    let run_ms = ctx.scale.scale_run_time.as_millis();
    let target = Target::start(&ctx.spec, &ctx.fake, |s| {
        s.max_concurrent_runs = n + 64;
    })
    .await?;
    let per_dep = 100usize;
    let deps = target
        .api
        .ready_deployments(
            n.div_ceil(per_dep).max(1),
            &target.model(&format!("slow-{run_ms}")),
        )
        .await?;
    let http = target.api.http.clone();
    settle(ctx, &http, Duration::from_secs(5)).await;
    let baseline = target.rss().unwrap_or(0);
    ctx.log(format!(
        "scale: posting {n} runs (baseline RSS {:.0} MiB)",
        mib(baseline)
    ));
    // Sample RSS and in-flight model streams until told to stop.
    let peak_rss = Arc::new(AtomicU64::new(baseline));
    let peak_active = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let (peak_rss, peak_active, stop) = (peak_rss.clone(), peak_active.clone(), stop.clone());
        let pid = target.pid;
        let in_proc = target.in_process;
        let stats_url = ctx.fake.base_url().trim_end_matches("/v1").to_owned() + "/stats";
        let http = http.clone();
        tokio::spawn(async move {
            loop {
                if (in_proc || pid.is_some())
                    && let Some(r) = crate::machine::rss_bytes(pid)
                {
                    peak_rss.fetch_max(r, Ordering::Relaxed);
                }
                if let Ok(resp) = http.get(&stats_url).send().await
                    && let Ok(v) = resp.json::<serde_json::Value>().await
                {
                    peak_active.fetch_max(v["active"].as_u64().unwrap_or(0), Ordering::Relaxed);
                }
                tokio::select! {
                    () = stop.notified() => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
    };
    let post_started = Instant::now();
    let (lat, errors, first) = accept_loop(&target.api, &deps, 64, n, Some("new")).await;
    let post_time = post_started.elapsed();
    ctx.log(format!(
        "scale: posted in {:.1} s; waiting for peak",
        post_time.as_secs_f64()
    ));
    // Wait until every run is in its model call, or the first runs would be finishing.
    let deadline = Instant::now()
        + ctx
            .scale
            .scale_run_time
            .saturating_sub(post_time)
            .max(Duration::from_secs(2));
    while Instant::now() < deadline && ctx.fake.active(&http).await < (n as u64) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.log("scale: waiting for the runs to finish");
    settle(
        ctx,
        &http,
        ctx.scale.scale_run_time + Duration::from_secs(60),
    )
    .await;
    stop.notify_one();
    let _ = sampler.await;
    let peak = peak_rss.load(Ordering::Relaxed);
    let active = peak_active.load(Ordering::Relaxed);
    target.stop().await?;
    let mut rows = Vec::new();
    let mut r = Row::value(S, format!("paddock, {n} runs posted: peak simultaneously active"), "runs", active as f64)
        .note(format!("model `slow-{run_ms}`; max_concurrent_runs raised to {} (default 256), per-deployment active-run limit lifted (default 8); {} deployments, a new thread per run; posted by 64 clients in {:.1} s", n + 64, deps.len(), post_time.as_secs_f64()));
    if errors > 0 {
        r = r.note(format!(
            "{errors} posts failed: {}",
            first.unwrap_or_default()
        ));
    }
    rows.push(r);
    rows.push(Row::dist(
        S,
        format!("paddock, {n} runs: accept latency while filling"),
        "ms",
        &lat,
    ));
    if target_rss_known(ctx) {
        let per_run = if active > 0 {
            peak.saturating_sub(baseline) as f64 / active as f64 / 1024.0
        } else {
            0.0
        };
        let judged = n >= 10_000 && active >= 10_000;
        let met = judged.then_some(peak <= 1 << 30);
        let how = if !judged {
            format!("not judged: {active} active (needs 10,000)")
        } else if peak <= 1 << 30 {
            format!("{:.0} MiB ≤ 1024 MiB", mib(peak))
        } else {
            format!("missed by {:.0} MiB", mib(peak) - 1024.0)
        };
        rows.push(
            Row::value(S, format!("paddock, {n} runs: peak RSS"), "MiB", mib(peak))
                .note(format!(
                    "baseline {:.0} MiB; {}",
                    mib(baseline),
                    rss_scope(ctx)
                ))
                .target("10,000 active runs in ≤ 1 GiB RSS", met, how),
        );
        rows.push(
            Row::value(
                S,
                format!("paddock, {n} runs: memory per active run"),
                "KiB",
                per_run,
            )
            .note("(peak − baseline) / peak active"),
        );
    }
    Ok(rows)
}

fn target_rss_known(ctx: &Ctx) -> bool {
    match &ctx.spec {
        TargetSpec::InProcess => true,
        TargetSpec::Remote { pid, .. } => pid.is_some(),
    }
}

fn rss_scope(ctx: &Ctx) -> &'static str {
    match (&ctx.spec, ctx.exe.is_some()) {
        (TargetSpec::InProcess, true) => {
            "RSS of the bench process: server + HTTP clients (fake model in a child process)"
        }
        (TargetSpec::InProcess, false) => {
            "RSS of the bench process: server + HTTP clients + fake model"
        }
        (TargetSpec::Remote { .. }, _) => "RSS of the server process (--server-pid)",
    }
}

/// Replay: fill one deployment's log with `events` events, then time a reconnecting client
/// reading all of them (`after=evt_0`).
pub async fn replay(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    const S: &str = "replay";
    let want = ctx.scale.replay_events as i64;
    // Token coalescing off so each fake token is one event: the log fills ~1000× faster.
    let target = Target::start(&ctx.spec, &ctx.fake, |s| {
        s.token_coalesce = Duration::ZERO;
    })
    .await?;
    let tokens = if ctx.scale.full { 1000 } else { 100 };
    let dep = target
        .api
        .ready_deployment(&target.model(&format!("tokens-{tokens}")), "replay")
        .await?;
    ctx.log(format!("replay: filling {want} events"));
    let fill_started = Instant::now();
    let fill_limit = Duration::from_secs(if ctx.scale.full { 120 } else { 30 });
    let mut last = 0i64;
    let mut runs = 0usize;
    let mut bulk = 0usize;
    {
        let mut events = target.api.events(&dep, None).await?;
        // In-process: one real run, then the rest of the log as token events of that run,
        // appended through the store in batches (a run appends one transaction per token
        // event, which would take minutes). Remote: runs until the log is full or time is up.
        let store = target.store();
        while last < want && fill_started.elapsed() < fill_limit {
            let accepted = target.api.post_message(&dep, None, "hello").await?;
            let (_, seq) = tokio::time::timeout(
                Duration::from_secs(60),
                wait_terminal(&mut events, &accepted.run_id, |_| {}),
            )
            .await??;
            runs += 1;
            last = seq.unwrap_or(last);
            if let Some(store) = &store {
                while last < want {
                    let n = usize::try_from(want - last).unwrap_or(0).min(2000);
                    let batch = (0..n)
                        .map(|_| paddock_store::NewEvent {
                            kind: paddock_protocol::EventType::Token,
                            thread_id: Some(accepted.thread_id.clone()),
                            run_id: Some(accepted.run_id.clone()),
                            data: serde_json::json!({"run_id": accepted.run_id,
                                "thread_id": accepted.thread_id, "step": 1, "delta": " tok"}),
                        })
                        .collect();
                    let now = i64::try_from(unix_micros() / 1_000_000).unwrap_or(0);
                    let stored = store.append_events(&dep, batch, now).await?;
                    bulk += stored.len();
                    last = stored.last().map_or(last, |e| e.seq);
                }
            }
        }
    }
    let fill_time = fill_started.elapsed();
    ctx.log(format!(
        "replay: {last} events in {:.1} s; replaying",
        fill_time.as_secs_f64()
    ));
    let t0 = Instant::now();
    let mut events = target.api.events(&dep, Some(0)).await?;
    let mut first = None;
    let mut count = 0u64;
    let limit = Duration::from_secs(300);
    while let Ok(Some(e)) =
        tokio::time::timeout(limit.saturating_sub(t0.elapsed()), events.next()).await
    {
        let e = e?;
        if first.is_none() {
            first = Some(t0.elapsed());
        }
        count += 1;
        if crate::api::seq(&e).is_some_and(|s| s >= last) {
            break;
        }
    }
    let total = t0.elapsed();
    drop(events);
    target.stop().await?;
    Ok(vec![
        Row::value(S, format!("paddock, {count} events: time to replay all"), "s", total.as_secs_f64())
            .note(format!(
                "{:.0} events/s; log filled in {:.1} s by {runs} runs of `tokens-{tokens}` (token_coalesce 0) plus {bulk} token events appended through the store in batches of 2,000; client parses SSE framing, not JSON",
                count as f64 / total.as_secs_f64().max(1e-9),
                fill_time.as_secs_f64()
            )),
        Row::value(S, "paddock: time to first replayed event", "ms", first.map_or(f64::NAN, ms)),
    ])
}

/// Soak: mixed load (instant, tool-calling and streaming runs, subscribers that come and go
/// and replay) for `soak_duration`; RSS sampled every `soak_sample`.
pub async fn soak(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    const S: &str = "soak";
    let target = Target::start(&ctx.spec, &ctx.fake, |_| {}).await?;
    let profiles = ["instant", "tools-1", "stream-5-500-10", "instant"];
    let mut deps = Vec::new();
    for p in profiles {
        deps.push(target.api.ready_deployment(&target.model(p), p).await?);
    }
    let duration = ctx.scale.soak_duration;
    ctx.log(format!("soak: {:.0} s", duration.as_secs_f64()));
    let started = Instant::now();
    let load = run_loop(
        std::slice::from_ref(&target.api),
        &deps,
        duration,
        usize::MAX,
    );
    let churn = {
        let api = target.api.clone();
        let dep = deps[0].clone();
        async move {
            let mut opened = 0usize;
            while started.elapsed() < duration {
                if let Ok(mut ev) = api.events(&dep, Some(0)).await {
                    opened += 1;
                    let mut read = 0;
                    while read < 50 {
                        match tokio::time::timeout(Duration::from_millis(200), ev.next()).await {
                            Ok(Some(Ok(_))) => read += 1,
                            _ => break,
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            opened
        }
    };
    let sampler = async {
        let mut samples = Vec::new();
        let mut at = Duration::ZERO;
        while at <= duration {
            let wait = (started + at).saturating_duration_since(Instant::now());
            tokio::time::sleep(wait).await;
            samples.push((at, target.rss().unwrap_or(0)));
            at += ctx.scale.soak_sample;
        }
        samples
    };
    let (load, opened, samples) = tokio::join!(load, churn, sampler);
    let (lat, errors, elapsed, first) = load?;
    settle(ctx, &target.api.http, Duration::from_secs(20)).await;
    target.stop().await?;
    let mut rows = vec![
        Row::value(S, "paddock: mixed runs completed", "runs/s", lat.len() as f64 / elapsed.as_secs_f64())
            .note(format!(
                "{} runs over {:.0} s on 4 deployments (instant, tools-1, stream-5-500-10, instant) + {opened} replaying subscribers opened and closed",
                lat.len(), elapsed.as_secs_f64()
            )),
    ];
    if errors > 0 {
        rows[0] = rows[0]
            .clone()
            .note(format!("{errors} errors: {}", first.unwrap_or_default()));
    }
    if target_rss_known(ctx) && samples.len() >= 2 {
        let base = samples[1].1.max(1) as f64;
        let list: Vec<String> = samples
            .iter()
            .map(|(t, r)| format!("{:.0}s {:.0}", t.as_secs_f64(), mib(*r)))
            .collect();
        let after_warmup = &samples[1..];
        let dev = after_warmup
            .iter()
            .map(|(_, r)| ((*r as f64 - base) / base).abs())
            .fold(0.0, f64::max)
            * 100.0;
        let last = samples.last().map_or(0, |s| s.1) as f64;
        let drift = (last - base) / base * 100.0;
        let judged = ctx.scale.full;
        let how = if dev <= 5.0 {
            format!("max deviation {dev:.1} % from the first post-warm-up sample")
        } else {
            format!("missed: max deviation {dev:.1} % (limit 5 %)")
        };
        rows.push(
            Row::value(
                S,
                "paddock: RSS drift, first post-warm-up sample → end",
                "%",
                drift,
            )
            .note(format!(
                "samples (MiB): {}; {}",
                list.join(", "),
                rss_scope(ctx)
            ))
            .target("RSS flat ±5 %", judged.then_some(dev <= 5.0), how),
        );
    }
    Ok(rows)
}
