//! `paddock keys create`: make an API key directly in the database, without a running server
//! (the server may be running too: SQLite and PostgreSQL both allow it). The database is the
//! one `paddock serve` would open: PostgreSQL when a `database.url` is configured, else SQLite
//! in the data directory.
//!
//! The key text goes to stdout alone on one line, so scripts can capture it; everything else
//! goes to stderr.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use paddock_protocol::scope;
use paddock_server::{ServerSettings, StartError, keys, open_store};
use paddock_store::{AccountRecord, Store, StoreError};

use crate::config::{ConfigArgs, DatabaseArgs, Layer};

/// `paddock keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it (once) on stdout.
    Create(CreateArgs),
}

/// Options of `paddock keys create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Comma-separated scopes, from deployments:read, deployments:write, secrets:write, admin
    #[arg(long, required = true, value_delimiter = ',', value_name = "SCOPE,...")]
    pub scopes: Vec<String>,
    /// A name to recognise the key by (1 to 100 characters)
    #[arg(long, default_value = "cli")]
    pub name: String,
    /// The account the key belongs to, by name or id
    #[arg(long, default_value = "default", value_name = "NAME_OR_ID")]
    pub account: String,
}

/// Runs a `keys` subcommand.
pub async fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create(args) => create(args).await.map(|()| ExitCode::SUCCESS),
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let scopes = parse_scopes(&args.scopes)?;
    let name = args.name.trim();
    let chars = name.chars().count();
    if !(1..=100).contains(&chars) {
        bail!("--name must be 1 to 100 characters, got {chars}");
    }

    let sources = args.config.sources(Layer {
        database_url: args.database.database_url.clone(),
        ..Layer::default()
    })?;
    let mut settings = ServerSettings::new(sources.data_dir()?);
    settings.database = sources.database()?;
    let store = open_database(&settings).await?;
    let account = find_account(store.as_ref(), &args.account).await?;

    let key = keys::make_key(&account.id, name, scopes, None);
    store
        .create_key(&key.record)
        .await
        .context("could not store the key")?;

    println!("{}", key.text);
    eprintln!(
        "Created key {} ({}…) named `{}` in account `{}` ({}) with scopes {}. \
         The key is shown only this once.",
        key.record.id,
        key.record.prefix,
        key.record.name,
        account.name,
        account.id,
        key.record.scopes.join(", ")
    );
    Ok(())
}

/// Opens the database `paddock serve` would use with `settings`. A missing SQLite file is an
/// error rather than created: an empty database has no account to put the key in.
async fn open_database(settings: &ServerSettings) -> anyhow::Result<Arc<dyn Store>> {
    let location = match &settings.database.url {
        // Never the URL itself: it may hold a password.
        Some(_) => "the PostgreSQL database of database.url".to_owned(),
        None => {
            let path = settings.database_path();
            if !path.is_file() {
                bail!(
                    "no database at {}; run `paddock serve` once with the same data directory to \
                     create it (or pass --data-dir / PADDOCK_DATA_DIR, or --database-url / \
                     PADDOCK_DATABASE_URL for PostgreSQL)",
                    path.display()
                );
            }
            format!("the database {}", path.display())
        }
    };
    open_store(settings).await.map_err(|e| match e {
        // Its message already begins "could not open the database": give the cause only.
        StartError::Store(e) => anyhow::Error::new(e).context(format!("could not open {location}")),
        e => anyhow::Error::new(e),
    })
}

/// Checks the requested scopes against the known ones, dropping blanks and duplicates.
fn parse_scopes(requested: &[String]) -> anyhow::Result<Vec<String>> {
    let mut scopes: Vec<String> = Vec::new();
    for s in requested.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if !scope::ALL.contains(&s) {
            bail!(
                "unknown scope `{s}`; the scopes are {}",
                scope::ALL.join(", ")
            );
        }
        if !scopes.iter().any(|have| have == s) {
            scopes.push(s.to_owned());
        }
    }
    if scopes.is_empty() {
        bail!("--scopes needs at least one of {}", scope::ALL.join(", "));
    }
    Ok(scopes)
}

/// The account named `name_or_id`, tried as an id first when it looks like one.
async fn find_account(store: &dyn Store, name_or_id: &str) -> anyhow::Result<AccountRecord> {
    let wanted = name_or_id.trim();
    if wanted.starts_with(paddock_protocol::ids::prefix::ACCOUNT) {
        match store.get_account(wanted).await {
            Ok(account) => return Ok(account),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e).context("could not look up the account"),
        }
    }
    match store.get_account_by_name(wanted).await {
        Ok(account) => Ok(account),
        Err(StoreError::NotFound(_)) => bail!("no account is named `{wanted}` or has that id"),
        Err(e) => Err(e).context("could not look up the account"),
    }
}

#[cfg(test)]
mod tests {
    use paddock_store::SqliteStore;

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn scopes_are_validated_and_deduplicated() {
        assert_eq!(
            parse_scopes(&strings(&[
                "deployments:read",
                " deployments:write",
                "",
                "deployments:read"
            ]))
            .unwrap(),
            ["deployments:read", "deployments:write"]
        );
        let err = parse_scopes(&strings(&["deployments:read", "deployment:write"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("deployment:write") && msg.contains("secrets:write"),
            "{msg}"
        );
        assert!(parse_scopes(&strings(&["", " "])).is_err());
    }

    #[tokio::test]
    async fn accounts_are_found_by_name_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("paddock.db"))
            .await
            .unwrap();
        let account = store
            .bootstrap_default_account("acct_test", 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            find_account(&store, "default").await.unwrap().id,
            account.id
        );
        assert_eq!(
            find_account(&store, &account.id).await.unwrap().name,
            "default"
        );
        let err = find_account(&store, "nobody").await.unwrap_err();
        assert!(err.to_string().contains("nobody"), "{err}");

        let key = keys::make_key(&account.id, "k", vec![scope::ADMIN.to_owned()], None);
        store.create_key(&key.record).await.unwrap();
        let stored = store
            .key_by_hash(&keys::hash_key(&key.text))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.account_id, account.id);
    }
}
