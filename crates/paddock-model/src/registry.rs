//! Which providers exist on this server and how a `provider/name` model string resolves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use crate::ModelProvider;
use crate::openai::OpenAiProvider;

/// The wire protocol a configured provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI Chat Completions, or any endpoint compatible with it.
    Openai,
}

/// One `[providers.NAME]` table of `paddock.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Base URL up to and including the API version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Environment variable holding the API key; `None` sends no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Extra HTTP headers sent on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A model string that cannot be used on this server; the message names what is missing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct RegistryError(pub String);

enum Entry {
    Remote {
        config: ProviderConfig,
        provider: Option<Arc<dyn ModelProvider>>,
        missing: Option<String>,
    },
    #[cfg(feature = "local")]
    Local(Arc<crate::local::LocalProvider>),
}

/// The providers this server knows, built once at start-up from configuration and the
/// environment. Owned by the server state and shared by every run.
pub struct ProviderRegistry {
    entries: BTreeMap<String, Entry>,
    local_models: BTreeMap<String, PathBuf>,
}

impl ProviderRegistry {
    /// Builds the registry. `providers` are the operator's `[providers.*]` tables; the built-in
    /// `openai` provider is added unless configured explicitly. `local_models` maps the names
    /// usable as `local/<name>` to GGUF files.
    pub fn new(
        providers: BTreeMap<String, ProviderConfig>,
        local_models: BTreeMap<String, PathBuf>,
        local_threads: usize,
    ) -> Result<Self, RegistryError> {
        let mut all = providers;
        all.entry("openai".to_owned()).or_insert(ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key_env: Some("OPENAI_API_KEY".to_owned()),
            headers: BTreeMap::new(),
        });
        let mut entries = BTreeMap::new();
        for (name, config) in all {
            if name == "local" {
                return Err(RegistryError(
                    "provider name `local` is reserved for embedded models".to_owned(),
                ));
            }
            let api_key = match &config.api_key_env {
                Some(var) => match std::env::var(var) {
                    Ok(v) if !v.is_empty() => Some(v),
                    _ => {
                        entries.insert(
                            name.clone(),
                            Entry::Remote {
                                missing: Some(format!(
                                    "provider `{name}` needs the environment variable {var}"
                                )),
                                config,
                                provider: None,
                            },
                        );
                        continue;
                    }
                },
                None => None,
            };
            let provider: Arc<dyn ModelProvider> = Arc::new(
                OpenAiProvider::new(&config.base_url, api_key, &config.headers)
                    .map_err(|e| RegistryError(format!("provider `{name}`: {e}")))?,
            );
            entries.insert(
                name,
                Entry::Remote {
                    config,
                    provider: Some(provider),
                    missing: None,
                },
            );
        }
        #[cfg(feature = "local")]
        entries.insert(
            "local".to_owned(),
            Entry::Local(Arc::new(crate::local::LocalProvider::new(
                local_models.clone(),
                local_threads,
            ))),
        );
        #[cfg(not(feature = "local"))]
        let _ = local_threads;
        Ok(Self {
            entries,
            local_models,
        })
    }

    /// Checks that `model` (`provider/name`) can be used here, without contacting anyone.
    pub fn validate(&self, model: &str) -> Result<(), RegistryError> {
        self.resolve(model).map(|_| ())
    }

    /// Resolves `provider/name` to the provider and the model's name within it.
    pub fn resolve(&self, model: &str) -> Result<(Arc<dyn ModelProvider>, String), RegistryError> {
        let Some((provider, name)) = model.split_once('/') else {
            return Err(RegistryError(format!(
                "model must look like provider/name, got `{model}`"
            )));
        };
        if provider.is_empty() || name.is_empty() {
            return Err(RegistryError(format!(
                "model must look like provider/name, got `{model}`"
            )));
        }
        if provider == "local" && !self.local_models.contains_key(name) {
            let known: Vec<&str> = self.local_models.keys().map(String::as_str).collect();
            return Err(RegistryError(format!(
                "no local model `{name}` is configured (configured: {}); add it under [local_models] in paddock.toml",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        match self.entries.get(provider) {
            Some(Entry::Remote {
                provider: Some(p), ..
            }) => Ok((p.clone(), name.to_owned())),
            Some(Entry::Remote {
                missing: Some(m), ..
            }) => Err(RegistryError(m.clone())),
            Some(Entry::Remote { config, .. }) => Err(RegistryError(format!(
                "provider `{provider}` at {} is not usable",
                config.base_url
            ))),
            #[cfg(feature = "local")]
            Some(Entry::Local(p)) => Ok((p.clone() as Arc<dyn ModelProvider>, name.to_owned())),
            None if provider == "local" => Err(RegistryError(
                "this build of paddock has no embedded model runtime (cargo feature `local`)"
                    .to_owned(),
            )),
            None => Err(RegistryError(format!(
                "unknown model provider `{provider}`; configure it under [providers.{provider}] in paddock.toml"
            ))),
        }
    }
}
