//! `paddock models pull`: fetch a GGUF model file into `<data_dir>/models/`.
//!
//! The saved path goes to stdout alone on one line; progress and the `paddock.toml` snippet
//! that uses the model go to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use paddock_model::pull::{
    DEFAULT_LOCAL_MODEL, DEFAULT_SOURCE, Progress, default_model_path, pull,
};
use paddock_server::ServerSettings;

use crate::config::{ConfigArgs, Layer};
use crate::progress::ProgressPrinter;
use crate::signals::{INTERRUPTED, Signals};

/// `paddock models ...`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download (or copy) a GGUF model into <data_dir>/models, verifying its sha256.
    Pull(PullArgs),
}

/// Options of `paddock models pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// `default` (the built-in SmolLM2-135M-Instruct), an http(s) URL of a GGUF file, or a
    /// local file path to copy
    #[arg(default_value = DEFAULT_SOURCE)]
    pub source: String,
    /// Expected sha256 of the file (64 hex digits); on a mismatch nothing is saved
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// The model's name: used as `local/<NAME>`; URL and path sources are saved as <NAME>.gguf
    /// [default: the file name without extension]
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs a `models` subcommand.
pub async fn run(command: ModelsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ModelsCommand::Pull(args) => pull_model(args).await,
    }
}

/// Where a pull saves its file, and the name the model gets.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    dest: PathBuf,
    name: String,
}

async fn pull_model(args: PullArgs) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::install().context("could not install signal handlers")?;
    let data_dir = args.config.sources(Layer::default())?.data_dir()?;
    let models_dir = ServerSettings::new(data_dir).models_dir();
    let plan = plan(&args.source, args.name.as_deref(), &models_dir)?;

    let what = if args.source == DEFAULT_SOURCE {
        format!("the default model ({DEFAULT_LOCAL_MODEL})")
    } else {
        args.source.clone()
    };
    let mut printer = ProgressPrinter::new(format!("Fetching {what} into {}", plan.dest.display()));
    let mut report = |p: Progress| printer.report(p);
    let pulled = tokio::select! {
        pulled = pull(&args.source, &plan.dest, args.sha256.as_deref(), &mut report) => pulled,
        signal = signals.recv() => {
            eprintln!("received {signal}; stopped, nothing was saved");
            return Ok(ExitCode::from(INTERRUPTED));
        }
    };
    let path = pulled.with_context(|| format!("could not pull `{}`", args.source))?;

    println!("{}", path.display());
    if args.source == DEFAULT_SOURCE && plan.name == DEFAULT_LOCAL_MODEL {
        eprintln!(
            "This is the default model: `paddock serve` uses it as local/{DEFAULT_LOCAL_MODEL} \
             without any configuration."
        );
    } else {
        eprintln!(
            "Saved. To use it, add to paddock.toml:\n\n[local_models]\n{} = {}\n\n\
             then name it \"local/{}\" (in a deployment's `model`, or as default_model).",
            toml_key(&plan.name),
            toml_string(&path.display().to_string()),
            plan.name
        );
    }
    if args.sha256.is_none() && args.source != DEFAULT_SOURCE {
        eprintln!("Its sha256 was not checked; pass --sha256 to verify a download.");
    }
    Ok(ExitCode::SUCCESS)
}

/// Decides the destination and the model name for `source`.
fn plan(source: &str, name: Option<&str>, models_dir: &Path) -> anyhow::Result<Plan> {
    if let Some(name) = name {
        check_name(name)?;
    }
    if source == DEFAULT_SOURCE {
        return Ok(Plan {
            dest: default_model_path(models_dir),
            name: name.unwrap_or(DEFAULT_LOCAL_MODEL).to_owned(),
        });
    }
    if let Some(name) = name {
        return Ok(Plan {
            dest: models_dir.join(format!("{name}.gguf")),
            name: name.to_owned(),
        });
    }
    let file = source_file_name(source)
        .filter(|f| is_safe_file_name(f))
        .with_context(|| format!("cannot tell a file name from `{source}`; pass --name"))?;
    let stem = Path::new(&file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    check_name(&stem).with_context(|| {
        format!("cannot use `{stem}` (from the file name) as the model name; pass --name")
    })?;
    Ok(Plan {
        dest: models_dir.join(&file),
        name: stem,
    })
}

/// The last path segment of a URL (without query or fragment), or the file name of a path.
fn source_file_name(source: &str) -> Option<String> {
    let rest = source
        .strip_prefix("https://")
        .or_else(|| source.strip_prefix("http://"));
    match rest {
        Some(rest) => {
            let rest = rest.split(['?', '#']).next().unwrap_or_default();
            let (_host, path) = rest.split_once('/')?;
            path.rsplit('/').next().map(str::to_owned)
        }
        None => Path::new(source)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
    }
}

fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// Model names: 1–64 characters of `[A-Za-z0-9._-]`, starting with a letter or digit (they
/// become file names and `local/<name>`).
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!(
            "invalid model name `{name}`: use 1 to 64 letters, digits, `.`, `_` or `-`, \
             starting with a letter or digit"
        );
    }
    Ok(())
}

/// `name` as a TOML key: bare when it can be, quoted otherwise (a `.` would make it dotted).
fn toml_key(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        name.to_owned()
    } else {
        toml_string(name)
    }
}

/// `value` as a quoted, escaped TOML string.
fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_for(source: &str, name: Option<&str>) -> anyhow::Result<Plan> {
        plan(source, name, Path::new("/data/models"))
    }

    #[test]
    fn the_default_source_goes_to_the_default_path() {
        assert_eq!(
            plan_for("default", None).unwrap(),
            Plan {
                dest: default_model_path(Path::new("/data/models")),
                name: DEFAULT_LOCAL_MODEL.to_owned(),
            }
        );
    }

    #[test]
    fn urls_and_paths_keep_their_file_name_unless_named() {
        let url = plan_for(
            "https://example.com/org/repo/resolve/main/Qwen2.5-0.5B-Q4_K_M.gguf?download=true",
            None,
        )
        .unwrap();
        assert_eq!(url.dest, Path::new("/data/models/Qwen2.5-0.5B-Q4_K_M.gguf"));
        assert_eq!(url.name, "Qwen2.5-0.5B-Q4_K_M");

        let path = plan_for("/tmp/some/tiny.gguf", None).unwrap();
        assert_eq!(path.dest, Path::new("/data/models/tiny.gguf"));
        assert_eq!(path.name, "tiny");

        let named = plan_for("https://example.com/x.bin", Some("qwen")).unwrap();
        assert_eq!(named.dest, Path::new("/data/models/qwen.gguf"));
        assert_eq!(named.name, "qwen");
    }

    #[test]
    fn unusable_names_are_refused() {
        assert!(plan_for("https://example.com", None).is_err());
        assert!(plan_for("https://example.com/", None).is_err());
        assert!(plan_for("https://example.com/.hidden.gguf", None).is_err());
        assert!(plan_for("/tmp/my model.gguf", None).is_err());
        assert!(plan_for("/tmp/x.gguf", Some("../evil")).is_err());
        assert!(plan_for("default", Some("a/b")).is_err());
        assert!(plan_for("https://example.com/", Some("ok")).is_ok());
    }

    #[test]
    fn toml_snippets_are_valid() {
        assert_eq!(toml_key("qwen"), "qwen");
        assert_eq!(toml_key("qwen2.5"), "\"qwen2.5\"");
        let snippet = format!(
            "[local_models]\n{} = {}\n",
            toml_key("qwen2.5"),
            toml_string("/a \"b\"\\c.gguf")
        );
        let value: toml::Table = toml::from_str(&snippet).unwrap();
        assert_eq!(
            value["local_models"]["qwen2.5"].as_str(),
            Some("/a \"b\"\\c.gguf")
        );
    }
}
