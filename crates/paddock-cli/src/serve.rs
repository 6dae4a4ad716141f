//! `paddock serve`: build the settings, make sure the default model is there, start the server,
//! show the first admin key once, and stop gracefully on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Args;
use paddock_model::pull::{DEFAULT_LOCAL_MODEL, Progress, ensure_default_model};
use paddock_server::{Server, ServerSettings, StartError};

use crate::config::{ConfigArgs, DatabaseArgs, Layer};
use crate::progress::ProgressPrinter;
use crate::signals::{INTERRUPTED, Signals};

/// Options of `paddock serve`. Each one overrides `PADDOCK_*` and `paddock.toml`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Where workspaces and snapshots live instead of the data directory; on several nodes, a
    /// filesystem all of them mount (docs/scaling-out.md)
    /// [env: PADDOCK_SHARED_DIR] [default: the data directory]
    #[arg(long, value_name = "DIR")]
    pub shared_dir: Option<PathBuf>,
    /// Address to listen on [env: PADDOCK_LISTEN] [default: 127.0.0.1:8787]
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// Base URL used in URLs Paddock returns, e.g. https://paddock.example.com
    /// [env: PADDOCK_PUBLIC_URL] [default: http://<listen>, with `localhost` for loopback and
    /// 0.0.0.0]
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Model for deployments that name none [env: PADDOCK_DEFAULT_MODEL]
    /// [default: local/smollm2-135m]
    #[arg(long, value_name = "PROVIDER/NAME")]
    pub default_model: Option<String>,
}

/// Runs the server until a signal asks it to stop.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Installed first, so that Ctrl-C during the model download cancels it cleanly (the
    // partial file is removed) rather than killing the process.
    let mut signals = Signals::install().context("could not install signal handlers")?;

    let sources = args.config.sources(Layer {
        listen: args.listen,
        public_url: args.public_url,
        default_model: args.default_model,
        shared_dir: args.shared_dir,
        database_url: args.database.database_url,
        ..Layer::default()
    })?;
    if let Some(path) = &sources.file.path {
        tracing::info!(path = %path.display(), "read configuration file");
    }
    let mut settings = sources.server_settings()?;

    tokio::select! {
        prepared = prepare_default_model(&mut settings) => prepared?,
        signal = signals.recv() => {
            eprintln!("received {signal} while fetching the default model; nothing was saved");
            return Ok(ExitCode::from(INTERRUPTED));
        }
    }

    let admin_key_path = settings.admin_key_path();
    let public_url = settings.public_url.clone();
    let postgres = settings.database.url.is_some();
    let server = Server::start(settings)
        .await
        .map_err(|e| explain(e, postgres))?;

    if let Some(key) = server.bootstrap_key() {
        println!(
            "Admin API key (shown once, also saved to {}): {key}",
            admin_key_path.display()
        );
    }
    println!(
        "Paddock is listening on http://{} (public URL {public_url})",
        server.local_addr()
    );

    let signal = signals.recv().await;
    tracing::info!(
        signal,
        "shutting down; send the signal again to exit at once"
    );
    tokio::select! {
        stopped = server.shutdown() => {
            stopped.context("the server did not shut down cleanly")?;
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        signal = signals.recv() => {
            eprintln!("received {signal} again; exiting without waiting for in-flight work");
            // Not a return: dropping the runtime would wait for blocking model work.
            std::process::exit(i32::from(INTERRUPTED));
        }
    }
}

/// With the default `default_model` (`local/smollm2-135m`) and no `[local_models]` entry of
/// that name, downloads the default model into `<data_dir>/models` if it is not there yet and
/// registers it.
async fn prepare_default_model(settings: &mut ServerSettings) -> anyhow::Result<()> {
    let default_model = format!("local/{DEFAULT_LOCAL_MODEL}");
    if settings.default_model != default_model
        || settings.local_models.contains_key(DEFAULT_LOCAL_MODEL)
    {
        return Ok(());
    }
    if !cfg!(feature = "local") {
        anyhow::bail!(
            "the default model `{default_model}` runs on the embedded model runtime, which this \
             paddock was built without (cargo feature `local`); set default_model to a remote \
             model, e.g. --default-model openai/gpt-4o-mini"
        );
    }
    let models_dir = settings.models_dir();
    let mut printer = ProgressPrinter::new(format!(
        "Downloading the default model ({DEFAULT_LOCAL_MODEL}, about 100 MB) into {} — first start only",
        models_dir.display()
    ));
    let path = ensure_default_model(&models_dir, &mut |p: Progress| printer.report(p))
        .await
        .with_context(|| {
            format!(
                "could not fetch the default model into {} (to work offline, copy a GGUF there \
                 with `paddock models pull <path>` and configure it under [local_models], or set \
                 default_model to a remote model)",
                models_dir.display()
            )
        })?;
    tracing::info!(path = %path.display(), "default model ready");
    settings
        .local_models
        .insert(DEFAULT_LOCAL_MODEL.to_owned(), path);
    Ok(())
}

/// A start-up error with a hint on what to change, where there is an obvious one. `postgres`:
/// the store is the PostgreSQL database of `database.url`.
fn explain(error: StartError, postgres: bool) -> anyhow::Error {
    let hint = match &error {
        StartError::Bind { .. } => {
            Some("is another server using that address? choose another with --listen")
        }
        StartError::DefaultModel { .. } => Some(
            "set default_model (--default-model, PADDOCK_DEFAULT_MODEL or paddock.toml) to a \
             model this server can use",
        ),
        StartError::Store(_) if postgres => Some(
            "check database.url (PADDOCK_DATABASE_URL, --database-url or paddock.toml) and that \
             the PostgreSQL server accepts connections from this host",
        ),
        _ => None,
    };
    let error = anyhow::Error::new(error).context("could not start the server");
    match hint {
        Some(hint) => anyhow!("{}\nhint: {hint}", crate::render_error(&error)),
        None => error,
    }
}
