//! Which providers exist on this server and how a `provider/name` model string resolves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use crate::anthropic::AnthropicProvider;
use crate::catalog::{self, ModelInfo, Vendor};
use crate::google::GoogleProvider;
use crate::openai::OpenAiProvider;
use crate::{ModelError, ModelProvider};

/// The wire protocol a configured provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI Chat Completions, or any endpoint compatible with it.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (`streamGenerateContent`).
    Google,
}

impl ProviderKind {
    /// The vendor whose model table describes this provider's models.
    pub fn vendor(self) -> Vendor {
        match self {
            ProviderKind::Openai => Vendor::OpenAi,
            ProviderKind::Anthropic => Vendor::Anthropic,
            ProviderKind::Google => Vendor::Google,
        }
    }
}

/// One `[providers.NAME]` table of `paddock.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// The API's base URL: for `openai` and `google` up to and including the API version
    /// (`https://api.openai.com/v1`), for `anthropic` the root (`https://api.anthropic.com`).
    pub base_url: String,
    /// Environment variable holding the API key; `None` sends no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Extra HTTP headers sent on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Overrides of the built-in model facts, by model name (the part after `NAME/`).
    #[serde(default)]
    pub models: BTreeMap<String, ModelOverrides>,
    /// Seconds the provider may send nothing (no headers, no chunk, no keep-alive) before a
    /// call fails with a retryable idle timeout; `None` is [`crate::DEFAULT_IDLE_TIMEOUT`].
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
}

impl ProviderConfig {
    /// A provider of `kind` at `base_url` with no key, headers or model overrides.
    pub fn new(kind: ProviderKind, base_url: impl Into<String>) -> Self {
        Self {
            kind,
            base_url: base_url.into(),
            api_key_env: None,
            headers: BTreeMap::new(),
            models: BTreeMap::new(),
            idle_timeout_secs: None,
        }
    }

    /// The same provider with its API key read from the environment variable `var`.
    pub fn with_api_key_env(mut self, var: impl Into<String>) -> Self {
        self.api_key_env = Some(var.into());
        self
    }

    /// Checks what deserialisation cannot. The error names the offending key relative to the
    /// provider's table (e.g. `models.gpt-4o.input_price`) and says what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.api_key_env.as_deref() == Some("") {
            return Err((
                "api_key_env".to_owned(),
                "must not be empty (leave it out to send no key)".to_owned(),
            ));
        }
        if self.idle_timeout_secs == Some(0) {
            return Err((
                "idle_timeout_secs".to_owned(),
                "must be at least 1".to_owned(),
            ));
        }
        for (model, o) in &self.models {
            if o.context_window == Some(0) {
                return Err((
                    format!("models.{model}.context_window"),
                    "must be at least 1".to_owned(),
                ));
            }
            for (key, price) in [
                ("input_price", o.input_price),
                ("output_price", o.output_price),
            ] {
                if let Some(p) = price
                    && !(p.is_finite() && p >= 0.0)
                {
                    return Err((
                        format!("models.{model}.{key}"),
                        "must be a number of credits ≥ 0".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `[providers.NAME.models.MODEL]`: what the operator says about one model, replacing the
/// built-in table's value for each key given.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOverrides {
    /// Tokens the model can attend to.
    pub context_window: Option<u32>,
    /// Credits per million input tokens.
    pub input_price: Option<f64>,
    /// Credits per million output tokens.
    pub output_price: Option<f64>,
    /// Whether the model takes image input (e.g. a vision model behind an OpenAI-compatible
    /// endpoint the table does not know).
    pub vision: Option<bool>,
    /// Whether the model takes audio input.
    pub audio: Option<bool>,
    /// Whether the model takes video input.
    pub video: Option<bool>,
}

impl ModelOverrides {
    fn apply(&self, info: &mut ModelInfo) {
        if let Some(window) = self.context_window {
            info.context_window = Some(window);
        }
        if let Some(price) = self.input_price {
            info.input_price = Some(price);
        }
        if let Some(price) = self.output_price {
            info.output_price = Some(price);
        }
        if let Some(v) = self.vision {
            info.vision = v;
        }
        if let Some(v) = self.audio {
            info.audio = v;
        }
        if let Some(v) = self.video {
            info.video = v;
        }
    }
}

/// The providers every server has unless `[providers.NAME]` replaces them: each needs only
/// its usual environment variable (Ollama none).
pub fn builtin_providers() -> BTreeMap<String, ProviderConfig> {
    BTreeMap::from([
        (
            "anthropic".to_owned(),
            ProviderConfig::new(ProviderKind::Anthropic, "https://api.anthropic.com")
                .with_api_key_env("ANTHROPIC_API_KEY"),
        ),
        (
            "openai".to_owned(),
            ProviderConfig::new(ProviderKind::Openai, "https://api.openai.com/v1")
                .with_api_key_env("OPENAI_API_KEY"),
        ),
        (
            "google".to_owned(),
            ProviderConfig::new(
                ProviderKind::Google,
                "https://generativelanguage.googleapis.com/v1beta",
            )
            .with_api_key_env("GEMINI_API_KEY"),
        ),
        (
            "openrouter".to_owned(),
            ProviderConfig::new(ProviderKind::Openai, "https://openrouter.ai/api/v1")
                .with_api_key_env("OPENROUTER_API_KEY"),
        ),
        (
            "ollama".to_owned(),
            ProviderConfig::new(ProviderKind::Openai, "http://127.0.0.1:11434/v1"),
        ),
    ])
}

/// A model string that cannot be used on this server; the message names what is missing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct RegistryError(pub String);

enum Entry {
    Remote {
        config: ProviderConfig,
        /// The client, or why there is none (the message names the missing setting).
        provider: Result<Arc<dyn ModelProvider>, String>,
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
    /// Builds the registry. `providers` are the operator's `[providers.*]` tables; each
    /// built-in provider ([`builtin_providers`]) is added unless configured under its name.
    /// `local_models` maps the names usable as `local/<name>` to GGUF files.
    pub fn new(
        providers: BTreeMap<String, ProviderConfig>,
        local_models: BTreeMap<String, PathBuf>,
        local_threads: usize,
    ) -> Result<Self, RegistryError> {
        let mut all = providers;
        for (name, config) in builtin_providers() {
            all.entry(name).or_insert(config);
        }
        let mut entries = BTreeMap::new();
        for (name, config) in all {
            if name == "local" {
                return Err(RegistryError(
                    "provider name `local` is reserved for embedded models".to_owned(),
                ));
            }
            if name.is_empty() || name.contains('/') {
                return Err(RegistryError(format!(
                    "provider name `{name}` must be non-empty and contain no `/`"
                )));
            }
            config.check().map_err(|(key, problem)| {
                RegistryError(format!("`providers.{name}.{key}` {problem}"))
            })?;
            let key = match &config.api_key_env {
                Some(var) => match std::env::var(var) {
                    Ok(key) if !key.is_empty() => Ok(Some(key)),
                    _ => Err(format!(
                        "provider `{name}` needs the environment variable {var} (its API key)"
                    )),
                },
                None => Ok(None),
            };
            // Built even without its key, so a bad URL or header fails start-up.
            let client = build(&config, key.clone().ok().flatten())
                .map_err(|e| RegistryError(format!("provider `{name}`: {e}")))?;
            let provider = key.map(|_| client);
            entries.insert(name, Entry::Remote { config, provider });
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
        let (provider, name) = split(model)?;
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
                provider: Ok(p), ..
            }) => Ok((p.clone(), name.to_owned())),
            Some(Entry::Remote {
                provider: Err(missing),
                ..
            }) => Err(RegistryError(missing.clone())),
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

    /// What is known about `model` (`provider/name`): the built-in table's facts for the
    /// provider's kind, with the operator's `[providers.NAME.models.MODEL]` overrides applied.
    /// Unknown providers and models (and embedded ones) get [`ModelInfo::unknown`].
    pub fn model_info(&self, model: &str) -> ModelInfo {
        let Ok((provider, name)) = split(model) else {
            return ModelInfo::unknown();
        };
        match self.entries.get(provider) {
            Some(Entry::Remote { config, .. }) => {
                let mut info =
                    catalog::lookup(config.kind.vendor(), name).unwrap_or_else(ModelInfo::unknown);
                if let Some(overrides) = config.models.get(name) {
                    overrides.apply(&mut info);
                }
                info
            }
            _ => ModelInfo::unknown(),
        }
    }
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let providers: BTreeMap<&str, bool> = self
            .entries
            .iter()
            .map(|(name, entry)| {
                let usable = match entry {
                    Entry::Remote { provider, .. } => provider.is_ok(),
                    #[cfg(feature = "local")]
                    Entry::Local(_) => true,
                };
                (name.as_str(), usable)
            })
            .collect();
        f.debug_struct("ProviderRegistry")
            .field("providers (usable)", &providers)
            .field("local_models", &self.local_models)
            .finish()
    }
}

/// Splits `provider/name` at the first `/` (model names may contain more).
fn split(model: &str) -> Result<(&str, &str), RegistryError> {
    match model.split_once('/') {
        Some((provider, name)) if !provider.is_empty() && !name.is_empty() => Ok((provider, name)),
        _ => Err(RegistryError(format!(
            "model must look like provider/name, got `{model}`"
        ))),
    }
}

/// Makes the client for `config`.
fn build(
    config: &ProviderConfig,
    key: Option<String>,
) -> Result<Arc<dyn ModelProvider>, ModelError> {
    let idle = config
        .idle_timeout_secs
        .map_or(crate::DEFAULT_IDLE_TIMEOUT, std::time::Duration::from_secs);
    Ok(match config.kind {
        ProviderKind::Openai => Arc::new(
            OpenAiProvider::new(&config.base_url, key, &config.headers)?.with_idle_timeout(idle),
        ),
        ProviderKind::Anthropic => Arc::new(
            AnthropicProvider::new(&config.base_url, key, &config.headers)?.with_idle_timeout(idle),
        ),
        ProviderKind::Google => Arc::new(
            GoogleProvider::new(&config.base_url, key, &config.headers)?.with_idle_timeout(idle),
        ),
    })
}
