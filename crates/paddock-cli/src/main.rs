//! `paddock`: run the server (`serve`), make API keys offline (`keys create`) and fetch model
//! files (`models pull`).
//!
//! Configuration comes from `paddock.toml`, `PADDOCK_*` environment variables and flags, in
//! that order of precedence (see `docs/configuration.md` and [`config`]). Logs go to stderr;
//! stdout carries only what scripts may want to capture (the admin key, a new key, a path).

mod config;
mod keys;
mod models;
mod progress;
mod prompt_size;
mod serve;
mod signals;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Paddock: a self-hostable server for per-customer AI agents.
#[derive(Debug, Parser)]
#[command(name = "paddock", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr. The level comes from RUST_LOG (default `info`).
    #[arg(
        long,
        global = true,
        env = "PADDOCK_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until SIGTERM or SIGINT.
    Serve(serve::ServeArgs),
    /// Manage API keys directly in the database (no running server needed).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Fetch model files for the embedded runtime.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Report the size in tokens of the fixed part of every model request (diagnostics).
    PromptSize(prompt_size::PromptSizeArgs),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Keys(command) => keys::run(command).await,
            Command::Models(command) => models::run(command).await,
            Command::PromptSize(args) => prompt_size::run(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", render_error(&err));
            ExitCode::FAILURE
        }
    }
}

/// `err` and its causes on one line, `outer: inner: ...`, skipping a cause whose text the
/// message before it already ends with (errors that print their source themselves).
fn render_error(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Logs to stderr at the level of `RUST_LOG` (default `info`), secret values redacted.
fn init_logging(format: LogFormat) {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("warning: ignoring invalid RUST_LOG `{spec}`: {e}");
            EnvFilter::new("info")
        }),
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(RedactedStderr);
    // Setting the subscriber fails only if one is already set, which cannot happen here.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Stderr for log lines, through the secret redaction of spec §15.3: every secret value the
/// process has handled ([`paddock_core::redaction::remember_for_logs`]) becomes
/// `[secret:NAME]`, whatever crate logged it and at whatever level (rmcp logs whole JSON-RPC
/// messages, tool results included, at debug and trace).
struct RedactedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactedStderr {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(std::io::stderr())
    }
}

/// One log event's writer: the formatter writes each event whole with one `write_all`, so a
/// value is never split between two calls of [`std::io::Write::write`].
struct RedactingWriter(std::io::Stderr);

impl std::io::Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .write_all(&paddock_core::redaction::redact_logs(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn error_chains_are_not_repeated() {
        let io = std::io::Error::other("address in use");
        let err = anyhow::Error::new(io)
            .context("could not listen on 1.2.3.4:5: address in use")
            .context("could not start the server");
        assert_eq!(
            render_error(&err),
            "could not start the server: could not listen on 1.2.3.4:5: address in use"
        );
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn keys_create_splits_scopes() {
        let cli = Cli::try_parse_from([
            "paddock",
            "keys",
            "create",
            "--scopes",
            "deployments:read,deployments:write",
            "--name",
            "backend",
        ])
        .unwrap();
        let Command::Keys(keys::KeysCommand::Create(args)) = cli.command else {
            panic!("not keys create");
        };
        assert_eq!(args.scopes, ["deployments:read", "deployments:write"]);
        assert_eq!(args.name, "backend");
        assert_eq!(args.account, "default");
    }

    #[test]
    fn models_pull_defaults_to_the_default_source() {
        let cli = Cli::try_parse_from(["paddock", "models", "pull"]).unwrap();
        let Command::Models(models::ModelsCommand::Pull(args)) = cli.command else {
            panic!("not models pull");
        };
        assert_eq!(args.source, paddock_model::pull::DEFAULT_SOURCE);
    }

    #[test]
    fn serve_flags_are_optional_so_lower_layers_can_apply() {
        let cli = Cli::try_parse_from(["paddock", "serve", "--listen", "0.0.0.0:1"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(args.listen.as_deref(), Some("0.0.0.0:1"));
        assert_eq!(args.public_url, None);
        assert_eq!(args.config.data_dir, None);
        assert_eq!(args.database.database_url, None);
        assert_eq!(args.shared_dir, None);
    }

    #[test]
    fn keys_create_takes_a_database_url() {
        let cli = Cli::try_parse_from([
            "paddock",
            "keys",
            "create",
            "--scopes",
            "admin",
            "--database-url",
            "postgres://db.internal/paddock",
        ])
        .unwrap();
        let Command::Keys(keys::KeysCommand::Create(args)) = cli.command else {
            panic!("not keys create");
        };
        assert_eq!(
            args.database.database_url.as_deref(),
            Some("postgres://db.internal/paddock")
        );
        assert_eq!(args.config.data_dir, None);
    }
}
