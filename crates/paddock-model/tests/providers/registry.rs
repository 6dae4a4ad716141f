#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Provider configuration, the built-in providers, `provider/name` resolution and the model
//! facts with their overrides.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use paddock_model::{
    Item, ModelError, ModelEvent, ModelInfo, ModelOverrides, ModelRequest, ProviderConfig,
    ProviderKind, ProviderRegistry, Usage, builtin_providers,
};
use paddock_test_support::{FakeAnthropic, FakeGemini, FakeOpenAi, Gate, Script};
use serde_json::json;

/// An environment variable no test environment sets.
const UNSET: &str = "PADDOCK_TEST_NO_SUCH_VARIABLE_3F9A";

fn registry(providers: Vec<(&str, ProviderConfig)>) -> Result<ProviderRegistry, String> {
    let providers = providers
        .into_iter()
        .map(|(name, config)| (name.to_owned(), config))
        .collect();
    ProviderRegistry::new(providers, BTreeMap::new(), 1).map_err(|e| e.to_string())
}

#[test]
fn built_in_providers_need_only_their_usual_variable() {
    let builtins = builtin_providers();
    let expect = [
        (
            "anthropic",
            ProviderKind::Anthropic,
            "https://api.anthropic.com",
            Some("ANTHROPIC_API_KEY"),
        ),
        (
            "openai",
            ProviderKind::Openai,
            "https://api.openai.com/v1",
            Some("OPENAI_API_KEY"),
        ),
        (
            "google",
            ProviderKind::Google,
            "https://generativelanguage.googleapis.com/v1beta",
            Some("GEMINI_API_KEY"),
        ),
        (
            "openrouter",
            ProviderKind::Openai,
            "https://openrouter.ai/api/v1",
            Some("OPENROUTER_API_KEY"),
        ),
        (
            "ollama",
            ProviderKind::Openai,
            "http://127.0.0.1:11434/v1",
            None,
        ),
    ];
    assert_eq!(builtins.len(), expect.len());
    let registry = registry(Vec::new()).unwrap();
    for (name, kind, base_url, var) in expect {
        let config = &builtins[name];
        assert_eq!(config.kind, kind, "{name}");
        assert_eq!(config.base_url, base_url, "{name}");
        assert_eq!(config.api_key_env.as_deref(), var, "{name}");
        let model = format!("{name}/some-model");
        match var {
            // Which outcome depends on the environment; either way it is exact.
            Some(var) if std::env::var(var).is_err() => {
                let message = registry.validate(&model).unwrap_err().to_string();
                assert_eq!(
                    message,
                    format!("provider `{name}` needs the environment variable {var} (its API key)")
                );
            }
            _ => registry.validate(&model).unwrap(),
        }
    }
}

#[test]
fn unknown_and_malformed_models_name_the_problem() {
    let registry = registry(Vec::new()).unwrap();
    let message = registry.validate("nosuch/model").unwrap_err().to_string();
    assert!(message.contains("[providers.nosuch]"), "{message}");
    for model in ["gpt-4o", "/x", "openai/", ""] {
        let message = registry.validate(model).unwrap_err().to_string();
        assert!(message.contains("provider/name"), "{model}: {message}");
    }
}

#[test]
fn a_configured_provider_replaces_the_built_in_of_that_name() {
    let registry = registry(vec![(
        "anthropic",
        ProviderConfig::new(ProviderKind::Anthropic, "http://127.0.0.1:9").with_api_key_env(UNSET),
    )])
    .unwrap();
    let message = registry
        .validate("anthropic/claude-x")
        .unwrap_err()
        .to_string();
    assert!(message.contains(UNSET), "{message}");
}

#[test]
fn invalid_configuration_fails_start_up_naming_the_key() {
    let bad_url = registry(vec![(
        "x",
        ProviderConfig::new(ProviderKind::Google, "not a url").with_api_key_env(UNSET),
    )])
    .unwrap_err();
    assert!(
        bad_url.contains("provider `x`") && bad_url.contains("not a url"),
        "{bad_url}"
    );

    let mut priced = ProviderConfig::new(ProviderKind::Openai, "http://h/v1");
    priced.models.insert(
        "m".to_owned(),
        ModelOverrides {
            input_price: Some(-1.0),
            ..ModelOverrides::default()
        },
    );
    let message = registry(vec![("x", priced)]).unwrap_err();
    assert!(
        message.contains("`providers.x.models.m.input_price`"),
        "{message}"
    );

    let mut window = ProviderConfig::new(ProviderKind::Openai, "http://h/v1");
    window.models.insert(
        "m".to_owned(),
        ModelOverrides {
            context_window: Some(0),
            ..ModelOverrides::default()
        },
    );
    let message = registry(vec![("x", window)]).unwrap_err();
    assert!(message.contains("context_window"), "{message}");

    let message = registry(vec![(
        "a/b",
        ProviderConfig::new(ProviderKind::Openai, "http://h/v1"),
    )])
    .unwrap_err();
    assert!(message.contains("a/b"), "{message}");
    let message = registry(vec![(
        "local",
        ProviderConfig::new(ProviderKind::Openai, "http://h/v1"),
    )])
    .unwrap_err();
    assert!(message.contains("reserved"), "{message}");
}

#[test]
fn provider_tables_deserialise_with_kinds_and_model_overrides() {
    let config: ProviderConfig = serde_json::from_value(json!({
        "kind": "anthropic",
        "base_url": "https://proxy.example.com",
        "api_key_env": "PROXY_KEY",
        "headers": {"anthropic-beta": "x"},
        "models": {"claude-sonnet-4-5": {"input_price": 2.5, "context_window": 1000000}},
    }))
    .unwrap();
    assert_eq!(config.kind, ProviderKind::Anthropic);
    assert_eq!(config.models["claude-sonnet-4-5"].input_price, Some(2.5));
    let google: ProviderConfig =
        serde_json::from_value(json!({"kind": "google", "base_url": "http://h"})).unwrap();
    assert_eq!(google.kind, ProviderKind::Google);
    assert!(google.models.is_empty());
    let unknown = serde_json::from_value::<ProviderConfig>(json!({
        "kind": "openai", "base_url": "http://h", "models": {"m": {"price": 1}},
    }))
    .unwrap_err();
    assert!(unknown.to_string().contains("price"), "{unknown}");
    assert!(
        serde_json::from_value::<ProviderConfig>(json!({"kind": "cohere", "base_url": "h"}))
            .is_err()
    );
}

#[test]
fn model_facts_come_from_the_table_with_overrides() {
    let mut anthropic = ProviderConfig::new(ProviderKind::Anthropic, "http://127.0.0.1:9");
    anthropic.models.insert(
        "claude-sonnet-4-5".to_owned(),
        ModelOverrides {
            context_window: Some(1_000_000),
            output_price: Some(20.0),
            ..ModelOverrides::default()
        },
    );
    let mut ollama = ProviderConfig::new(ProviderKind::Openai, "http://127.0.0.1:9/v1");
    ollama.models.insert(
        "llama3.2".to_owned(),
        ModelOverrides {
            context_window: Some(131_072),
            vision: Some(true),
            audio: Some(true),
            ..ModelOverrides::default()
        },
    );
    let registry = registry(vec![("anthropic", anthropic), ("ollama", ollama)]).unwrap();

    let sonnet = registry.model_info("anthropic/claude-sonnet-4-5");
    assert_eq!(sonnet.context_window, Some(1_000_000));
    assert_eq!(sonnet.input_price, Some(3.0), "kept from the table");
    assert_eq!(sonnet.output_price, Some(20.0));
    assert!(sonnet.vision && sonnet.tools && !sonnet.video);
    // Overrides name the model exactly; a dated snapshot still gets the table's facts.
    let dated = registry.model_info("anthropic/claude-sonnet-4-5-20250929");
    assert_eq!(dated.output_price, Some(15.0));

    let llama = registry.model_info("ollama/llama3.2");
    assert_eq!(llama.context_window, Some(131_072));
    assert_eq!(llama.input_price, None, "unpriced models are free");
    assert!(
        llama.vision && llama.audio && !llama.video,
        "media facts overridden"
    );

    let gemini = registry.model_info("google/gemini-2.5-flash");
    assert!(gemini.video && gemini.audio);
    assert_eq!(
        registry.model_info("openai/gpt-4o-mini").input_price,
        Some(0.15)
    );
    assert_eq!(registry.model_info("nosuch/x"), ModelInfo::unknown());
    assert_eq!(
        registry.model_info("local/smollm2-135m"),
        ModelInfo::unknown()
    );

    let cost = sonnet.cost(&Usage {
        input_tokens: 1_000_000,
        output_tokens: 500_000,
        ..Usage::default()
    });
    assert!((cost - 13.0).abs() < 1e-9, "{cost}");
}

fn hello() -> ModelRequest {
    ModelRequest {
        model: "m".to_owned(),
        system: String::new(),
        items: vec![Item::user("hi".to_owned())],
        tools: Vec::new(),
        max_output_tokens: None,
    }
}

/// Each kind resolves to the adapter that speaks its vendor's protocol, with the configured
/// headers (how a key is given when no environment variable is wanted).
#[tokio::test]
async fn each_kind_speaks_its_own_protocol() {
    let openai = FakeOpenAi::start().await;
    let anthropic = FakeAnthropic::start().await;
    let gemini = FakeGemini::start().await;
    let with_header = |kind, url: String, header: &str| {
        let mut config = ProviderConfig::new(kind, url);
        config
            .headers
            .insert(header.to_owned(), "test-key".to_owned());
        config
    };
    let registry = registry(vec![
        (
            "o",
            with_header(ProviderKind::Openai, openai.base_url(), "authorization"),
        ),
        (
            "a",
            with_header(ProviderKind::Anthropic, anthropic.base_url(), "x-api-key"),
        ),
        (
            "g",
            with_header(ProviderKind::Google, gemini.base_url(), "x-goog-api-key"),
        ),
    ])
    .unwrap();
    openai.push(Script::new().text("from openai"));
    anthropic.push(Script::new().text("from anthropic"));
    gemini.push(Script::new().text("from gemini"));
    for (model, expected) in [
        ("o/m", "from openai"),
        ("a/m", "from anthropic"),
        ("g/m", "from gemini"),
    ] {
        let (provider, name) = registry.resolve(model).unwrap();
        assert_eq!(name, "m");
        let mut stream = provider.stream(hello()).await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first, ModelEvent::TextDelta(expected.to_owned()), "{model}");
    }
    assert_eq!(anthropic.request_headers()[0]["x-api-key"], "test-key");
}

#[tokio::test]
async fn a_configured_idle_timeout_reaches_the_provider() {
    let fake = FakeOpenAi::start().await;
    let gate = Gate::new();
    fake.push(Script::new().text("Hel").hold(&gate));
    let config: ProviderConfig = serde_json::from_value(json!({
        "kind": "openai",
        "base_url": fake.base_url(),
        "idle_timeout_secs": 1,
    }))
    .unwrap();
    let slow = registry(vec![("slow", config)]).unwrap();
    let (provider, name) = slow.resolve("slow/m").unwrap();
    let request = ModelRequest {
        model: name,
        system: String::new(),
        items: vec![Item::user("hi")],
        tools: Vec::new(),
        max_output_tokens: None,
    };
    let stream = provider.stream(request).await.unwrap();
    let results: Vec<_> = stream.collect().await;
    assert!(matches!(&results[0], Ok(ModelEvent::TextDelta(t)) if t == "Hel"));
    match &results[1] {
        Err(ModelError::IdleTimeout { idle }) => assert_eq!(*idle, Duration::from_secs(1)),
        other => panic!("expected an idle timeout, got {other:?}"),
    }
    assert_eq!(results.len(), 2);

    let mut zero = ProviderConfig::new(ProviderKind::Openai, "http://h/v1");
    zero.idle_timeout_secs = Some(0);
    let message = registry(vec![("x", zero)]).unwrap_err();
    assert!(
        message.contains("`providers.x.idle_timeout_secs` must be at least 1"),
        "{message}"
    );
}
