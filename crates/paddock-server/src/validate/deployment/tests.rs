use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::super::test_util::assert_invalid;
use super::*;
use crate::settings::ServerSettings;
use paddock_model::ProviderRegistry;

struct Fixture {
    settings: ServerSettings,
    models: ProviderRegistry,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = ServerSettings::new(dir.path().to_path_buf());
        settings.limits.content_chars = 50;
        let models = ProviderRegistry::new(
            BTreeMap::new(),
            BTreeMap::from([(
                "smollm2-135m".to_owned(),
                PathBuf::from("/nonexistent.gguf"),
            )]),
            1,
        )
        .unwrap();
        Self {
            settings,
            models,
            _dir: dir,
        }
    }

    fn with_docker() -> Self {
        let mut f = Self::new();
        f.settings.sandbox_backends = vec!["bubblewrap".into(), "docker".into()];
        f
    }

    fn v(&self) -> Validator<'_> {
        Validator {
            secrets: None,
            settings: &self.settings,
            models: &self.models,
        }
    }

    fn create(&self, body: Value) -> Result<NewDeployment, ApiError> {
        self.v().deployment_create(&body)
    }

    /// Creates from `minimal()` with `field` set to `value`.
    fn create_with(&self, field: &str, value: Value) -> Result<NewDeployment, ApiError> {
        let mut body = minimal();
        body[field] = value;
        self.create(body)
    }

    fn patch(
        &self,
        body: Value,
        current: &DeploymentRecord,
    ) -> Result<(String, DeploymentConfig), ApiError> {
        self.v().deployment_patch(&body, current)
    }
}

fn minimal() -> Value {
    json!({"customer_id": "cus_123", "name": "Acme Creative Agent", "system_prompt": "You help Acme."})
}

fn record(f: &Fixture, body: Value) -> DeploymentRecord {
    let d = f.create(body).unwrap();
    DeploymentRecord {
        id: "dep_1".into(),
        account_id: "acct_1".into(),
        customer_id: d.customer_id,
        name: d.name,
        runtime: d.runtime,
        status: "ready".into(),
        error: None,
        default_thread_id: "thr_default_1".into(),
        config: d.config,
        created_at: 0,
        updated_at: 0,
    }
}

/// A record whose config has a secret and a header using it, as a future secrets store would
/// allow (create cannot produce one yet: every reference is a 422).
fn record_with_secret(f: &Fixture) -> DeploymentRecord {
    let mut r = record(
        f,
        json!({"customer_id": "cus_123", "name": "n", "system_prompt": "p",
               "mcp_servers": [{"name": "acme", "url": "https://mcp.acme.example/mcp",
                                "headers": {"X-Static": "v"}}]}),
    );
    r.config.secrets.insert("TOKEN".into(), "sec_abc".into());
    r.config.mcp_servers[0]
        .headers
        .insert("Authorization".into(), "Bearer ${TOKEN}".into());
    r
}

fn assert_secret_ref<T: std::fmt::Debug>(r: Result<T, ApiError>, param: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidSecretRef, "{e:?}");
    assert_eq!(e.param.as_deref(), Some(param));
    assert!(
        e.message.contains("not a secret of this account"),
        "{}",
        e.message
    );
}

// ---------------------------------------------------------------- create: top-level fields

#[test]
fn minimal_create_fills_every_default() {
    let f = Fixture::new();
    let d = f.create(minimal()).unwrap();
    assert_eq!(d.customer_id, "cus_123");
    assert_eq!(d.name, "Acme Creative Agent");
    assert_eq!(d.runtime, "paddock");
    assert_eq!(
        d.config,
        DeploymentConfig {
            model: "local/smollm2-135m".into(),
            system_prompt: "You help Acme.".into(),
            sandbox: Sandbox {
                enabled: true,
                kind: "bubblewrap".into(),
                persistent_filesystem: true,
                image: None,
                cpus: 1.0,
                memory_mb: 2048,
                network: "none".into(),
            },
            features: Features {
                memory: true,
                dreaming: false,
                automations: true,
                steering: true,
                filesystem_webhooks: false,
            },
            mcp_servers: vec![],
            skills: vec![],
            secrets: BTreeMap::new(),
            tool_policies: BTreeMap::new(),
            disabled_tools: Default::default(),
        }
    );
}

#[test]
fn nulls_mean_not_given_and_unknown_fields_are_ignored() {
    let f = Fixture::new();
    let mut body = minimal();
    for k in [
        "model",
        "runtime",
        "sandbox",
        "features",
        "mcp_servers",
        "skills",
        "secrets",
        "tool_policies",
    ] {
        body[k] = Value::Null;
    }
    body["whatever"] = json!({"x": 1});
    assert_eq!(f.create(body).unwrap(), f.create(minimal()).unwrap());
}

#[test]
fn customer_id_rules() {
    let f = Fixture::new();
    let mut body = minimal();
    body.as_object_mut().unwrap().remove("customer_id");
    assert_invalid(f.create(body), "customer_id");
    assert_invalid(f.create_with("customer_id", Value::Null), "customer_id");
    assert_invalid(f.create_with("customer_id", json!(123)), "customer_id");
    assert_invalid(f.create_with("customer_id", json!("")), "customer_id");
    assert_invalid(
        f.create_with("customer_id", json!("x".repeat(129))),
        "customer_id",
    );
    assert_invalid(f.create_with("customer_id", json!(" cus")), "customer_id");
    assert_invalid(f.create_with("customer_id", json!("cus ")), "customer_id");
    assert_invalid(f.create_with("customer_id", json!(" ")), "customer_id");
    assert_invalid(f.create_with("customer_id", json!("cus\t1")), "customer_id");
    assert_invalid(
        f.create_with("customer_id", json!("cus\u{7f}")),
        "customer_id",
    );
    assert_invalid(f.create_with("customer_id", json!("cüs")), "customer_id");
    for ok in [
        "c",
        "cus 123",
        "a~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./",
        "x".repeat(128).as_str(),
    ] {
        assert_eq!(
            f.create_with("customer_id", json!(ok)).unwrap().customer_id,
            ok
        );
    }
}

#[test]
fn name_and_system_prompt_rules() {
    let f = Fixture::new();
    for field in ["name", "system_prompt"] {
        let mut body = minimal();
        body.as_object_mut().unwrap().remove(field);
        let m = assert_invalid(f.create(body), field);
        assert!(m.contains("required"), "{m}");
        assert_invalid(f.create_with(field, Value::Null), field);
        assert_invalid(f.create_with(field, json!("")), field);
        assert_invalid(f.create_with(field, json!(["x"])), field);
    }
    assert!(f.create_with("name", json!("é".repeat(200))).is_ok());
    assert_invalid(f.create_with("name", json!("x".repeat(201))), "name");
    // system_prompt is bounded by limits.content_chars (50 in these tests).
    assert!(
        f.create_with("system_prompt", json!("é".repeat(50)))
            .is_ok()
    );
    let m = assert_invalid(
        f.create_with("system_prompt", json!("x".repeat(51))),
        "system_prompt",
    );
    assert!(m.contains("50"), "{m}");
}

#[test]
fn model_rules() {
    let f = Fixture::new();
    assert_eq!(
        f.create_with("model", json!("local/smollm2-135m"))
            .unwrap()
            .config
            .model,
        "local/smollm2-135m"
    );
    assert_invalid(f.create_with("model", json!(5)), "model");
    let m = assert_invalid(f.create_with("model", json!("gpt-4o")), "model");
    assert!(m.contains("provider/name"), "{m}");
    assert_invalid(f.create_with("model", json!("")), "model");
    assert_invalid(f.create_with("model", json!("local/")), "model");
    let m = assert_invalid(f.create_with("model", json!("nosuch/model")), "model");
    assert!(m.contains("providers.nosuch"), "{m}");
    let m = assert_invalid(f.create_with("model", json!("local/other-model")), "model");
    assert!(
        m.contains("other-model") && m.contains("smollm2-135m"),
        "{m}"
    );
}

#[test]
fn runtime_rules() {
    let f = Fixture::new();
    assert_eq!(
        f.create_with("runtime", json!("paddock")).unwrap().runtime,
        "paddock"
    );
    assert_eq!(
        f.create_with("runtime", json!("hermes")).unwrap().runtime,
        "hermes"
    );
    assert_invalid(f.create_with("runtime", json!("Paddock")), "runtime");
    assert_invalid(f.create_with("runtime", json!("langchain")), "runtime");
    assert_invalid(f.create_with("runtime", json!(true)), "runtime");
}

#[test]
fn first_problem_in_field_order_wins() {
    let f = Fixture::new();
    let body = json!({"name": "", "system_prompt": "", "runtime": "x", "sandbox": 1});
    assert_invalid(f.create(body), "customer_id");
    let body = json!({"customer_id": "c", "system_prompt": "", "runtime": "x", "sandbox": 1});
    assert_invalid(f.create(body), "name");
    let body = json!({"customer_id": "c", "name": "n", "system_prompt": "p", "runtime": "x",
                      "sandbox": 1, "features": 1, "mcp_servers": 1});
    assert_invalid(f.create(body), "runtime");
    let body = json!({"customer_id": "c", "name": "n", "system_prompt": "p",
                      "sandbox": 1, "features": 1, "mcp_servers": 1, "secrets": 1});
    assert_invalid(f.create(body), "sandbox");
    let body = json!({"customer_id": "c", "name": "n", "system_prompt": "p",
                      "features": {"nope": true}, "mcp_servers": 1, "secrets": 1});
    assert_invalid(f.create(body), "features.nope");
    let body = json!({"customer_id": "c", "name": "n", "system_prompt": "p",
                      "mcp_servers": 1, "skills": [{}], "secrets": 1});
    assert_invalid(f.create(body), "mcp_servers");
    let body = json!({"customer_id": "c", "name": "n", "system_prompt": "p",
                      "skills": [{}], "secrets": 1, "tool_policies": 1});
    assert_invalid(f.create(body), "skills[0].source");
    let body = json!({"customer_id": "c", "name": "n", "system_prompt": "p",
                      "secrets": 1, "tool_policies": 1});
    assert_invalid(f.create(body), "secrets");
}

#[test]
fn non_object_body_is_a_400() {
    let f = Fixture::new();
    for body in [json!([]), json!("x"), Value::Null] {
        let e = f.create(body).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationError);
    }
}

// ---------------------------------------------------------------- sandbox

#[test]
fn sandbox_sub_fields_take_defaults() {
    let f = Fixture::new();
    let d = f.create_with("sandbox", json!({"cpus": 2})).unwrap();
    assert_eq!(d.config.sandbox.cpus, 2.0);
    assert_eq!(d.config.sandbox.memory_mb, 2048);
    assert_eq!(d.config.sandbox.kind, "bubblewrap");
    let d = f.create_with("sandbox", json!({})).unwrap();
    assert_eq!(d.config.sandbox, f.v().default_sandbox());
    let s = f
        .create_with(
            "sandbox",
            json!({"enabled": false, "type": "bubblewrap", "persistent_filesystem": false,
                   "image": null, "network": "internet", "cpus": 0.25, "memory_mb": 256}),
        )
        .unwrap()
        .config
        .sandbox;
    assert_eq!(
        s,
        Sandbox {
            enabled: false,
            kind: "bubblewrap".into(),
            persistent_filesystem: false,
            image: None,
            cpus: 0.25,
            memory_mb: 256,
            network: "internet".into(),
        }
    );
    let s = f
        .create_with("sandbox", json!({"cpus": 4, "memory_mb": 16384.0}))
        .unwrap()
        .config
        .sandbox;
    assert_eq!((s.cpus, s.memory_mb), (4.0, 16384));
}

#[test]
fn sandbox_rules() {
    let f = Fixture::new();
    let sb = |v: Value| f.create_with("sandbox", v);
    assert_invalid(sb(json!(true)), "sandbox");
    assert_invalid(sb(json!([])), "sandbox");
    assert_invalid(sb(json!({"enabled": "yes"})), "sandbox.enabled");
    assert_invalid(sb(json!({"enabled": 1})), "sandbox.enabled");
    assert_invalid(sb(json!({"type": 1})), "sandbox.type");
    let m = assert_invalid(sb(json!({"type": "docker"})), "sandbox.type");
    assert!(
        m.contains("bubblewrap"),
        "the message names the enabled backends: {m}"
    );
    assert_invalid(sb(json!({"type": "firecracker"})), "sandbox.type");
    assert_invalid(
        sb(json!({"persistent_filesystem": "no"})),
        "sandbox.persistent_filesystem",
    );
    let m = assert_invalid(sb(json!({"image": "ubuntu:24.04"})), "sandbox.image");
    assert!(m.contains("docker"), "{m}");
    assert_invalid(sb(json!({"image": 3})), "sandbox.image");
    assert_invalid(sb(json!({"network": "host"})), "sandbox.network");
    assert_invalid(sb(json!({"network": false})), "sandbox.network");
    assert_invalid(sb(json!({"cpus": "2"})), "sandbox.cpus");
    assert_invalid(sb(json!({"cpus": 0.2})), "sandbox.cpus");
    assert_invalid(sb(json!({"cpus": 0})), "sandbox.cpus");
    assert_invalid(sb(json!({"cpus": -1})), "sandbox.cpus");
    let m = assert_invalid(sb(json!({"cpus": 4.5})), "sandbox.cpus");
    assert!(m.contains('4'), "{m}");
    assert_invalid(sb(json!({"cpus": 1e300})), "sandbox.cpus");
    assert_invalid(sb(json!({"memory_mb": 255})), "sandbox.memory_mb");
    assert_invalid(sb(json!({"memory_mb": 16385})), "sandbox.memory_mb");
    assert_invalid(sb(json!({"memory_mb": 512.5})), "sandbox.memory_mb");
    assert_invalid(sb(json!({"memory_mb": -512})), "sandbox.memory_mb");
    assert_invalid(sb(json!({"memory_mb": u64::MAX})), "sandbox.memory_mb");
    assert_invalid(sb(json!({"memory_mb": 1e300})), "sandbox.memory_mb");
    assert_invalid(sb(json!({"memory_mb": "1024"})), "sandbox.memory_mb");
    // Field order within the object: type before cpus.
    assert_invalid(sb(json!({"cpus": 100, "type": "nope"})), "sandbox.type");
}

#[test]
fn sandbox_limits_come_from_settings() {
    let mut f = Fixture::new();
    f.settings.sandbox_max_cpus = 8.0;
    f.settings.sandbox_max_memory_mb = 1024;
    assert!(f.create_with("sandbox", json!({"cpus": 8})).is_ok());
    assert_invalid(
        f.create_with("sandbox", json!({"cpus": 8.01})),
        "sandbox.cpus",
    );
    assert!(f.create_with("sandbox", json!({"memory_mb": 1024})).is_ok());
    assert_invalid(
        f.create_with("sandbox", json!({"memory_mb": 2048})),
        "sandbox.memory_mb",
    );
    // The default stays within the maximum.
    assert_eq!(f.create(minimal()).unwrap().config.sandbox.memory_mb, 1024);
}

#[test]
fn docker_sandbox_and_images() {
    let f = Fixture::with_docker();
    let s = f
        .create_with(
            "sandbox",
            json!({"type": "docker", "image": "ghcr.io/acme/agent:1.2"}),
        )
        .unwrap()
        .config
        .sandbox;
    assert_eq!(s.kind, "docker");
    assert_eq!(s.image.as_deref(), Some("ghcr.io/acme/agent:1.2"));
    let s = f
        .create_with("sandbox", json!({"type": "docker"}))
        .unwrap()
        .config
        .sandbox;
    assert_eq!(s.image, None);
    assert_invalid(
        f.create_with("sandbox", json!({"type": "docker", "image": ""})),
        "sandbox.image",
    );
    assert_invalid(
        f.create_with("sandbox", json!({"type": "docker", "image": "a b"})),
        "sandbox.image",
    );
    assert_invalid(
        f.create_with("sandbox", json!({"type": "bubblewrap", "image": "x"})),
        "sandbox.image",
    );
}

// ---------------------------------------------------------------- features

#[test]
fn feature_rules() {
    let f = Fixture::new();
    let feats = f
        .create_with(
            "features",
            json!({"dreaming": true, "memory": false, "steering": null}),
        )
        .unwrap()
        .config
        .features;
    assert_eq!(
        feats,
        Features {
            memory: false,
            dreaming: true,
            automations: true,
            steering: true,
            filesystem_webhooks: false
        }
    );
    let feats = f
        .create_with(
            "features",
            json!({"memory": false, "dreaming": true, "automations": false, "steering": false,
                   "filesystem_webhooks": true}),
        )
        .unwrap()
        .config
        .features;
    assert_eq!(
        feats,
        Features {
            memory: false,
            dreaming: true,
            automations: false,
            steering: false,
            filesystem_webhooks: true
        }
    );
    assert_invalid(f.create_with("features", json!([])), "features");
    assert_invalid(f.create_with("features", json!("memory")), "features");
    let m = assert_invalid(
        f.create_with("features", json!({"telepathy": true})),
        "features.telepathy",
    );
    assert!(m.contains("memory"), "{m}");
    assert_invalid(
        f.create_with("features", json!({"Memory": true})),
        "features.Memory",
    );
    assert_invalid(
        f.create_with("features", json!({"telepathy": null})),
        "features.telepathy",
    );
    assert_invalid(
        f.create_with("features", json!({"memory": "true"})),
        "features.memory",
    );
    assert_invalid(
        f.create_with("features", json!({"dreaming": 1})),
        "features.dreaming",
    );
    assert_invalid(
        f.create_with("features", json!({"filesystem_webhooks": {}})),
        "features.filesystem_webhooks",
    );
}

// ---------------------------------------------------------------- mcp_servers

fn server(name: &str) -> Value {
    json!({"name": name, "url": "https://mcp.acme.example/mcp"})
}

#[test]
fn mcp_server_entries() {
    let f = Fixture::new();
    let d = f
        .create_with(
            "mcp_servers",
            json!([
                {"name": "acme-media", "url": "https://mcp.acme.example/mcp",
                 "tools": ["search_models", "generate_image"],
                 "headers": {"X-Api-Version": "2", "X-Price": "$5 or $$6 or $"}},
                {"name": "Other_1", "url": "http://10.0.0.5:9000/mcp", "tools": null, "headers": null},
            ]),
        )
        .unwrap();
    let s = &d.config.mcp_servers;
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].name, "acme-media");
    assert_eq!(s[0].url, "https://mcp.acme.example/mcp");
    assert_eq!(
        s[0].tools.as_deref(),
        Some(&["search_models".to_owned(), "generate_image".to_owned()][..])
    );
    assert_eq!(s[0].headers["X-Price"], "$5 or $$6 or $");
    assert_eq!(s[1].tools, None);
    assert!(s[1].headers.is_empty());

    assert!(f.create_with("mcp_servers", json!([])).is_ok());
    let twenty: Vec<Value> = (0..20).map(|i| server(&format!("s{i}"))).collect();
    assert!(f.create_with("mcp_servers", json!(twenty)).is_ok());
    let many: Vec<Value> = (0..21).map(|i| server(&format!("s{i}"))).collect();
    assert_invalid(f.create_with("mcp_servers", json!(many)), "mcp_servers");
    assert_invalid(
        f.create_with("mcp_servers", json!({"name": "x"})),
        "mcp_servers",
    );
    assert_invalid(
        f.create_with("mcp_servers", json!([server("a"), "b"])),
        "mcp_servers[1]",
    );
}

#[test]
fn mcp_server_names() {
    let f = Fixture::new();
    let name = |n: Value| {
        f.create_with(
            "mcp_servers",
            json!([server("first"), {"name": n, "url": "https://x.example"}]),
        )
    };
    for ok in [
        "a",
        "A-b_c-9",
        "-dash-",
        "a_b",
        "x".repeat(32).as_str(),
        "Builtin",
    ] {
        assert!(name(json!(ok)).is_ok(), "{ok}");
    }
    for bad in [
        json!(""),
        json!("x".repeat(33)),
        json!("a__b"),
        json!("_a"),
        json!("a_"),
        json!("builtin"),
        json!("a.b"),
        json!("a b"),
        json!("é"),
        json!("first"),
        json!(3),
        Value::Null,
    ] {
        assert_invalid(name(bad.clone()), "mcp_servers[1].name");
    }
    let m = assert_invalid(name(json!("first")), "mcp_servers[1].name");
    assert!(m.contains("mcp_servers[0]"), "{m}");
    assert_invalid(
        f.create_with("mcp_servers", json!([{"url": "https://x.example"}])),
        "mcp_servers[0].name",
    );
}

#[test]
fn mcp_server_urls_and_tools() {
    let f = Fixture::new();
    let entry = |e: Value| f.create_with("mcp_servers", json!([server("ok"), e]));
    assert_invalid(entry(json!({"name": "b"})), "mcp_servers[1].url");
    assert_invalid(
        entry(json!({"name": "b", "url": null})),
        "mcp_servers[1].url",
    );
    assert_invalid(entry(json!({"name": "b", "url": 1})), "mcp_servers[1].url");
    assert_invalid(
        entry(json!({"name": "b", "url": "ws://x.example"})),
        "mcp_servers[1].url",
    );
    assert_invalid(
        entry(json!({"name": "b", "url": "x.example/mcp"})),
        "mcp_servers[1].url",
    );
    let long = format!("https://x.example/{}", "a".repeat(2040));
    assert_invalid(
        entry(json!({"name": "b", "url": long})),
        "mcp_servers[1].url",
    );

    let u = "https://x.example";
    assert_invalid(
        entry(json!({"name": "b", "url": u, "tools": "all"})),
        "mcp_servers[1].tools",
    );
    assert_invalid(
        entry(json!({"name": "b", "url": u, "tools": [1]})),
        "mcp_servers[1].tools[0]",
    );
    assert_invalid(
        entry(json!({"name": "b", "url": u, "tools": ["a", ""]})),
        "mcp_servers[1].tools[1]",
    );
    let tools: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
    assert!(entry(json!({"name": "b", "url": u, "tools": tools})).is_ok());
    let tools: Vec<String> = (0..201).map(|i| format!("t{i}")).collect();
    assert_invalid(
        entry(json!({"name": "b", "url": u, "tools": tools})),
        "mcp_servers[1].tools",
    );
    assert!(entry(json!({"name": "b", "url": u, "tools": []})).is_ok());
}

#[test]
fn mcp_headers() {
    let f = Fixture::new();
    let headers = |h: Value| {
        f.create_with(
            "mcp_servers",
            json!([{"name": "a", "url": "https://x.example", "headers": h}]),
        )
    };
    assert!(headers(json!({"X-Tenant": "acme", "Authorization": "Bearer abc"})).is_ok());
    assert_invalid(headers(json!(["X: y"])), "mcp_servers[0].headers");
    let twenty: serde_json::Map<String, Value> =
        (0..20).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    assert!(headers(Value::Object(twenty)).is_ok());
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    assert_invalid(headers(Value::Object(many)), "mcp_servers[0].headers");

    for forbidden in [
        "Host",
        "content-length",
        "Content-Type",
        "ACCEPT",
        "Mcp-Session-Id",
        "x-customer-id",
        "X-Deployment-Id",
    ] {
        assert_invalid(
            headers(json!({forbidden: "x"})),
            &format!("mcp_servers[0].headers.{forbidden}"),
        );
    }
    assert!(headers(json!({"Accept-Language": "en"})).is_ok());
    for bad_name in ["", "X Y", "X:Y", "Ä", "X\nY", "(x)"] {
        assert_invalid(
            headers(json!({bad_name: "v"})),
            &format!("mcp_servers[0].headers.{bad_name}"),
        );
    }
    let e = headers(json!({"X-Dup": "1", "x-dup": "2"})).unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationError);
    assert!(
        e.param
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("mcp_servers[0].headers.x-dup"))
    );

    assert_invalid(headers(json!({"X-N": 5})), "mcp_servers[0].headers.X-N");
    assert_invalid(headers(json!({"X-N": null})), "mcp_servers[0].headers.X-N");
    assert!(headers(json!({"X-L": "é".repeat(4096)})).is_ok());
    assert_invalid(
        headers(json!({"X-L": "x".repeat(4097)})),
        "mcp_servers[0].headers.X-L",
    );
    assert_invalid(
        headers(json!({"X-C": "a\r\nEvil: 1"})),
        "mcp_servers[0].headers.X-C",
    );
    assert_invalid(
        headers(json!({"X-C": "a\u{0}"})),
        "mcp_servers[0].headers.X-C",
    );
    assert!(headers(json!({"X-T": "a\tb"})).is_ok());
}

// ---------------------------------------------------------------- header templates

#[test]
fn template_scanner() {
    assert_eq!(template_refs("plain"), Ok(vec![]));
    assert_eq!(template_refs(""), Ok(vec![]));
    assert_eq!(template_refs("Bearer ${TOKEN}"), Ok(vec!["TOKEN"]));
    assert_eq!(template_refs("${A}${B}-${A}"), Ok(vec!["A", "B", "A"]));
    assert_eq!(template_refs("$$"), Ok(vec![]));
    assert_eq!(template_refs("$${NOT}"), Ok(vec![]));
    assert_eq!(template_refs("$$$${NOT}"), Ok(vec![]));
    assert_eq!(template_refs("$$${YES}"), Ok(vec!["YES"]));
    assert_eq!(template_refs("$ 5 $x $"), Ok(vec![]));
    assert_eq!(template_refs("${é}"), Ok(vec!["é"]));
    assert_eq!(template_refs("é${A}é"), Ok(vec!["A"]));
    assert_eq!(template_refs("${A"), Err(TemplateError::Unterminated));
    assert_eq!(template_refs("${"), Err(TemplateError::Unterminated));
    assert_eq!(
        template_refs("x ${A} ${B"),
        Err(TemplateError::Unterminated)
    );
    assert_eq!(template_refs("${}"), Err(TemplateError::EmptyName));
    assert_eq!(template_refs("$"), Ok(vec![]));
}

#[test]
fn header_templates_must_be_well_formed_and_resolve() {
    let f = Fixture::new();
    let headers = |h: Value| {
        f.create_with(
            "mcp_servers",
            json!([server("a"), {"name": "b", "url": "https://x.example", "headers": h}]),
        )
    };
    let p = "mcp_servers[1].headers.Authorization";
    let m = assert_invalid(headers(json!({"Authorization": "Bearer ${TOKEN"})), p);
    assert!(m.contains("$$"), "{m}");
    assert_invalid(headers(json!({"Authorization": "Bearer ${}"})), p);
    let m = assert_invalid(headers(json!({"Authorization": "Bearer ${TOKEN}"})), p);
    assert!(m.contains("TOKEN"), "{m}");
    // Escaped: no reference.
    assert!(headers(json!({"Authorization": "Bearer $${TOKEN}"})).is_ok());

    // A malformed template is reported with the header, before any later field.
    let mut body = minimal();
    body["mcp_servers"] = json!([{"name": "b", "url": "https://x.example",
                                  "headers": {"Authorization": "${X"}}]);
    body["secrets"] = json!({"bad key": "sec_1"});
    assert_invalid(f.create(body), "mcp_servers[0].headers.Authorization");

    // A reference to a key that `secrets` has resolves; the reference itself is then a 422
    // (no secrets store yet), which comes only after every 400.
    let mut body = minimal();
    body["mcp_servers"] = json!([{"name": "b", "url": "https://x.example",
                                  "headers": {"Authorization": "Bearer ${TOKEN}"}}]);
    body["secrets"] = json!({"TOKEN": "sec_4hT8qL"});
    assert_secret_ref(f.create(body.clone()), "secrets.TOKEN");
    body["tool_policies"] = json!({"x": "never"});
    assert_invalid(f.create(body.clone()), "tool_policies.x");
    body["tool_policies"] = json!({});
    body["mcp_servers"][0]["headers"]["X-Other"] = json!("${MISSING}");
    assert_invalid(f.create(body), "mcp_servers[0].headers.X-Other");
}

// ---------------------------------------------------------------- skills

#[test]
fn skills_are_checked_for_shape() {
    // Loading (fetch, read, SKILL.md rules) happens in the route; the validator checks shape.
    let f = Fixture::new();
    assert!(
        f.create_with("skills", json!([]))
            .unwrap()
            .config
            .skills
            .is_empty()
    );
    assert!(
        f.create_with(
            "skills",
            json!([{"source": "inline", "name": "x", "content": "y"}]),
        )
        .is_ok()
    );
    assert_invalid(f.create_with("skills", json!({})), "skills");
    assert_invalid(f.create_with("skills", json!("brand-voice")), "skills");
    assert_invalid(
        f.create_with(
            "skills",
            json!([{"source": "inline", "name": "X", "content": "y"}]),
        ),
        "skills[0].name",
    );
    assert_invalid(
        f.create_with(
            "skills",
            json!([{"source": "inline", "name": "a", "content": "y"},
                   {"source": "file", "name": "a", "path": "a/SKILL.md"}]),
        ),
        "skills[1].name",
    );
    let many: Vec<_> = (0..101)
        .map(|i| json!({"source": "inline", "name": format!("s{i}"), "content": "y"}))
        .collect();
    assert_invalid(f.create_with("skills", json!(many)), "skills");
}

// ---------------------------------------------------------------- secrets

#[test]
fn secret_rules() {
    let f = Fixture::new();
    assert!(f.create_with("secrets", json!({})).is_ok());
    assert_invalid(f.create_with("secrets", json!([])), "secrets");
    assert_invalid(f.create_with("secrets", json!("sec_1")), "secrets");
    for bad_key in [
        "",
        "lower",
        "1ABC",
        "A-B",
        "A B",
        "Ä",
        format!("A{}", "B".repeat(128)).as_str(),
    ] {
        assert_invalid(
            f.create_with("secrets", json!({bad_key: "sec_1"})),
            &format!("secrets.{bad_key}"),
        );
    }
    for bad_value in [
        json!(null),
        json!(1),
        json!("abc"),
        json!("sec_"),
        json!("sec_a/b"),
        json!("key_abc"),
        json!(format!("sec_{}", "a".repeat(61))),
    ] {
        assert_invalid(
            f.create_with("secrets", json!({"TOKEN": bad_value})),
            "secrets.TOKEN",
        );
    }
    let many: serde_json::Map<String, Value> = (0..101)
        .map(|i| (format!("K{i}"), json!("sec_1")))
        .collect();
    assert_invalid(f.create_with("secrets", Value::Object(many)), "secrets");

    // Well-formed references: 422, naming the key.
    for ok_key in ["A", "_", "_A1", format!("A{}", "B".repeat(127)).as_str()] {
        assert_secret_ref(
            f.create_with("secrets", json!({ok_key: "sec_4hT8qL"})),
            &format!("secrets.{ok_key}"),
        );
    }
    // Every 400 in the object comes before the 422.
    let e = f
        .create_with("secrets", json!({"AAA": "sec_ok", "ZZZ": "nope"}))
        .unwrap_err();
    assert_eq!(
        (e.code, e.param.as_deref()),
        (ErrorCode::ValidationError, Some("secrets.ZZZ"))
    );
    let e = f
        .create_with("secrets", json!({"AAA": "sec_ok", "zzz": "sec_ok"}))
        .unwrap_err();
    assert_eq!(
        (e.code, e.param.as_deref()),
        (ErrorCode::ValidationError, Some("secrets.zzz"))
    );
}

// ---------------------------------------------------------------- tool_policies

#[test]
fn tool_policy_rules() {
    let f = Fixture::new();
    let p = f
        .create_with(
            "tool_policies",
            json!({"acme-media__generate_video": "always_ask", "shell": "always_allow",
                   "no_such_tool": "always_ask"}),
        )
        .unwrap()
        .config
        .tool_policies;
    assert_eq!(p.len(), 3);
    assert_eq!(p["acme-media__generate_video"], "always_ask");
    assert_eq!(p["shell"], "always_allow");
    assert!(
        f.create_with("tool_policies", json!({"x".repeat(64): "always_ask"}))
            .is_ok()
    );

    assert_invalid(f.create_with("tool_policies", json!([])), "tool_policies");
    for bad_key in ["", "a.b", "a b", "é", "x".repeat(65).as_str()] {
        assert_invalid(
            f.create_with("tool_policies", json!({bad_key: "always_ask"})),
            &format!("tool_policies.{bad_key}"),
        );
    }
    for bad_value in [
        json!("never"),
        json!("ALWAYS_ASK"),
        json!(null),
        json!(true),
    ] {
        assert_invalid(
            f.create_with("tool_policies", json!({"shell": bad_value})),
            "tool_policies.shell",
        );
    }
    let five_hundred: serde_json::Map<String, Value> = (0..500)
        .map(|i| (format!("t{i}"), json!("always_ask")))
        .collect();
    assert!(
        f.create_with("tool_policies", Value::Object(five_hundred))
            .is_ok()
    );
    let many: serde_json::Map<String, Value> = (0..501)
        .map(|i| (format!("t{i}"), json!("always_ask")))
        .collect();
    assert_invalid(
        f.create_with("tool_policies", Value::Object(many)),
        "tool_policies",
    );
}

// ---------------------------------------------------------------- PATCH

#[test]
fn empty_patch_changes_nothing() {
    let f = Fixture::new();
    let r = record(&f, minimal());
    assert_eq!(
        f.patch(json!({}), &r).unwrap(),
        (r.name.clone(), r.config.clone())
    );
    let nulls = json!({"sandbox": null, "features": null, "mcp_servers": null, "skills": null,
                       "secrets": null, "tool_policies": null, "unknown": 1});
    assert_eq!(
        f.patch(nulls, &r).unwrap(),
        (r.name.clone(), r.config.clone())
    );
}

#[test]
fn patch_replaces_strings_under_create_rules() {
    let f = Fixture::new();
    let r = record(&f, minimal());
    let (name, c) = f
        .patch(
            json!({"name": "New", "system_prompt": "New prompt", "model": "local/smollm2-135m"}),
            &r,
        )
        .unwrap();
    assert_eq!(
        (name.as_str(), c.system_prompt.as_str()),
        ("New", "New prompt")
    );
    for field in ["name", "system_prompt", "model"] {
        let m = assert_invalid(f.patch(json!({field: null}), &r), field);
        assert!(m.contains("null"), "{m}");
        assert_invalid(f.patch(json!({field: 1}), &r), field);
    }
    assert_invalid(f.patch(json!({"name": ""}), &r), "name");
    assert_invalid(f.patch(json!({"name": "x".repeat(201)}), &r), "name");
    assert_invalid(f.patch(json!({"system_prompt": ""}), &r), "system_prompt");
    assert_invalid(
        f.patch(json!({"system_prompt": "x".repeat(51)}), &r),
        "system_prompt",
    );
    assert_invalid(f.patch(json!({"model": "nosuch/m"}), &r), "model");
    assert_invalid(f.patch(json!({"model": "nomodel"}), &r), "model");
}

#[test]
fn patch_immutable_fields() {
    let f = Fixture::new();
    let mut body = minimal();
    body["runtime"] = json!("hermes");
    let r = record(&f, body);
    assert!(
        f.patch(json!({"customer_id": "cus_123", "runtime": "hermes"}), &r)
            .is_ok()
    );
    let m = assert_invalid(
        f.patch(json!({"customer_id": "cus_456"}), &r),
        "customer_id",
    );
    assert!(m.contains("cus_123"), "{m}");
    assert_invalid(f.patch(json!({"customer_id": null}), &r), "customer_id");
    assert_invalid(f.patch(json!({"customer_id": 123}), &r), "customer_id");
    assert_invalid(f.patch(json!({"runtime": "paddock"}), &r), "runtime");
    assert_invalid(f.patch(json!({"runtime": "other"}), &r), "runtime");
    assert_invalid(f.patch(json!({"runtime": null}), &r), "runtime");
}

#[test]
fn patch_merges_sandbox_and_features() {
    let f = Fixture::new();
    let mut body = minimal();
    body["sandbox"] = json!({"cpus": 2, "network": "internet"});
    body["features"] = json!({"dreaming": true});
    let r = record(&f, body);
    let (_, c) = f
        .patch(
            json!({"sandbox": {"memory_mb": 4096}, "features": {"memory": false}}),
            &r,
        )
        .unwrap();
    assert_eq!((c.sandbox.cpus, c.sandbox.memory_mb), (2.0, 4096));
    assert_eq!(c.sandbox.network, "internet");
    assert!(c.features.dreaming && !c.features.memory && c.features.automations);
    // A null sub-field is "not given".
    let (_, c) = f
        .patch(
            json!({"sandbox": {"cpus": null}, "features": {"dreaming": null}}),
            &r,
        )
        .unwrap();
    assert_eq!(c.sandbox.cpus, 2.0);
    assert!(c.features.dreaming);

    assert_invalid(f.patch(json!({"sandbox": "big"}), &r), "sandbox");
    assert_invalid(
        f.patch(json!({"sandbox": {"cpus": 100}}), &r),
        "sandbox.cpus",
    );
    assert_invalid(
        f.patch(json!({"sandbox": {"type": "docker"}}), &r),
        "sandbox.type",
    );
    assert_invalid(
        f.patch(json!({"sandbox": {"image": "x"}}), &r),
        "sandbox.image",
    );
    assert_invalid(f.patch(json!({"features": [true]}), &r), "features");
    assert_invalid(
        f.patch(json!({"features": {"wings": true}}), &r),
        "features.wings",
    );
    assert_invalid(
        f.patch(json!({"features": {"memory": "no"}}), &r),
        "features.memory",
    );
}

#[test]
fn patch_sandbox_images() {
    let f = Fixture::with_docker();
    let mut body = minimal();
    body["sandbox"] = json!({"type": "docker", "image": "acme/agent:1"});
    let r = record(&f, body);
    // Untouched image survives a change of another sub-field.
    let (_, c) = f.patch(json!({"sandbox": {"cpus": 2}}), &r).unwrap();
    assert_eq!(c.sandbox.image.as_deref(), Some("acme/agent:1"));
    // `image: null` resets it.
    let (_, c) = f.patch(json!({"sandbox": {"image": null}}), &r).unwrap();
    assert_eq!(c.sandbox.image, None);
    // Leaving docker drops the image, unless one is named (which is invalid).
    let (_, c) = f
        .patch(json!({"sandbox": {"type": "bubblewrap"}}), &r)
        .unwrap();
    assert_eq!(
        (c.sandbox.kind.as_str(), c.sandbox.image.clone()),
        ("bubblewrap", None)
    );
    assert_invalid(
        f.patch(
            json!({"sandbox": {"type": "bubblewrap", "image": "acme/agent:2"}}),
            &r,
        ),
        "sandbox.image",
    );
}

#[test]
fn patch_replaces_mcp_servers() {
    let f = Fixture::new();
    let mut body = minimal();
    body["mcp_servers"] = json!([server("a"), server("b")]);
    let r = record(&f, body);
    let (_, c) = f.patch(json!({"mcp_servers": [server("c")]}), &r).unwrap();
    assert_eq!(c.mcp_servers.len(), 1);
    assert_eq!(c.mcp_servers[0].name, "c");
    let (_, c) = f.patch(json!({"mcp_servers": []}), &r).unwrap();
    assert!(c.mcp_servers.is_empty());
    let (_, c) = f.patch(json!({"mcp_servers": null}), &r).unwrap();
    assert_eq!(c.mcp_servers.len(), 2);
    assert_invalid(f.patch(json!({"mcp_servers": {}}), &r), "mcp_servers");
    assert_invalid(
        f.patch(json!({"mcp_servers": [server("a"), server("a")]}), &r),
        "mcp_servers[1].name",
    );
    assert_invalid(
        f.patch(
            json!({"mcp_servers": [{"name": "a", "url": "gopher://x"}]}),
            &r,
        ),
        "mcp_servers[0].url",
    );
}

#[test]
fn patch_skills() {
    let f = Fixture::new();
    let r = record(&f, minimal());
    assert!(
        f.patch(json!({"skills": []}), &r)
            .unwrap()
            .1
            .skills
            .is_empty()
    );
    assert_invalid(
        f.patch(json!({"skills": [{"name": "x"}]}), &r),
        "skills[0].source",
    );
    assert_invalid(f.patch(json!({"skills": {}}), &r), "skills");
}

#[test]
fn patch_merges_tool_policies_per_key() {
    let f = Fixture::new();
    let mut body = minimal();
    body["tool_policies"] = json!({"shell": "always_ask", "browser": "always_ask"});
    let r = record(&f, body);
    let (_, c) = f
        .patch(
            json!({"tool_policies": {"shell": null, "browser": "always_allow", "memory": "always_ask",
                                     "never_there": null}}),
            &r,
        )
        .unwrap();
    assert_eq!(
        c.tool_policies,
        BTreeMap::from([
            ("browser".to_owned(), "always_allow".to_owned()),
            ("memory".to_owned(), "always_ask".to_owned()),
        ])
    );
    assert_invalid(f.patch(json!({"tool_policies": []}), &r), "tool_policies");
    assert_invalid(
        f.patch(json!({"tool_policies": {"shell": "no"}}), &r),
        "tool_policies.shell",
    );
    assert_invalid(
        f.patch(json!({"tool_policies": {"a b": null}}), &r),
        "tool_policies.a b",
    );
    assert_invalid(
        f.patch(json!({"tool_policies": {"shell": 1}}), &r),
        "tool_policies.shell",
    );

    // The limit applies to the merged map.
    let mut big = record(&f, minimal());
    for i in 0..500 {
        big.config
            .tool_policies
            .insert(format!("t{i}"), "always_ask".into());
    }
    assert_invalid(
        f.patch(json!({"tool_policies": {"one_more": "always_ask"}}), &big),
        "tool_policies",
    );
    assert!(
        f.patch(
            json!({"tool_policies": {"one_more": "always_ask", "t0": null}}),
            &big
        )
        .is_ok()
    );
}

#[test]
fn patch_merges_secrets_per_key() {
    let f = Fixture::new();
    let r = record_with_secret(&f);
    // Removing an unused key, or a key that is not there, is fine.
    let mut unused = r.clone();
    unused
        .config
        .secrets
        .insert("UNUSED".into(), "sec_u".into());
    let (_, c) = f
        .patch(json!({"secrets": {"UNUSED": null, "NEVER": null}}), &unused)
        .unwrap();
    assert_eq!(
        c.secrets,
        BTreeMap::from([("TOKEN".to_owned(), "sec_abc".to_owned())])
    );
    // Setting a reference is checked against the account: a 422 in this version.
    assert_secret_ref(
        f.patch(json!({"secrets": {"NEW": "sec_new"}}), &r),
        "secrets.NEW",
    );
    assert_invalid(
        f.patch(json!({"secrets": {"NEW": "nope"}}), &r),
        "secrets.NEW",
    );
    assert_invalid(f.patch(json!({"secrets": {"NEW": 5}}), &r), "secrets.NEW");
    assert_invalid(
        f.patch(json!({"secrets": {"new": null}}), &r),
        "secrets.new",
    );
    assert_invalid(f.patch(json!({"secrets": "x"}), &r), "secrets");

    let mut full = r.clone();
    for i in 0..99 {
        full.config.secrets.insert(format!("K{i}"), "sec_k".into());
    }
    assert_eq!(full.config.secrets.len(), 100);
    let e = f
        .patch(json!({"secrets": {"ONE_MORE": "sec_x"}}), &full)
        .unwrap_err();
    assert_eq!(
        (e.code, e.param.as_deref()),
        (ErrorCode::ValidationError, Some("secrets"))
    );
}

#[test]
fn patch_header_refs_must_still_resolve() {
    let f = Fixture::new();
    let r = record_with_secret(&f);
    // Removing a secret a header uses is a 400 on that header.
    let m = assert_invalid(
        f.patch(json!({"secrets": {"TOKEN": null}}), &r),
        "mcp_servers[0].headers.Authorization",
    );
    assert!(m.contains("TOKEN"), "{m}");
    // ... unless the same PATCH drops the header too.
    let (_, c) = f
        .patch(
            json!({"secrets": {"TOKEN": null}, "mcp_servers": [server("acme")]}),
            &r,
        )
        .unwrap();
    assert!(c.secrets.is_empty() && c.mcp_servers[0].headers.is_empty());
    // New servers may use the existing key.
    let (_, c) = f
        .patch(
            json!({"mcp_servers": [{"name": "x", "url": "https://x.example",
                                    "headers": {"X-Key": "${TOKEN}"}}]}),
            &r,
        )
        .unwrap();
    assert_eq!(c.mcp_servers[0].headers["X-Key"], "${TOKEN}");
    assert_invalid(
        f.patch(
            json!({"mcp_servers": [{"name": "x", "url": "https://x.example",
                                    "headers": {"X-Key": "${OTHER}"}}]}),
            &r,
        ),
        "mcp_servers[0].headers.X-Key",
    );
}

#[test]
fn patch_is_validated_in_full_first_problem_wins() {
    let f = Fixture::new();
    let r = record(&f, minimal());
    let body = json!({"name": "", "sandbox": {"cpus": 0}, "tool_policies": {"x": "no"}});
    assert_invalid(f.patch(body, &r), "name");
    let body = json!({"name": "ok", "sandbox": {"cpus": 0}, "tool_policies": {"x": "no"}});
    assert_invalid(f.patch(body, &r), "sandbox.cpus");
    let body = json!({"customer_id": "other", "name": ""});
    assert_invalid(f.patch(body, &r), "customer_id");
}

#[test]
fn never_panics_on_odd_input() {
    let f = Fixture::with_docker();
    let r = record(&f, minimal());
    let odd = [
        Value::Null,
        json!(true),
        json!(-0.0),
        json!(1e308),
        json!(-9223372036854775808i64),
        json!(u64::MAX),
        json!(""),
        json!("${"),
        json!("\u{0}"),
        json!("é".repeat(1000)),
        json!([]),
        json!([null, {}, [], "x"]),
        json!({}),
        json!({"": null, "${": "$$${"}),
    ];
    let fields = [
        "customer_id",
        "name",
        "system_prompt",
        "model",
        "runtime",
        "sandbox",
        "features",
        "mcp_servers",
        "skills",
        "secrets",
        "tool_policies",
    ];
    for field in fields {
        for v in &odd {
            let _ = f.create_with(field, v.clone());
            let _ = f.patch(json!({field: v}), &r);
            // And one level down, where objects are expected.
            let _ = f.create_with(
                field,
                json!({"type": v, "cpus": v, "memory_mb": v, "image": v,
                                                "memory": v, "X": v}),
            );
            let _ = f.create_with(field, json!([{"name": v, "url": v, "tools": v, "headers": v},
                                                {"name": "a", "url": "https://x", "headers": {"A": v}}]));
        }
    }
}
