//! `paddock-bench`: see `docs/BENCHMARKS.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use paddock_bench::report::Report;
use paddock_bench::scenarios::{Ctx, Scale};
use paddock_bench::target::{Fake, TargetSpec};
use paddock_bench::{api, machine, peers, subscribe};

#[derive(Parser)]
#[command(
    version,
    about = "Benchmark harness for Paddock (see docs/BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScaleArg {
    /// Every scenario at tiny sizes (seconds); what CI runs.
    Smoke,
    /// The sizes the targets are stated at (about 10 minutes on 2 cores).
    Full,
}

#[derive(clap::Args)]
struct Common {
    /// Sizes.
    #[arg(long, value_enum, default_value = "full")]
    scale: ScaleArg,
    /// Soak length in minutes (RSS sampled each minute); default 3 at full scale.
    #[arg(long)]
    soak_minutes: Option<u64>,
    /// Only these scenarios (comma-separated: accept,runs,ttft,fanout,scale,replay,soak).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Write bench.md and bench.json (or peers.md/peers.json) here.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scenarios against Paddock and write the table.
    Run {
        #[command(flatten)]
        common: Common,
        /// Target a running server instead of starting one in-process (loopback only).
        #[arg(long, requires = "key")]
        url: Option<String>,
        /// Its API key (admin scope).
        #[arg(long, env = "PADDOCK_API_KEY")]
        key: Option<String>,
        /// The running server's provider name that points at `paddock-bench fake-model`.
        #[arg(long, default_value = "fake")]
        provider: String,
        /// That fake model's base URL (`http://127.0.0.1:PORT/v1`), needed with --url.
        #[arg(long)]
        fake_url: Option<String>,
        /// The running server's pid, to read its RSS.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Accept latency, runs/s and time to first token against Paddock (in-process) and
    /// LangGraph's dev server, both on the same fake model; prints the ratios.
    Peers {
        #[command(flatten)]
        common: Common,
        /// LangGraph dev server, e.g. http://127.0.0.1:2024 (graphs `instant` and `stream`).
        #[arg(long)]
        langgraph_url: Option<String>,
        /// The fake model both use (`paddock-bench fake-model`), `http://127.0.0.1:PORT/v1`.
        #[arg(long)]
        fake_url: String,
        /// A line for the table on why a peer is absent (e.g. Hermes Agent).
        #[arg(long)]
        absent: Vec<String>,
    },
    /// End-to-end runs/s with 1, 3… in-process nodes sharing one PostgreSQL database (a fresh
    /// schema per node count, dropped afterwards); writes cluster.md and cluster.json.
    Cluster {
        /// The PostgreSQL database the nodes share (loopback only).
        #[arg(long, env = "PADDOCK_DATABASE_URL")]
        database_url: String,
        /// Node counts to measure, one after another (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        nodes: Vec<usize>,
        /// Client counts at each node count (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "8,32")]
        concurrency: Vec<usize>,
        /// Runs per concurrency level (the level also stops after --max-seconds).
        #[arg(long, default_value_t = 3000)]
        runs: usize,
        /// Upper bound on one concurrency level's time, in seconds.
        #[arg(long, default_value_t = 120)]
        max_seconds: u64,
        /// Write cluster.md and cluster.json here.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
    /// Serve the fake OpenAI-compatible model (profiles by model name; see the docs).
    FakeModel {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Serve a bare axum handler answering `POST /v1/deployments/{dep}/messages` with 202.
    BareAxum {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Internal: fan-out subscribers in a child process.
    #[command(hide = true)]
    Subscribe {
        #[arg(long)]
        url: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        deployment: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        messages: usize,
        #[arg(long)]
        timeout_secs: u64,
    },
}

fn scale_of(common: &Common) -> Scale {
    let mut scale = match common.scale {
        ScaleArg::Smoke => Scale::smoke(),
        ScaleArg::Full => Scale::full(),
    };
    if let Some(m) = common.soak_minutes {
        scale.soak_duration = Duration::from_secs(m * 60);
        scale.soak_sample = Duration::from_secs(60);
    }
    scale
}

fn write(out: &PathBuf, stem: &str, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(format!("{stem}.md")), report.markdown())?;
    std::fs::write(out.join(format!("{stem}.json")), report.json())?;
    println!("{}", report.markdown());
    eprintln!(
        "wrote {} and {}",
        out.join(format!("{stem}.md")).display(),
        out.join(format!("{stem}.json")).display()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    match cli.command {
        Command::FakeModel { listen } => {
            api::check_loopback(&format!("http://{listen}"))?;
            machine::raise_open_files_limit();
            let fake = paddock_bench::fake::FakeModel::start(listen).await?;
            println!("LISTENING {}", fake.base_url());
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Command::BareAxum { listen } => {
            api::check_loopback(&format!("http://{listen}"))?;
            let bare = paddock_bench::bare::BareAxum::start(listen).await?;
            println!("LISTENING {}", bare.base_url());
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Command::Subscribe {
            url,
            key,
            deployment,
            count,
            messages,
            timeout_secs,
        } => {
            api::check_loopback(&url)?;
            machine::raise_open_files_limit();
            let api = api::Api::new(url, key);
            let subs = subscribe::connect(&api, &deployment, count, messages).await?;
            println!("READY {}", subs.connected());
            let outcome = subs.finish(Duration::from_secs(timeout_secs)).await;
            println!("{}", serde_json::to_string(&outcome)?);
            Ok(())
        }
        Command::Run {
            common,
            url,
            key,
            provider,
            fake_url,
            server_pid,
        } => {
            let soft = machine::raise_open_files_limit();
            let exe = std::env::current_exe().ok();
            let (spec, fake) = match url {
                Some(url) => {
                    let fake_url = fake_url.context("--url needs --fake-url")?;
                    api::check_loopback(&fake_url)?;
                    (
                        TargetSpec::Remote {
                            url,
                            key: key.context("--url needs --key")?,
                            provider,
                            pid: server_pid,
                        },
                        Fake::External { base_url: fake_url },
                    )
                }
                None => (TargetSpec::InProcess, Fake::start(exe.as_ref()).await?),
            };
            let mut scale = scale_of(&common);
            // Server and client share this process: each subscriber is two descriptors here
            // unless the subscribers run in a child, which they do above 500.
            let room = usize::try_from(soft)
                .unwrap_or(usize::MAX)
                .saturating_sub(1024);
            if scale.fanout_subscribers > room {
                eprintln!("open-file soft limit {soft}: fan-out scaled down to {room} subscribers");
                scale.fanout_subscribers = room;
            }
            if scale.scale_runs > room {
                eprintln!("open-file soft limit {soft}: active runs scaled down to {room}");
                scale.scale_runs = room;
            }
            let ctx = Ctx {
                spec,
                scale,
                fake,
                exe,
                verbose: true,
            };
            let report = paddock_bench::run(&ctx, &common.only, &command_line).await;
            write(&common.out, "bench", &report)
        }
        Command::Cluster {
            database_url,
            nodes,
            concurrency,
            runs,
            max_seconds,
            out,
        } => {
            api::check_loopback(&database_url)?;
            let command_line = command_line.replace(
                &database_url,
                &paddock_bench::target::redact_password(&database_url),
            );
            anyhow::ensure!(
                !nodes.contains(&0) && !concurrency.contains(&0),
                "--nodes and --concurrency must be positive"
            );
            machine::raise_open_files_limit();
            let exe = std::env::current_exe().ok();
            let scale = Scale {
                runs_levels: concurrency,
                runs_duration: Duration::from_secs(max_seconds),
                runs_max: runs,
                ..Scale::full()
            };
            let ctx = Ctx {
                spec: TargetSpec::InProcess,
                scale,
                fake: Fake::start(exe.as_ref()).await?,
                exe,
                verbose: true,
            };
            let report =
                paddock_bench::run_cluster(&ctx, &database_url, &nodes, &command_line).await;
            write(&out, "cluster", &report)
        }
        Command::Peers {
            common,
            langgraph_url,
            fake_url,
            absent,
        } => {
            machine::raise_open_files_limit();
            api::check_loopback(&fake_url)?;
            let scale = scale_of(&common);
            let ctx = Ctx {
                spec: TargetSpec::InProcess,
                scale: scale.clone(),
                fake: Fake::External { base_url: fake_url },
                exe: std::env::current_exe().ok(),
                verbose: true,
            };
            let only = vec!["accept".to_owned(), "runs".to_owned(), "ttft".to_owned()];
            let mut report = paddock_bench::run(&ctx, &only, &command_line).await;
            let paddock_rows = report.rows.clone();
            match langgraph_url {
                Some(u) => {
                    eprintln!("[bench] langgraph: {u}");
                    let lg = peers::LangGraph::new(&u)?;
                    let lg_rows = peers::langgraph_rows(&lg, &scale).await;
                    let ratio_rows = peers::ratios(&paddock_rows, &lg_rows, "langgraph dev", &scale);
                    report.rows.extend(lg_rows);
                    report.rows.extend(ratio_rows);
                }
                None => report.rows.push(
                    paddock_bench::report::Row::value("peers", "langgraph dev", "", f64::NAN)
                        .note("not run: no --langgraph-url (the install or start failed; see scripts/bench output)"),
                ),
            }
            for line in absent {
                let (name, why) = line.split_once(':').unwrap_or((line.as_str(), ""));
                report.rows.push(
                    paddock_bench::report::Row::value("peers", name.trim(), "", f64::NAN)
                        .note(format!("not run: {}", why.trim())),
                );
            }
            report.load_average_end = machine::load_average();
            write(&common.out, "peers", &report)
        }
    }
}
