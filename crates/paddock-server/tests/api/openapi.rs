//! `GET /openapi.json` (spec §17): an OpenAPI 3.1 document, generated from the code, of every
//! `/v1/` endpoint the router serves.

use crate::common;

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use common::TestServer;

const ERROR_REF: &str = "#/components/schemas/ErrorBody";

/// Every `/v1/` endpoint the router serves (spec §2, restricted to what exists today), in the
/// router's path syntax, with the schema of its JSON request body if it takes one.
const ENDPOINTS: &[(&str, &str, Option<&str>)] = &[
    ("post", "/v1/deployments", Some("CreateDeploymentRequest")),
    ("get", "/v1/deployments", None),
    ("get", "/v1/deployments/{dep}", None),
    (
        "patch",
        "/v1/deployments/{dep}",
        Some("UpdateDeploymentRequest"),
    ),
    ("delete", "/v1/deployments/{dep}", None),
    (
        "post",
        "/v1/deployments/{dep}/messages",
        Some("SendMessageRequest"),
    ),
    ("get", "/v1/deployments/{dep}/runs", None),
    ("get", "/v1/deployments/{dep}/runs/{run}", None),
    ("post", "/v1/deployments/{dep}/runs/{run}/cancel", None),
    (
        "post",
        "/v1/deployments/{dep}/runs/{run}/steering",
        Some("SteeringAnswerRequest"),
    ),
    ("get", "/v1/deployments/{dep}/events", None),
    ("get", "/v1/deployments/{dep}/files", None),
    ("get", "/v1/deployments/{dep}/files/content", None),
    (
        "put",
        "/v1/deployments/{dep}/files",
        Some("WriteFileRequest"),
    ),
    ("delete", "/v1/deployments/{dep}/files", None),
    (
        "post",
        "/v1/deployments/{dep}/threads",
        Some("CreateThreadRequest"),
    ),
    ("get", "/v1/deployments/{dep}/threads", None),
    ("get", "/v1/deployments/{dep}/threads/{thread}", None),
    (
        "patch",
        "/v1/deployments/{dep}/threads/{thread}",
        Some("UpdateThreadRequest"),
    ),
    ("delete", "/v1/deployments/{dep}/threads/{thread}", None),
    (
        "post",
        "/v1/deployments/{dep}/memories",
        Some("MemoryContentRequest"),
    ),
    ("get", "/v1/deployments/{dep}/memories", None),
    ("get", "/v1/deployments/{dep}/memories/{memory}", None),
    (
        "patch",
        "/v1/deployments/{dep}/memories/{memory}",
        Some("MemoryContentRequest"),
    ),
    ("delete", "/v1/deployments/{dep}/memories/{memory}", None),
    (
        "post",
        "/v1/deployments/{dep}/automations",
        Some("CreateAutomationRequest"),
    ),
    ("get", "/v1/deployments/{dep}/automations", None),
    (
        "get",
        "/v1/deployments/{dep}/automations/{automation}",
        None,
    ),
    (
        "patch",
        "/v1/deployments/{dep}/automations/{automation}",
        Some("UpdateAutomationRequest"),
    ),
    (
        "delete",
        "/v1/deployments/{dep}/automations/{automation}",
        None,
    ),
    (
        "post",
        "/v1/deployments/{dep}/automations/{automation}/trigger",
        None,
    ),
    (
        "post",
        "/v1/deployments/{dep}/skills",
        Some("SkillEntryRequest"),
    ),
    ("get", "/v1/deployments/{dep}/skills", None),
    ("get", "/v1/deployments/{dep}/skills/{skill}", None),
    (
        "put",
        "/v1/deployments/{dep}/skills/{skill}",
        Some("SkillEntryRequest"),
    ),
    ("delete", "/v1/deployments/{dep}/skills/{skill}", None),
    ("get", "/v1/deployments/{dep}/tools", None),
    (
        "patch",
        "/v1/deployments/{dep}/tools/{name}",
        Some("UpdateToolRequest"),
    ),
    ("post", "/v1/accounts", Some("CreateAccountRequest")),
    ("get", "/v1/accounts", None),
    ("get", "/v1/accounts/{account}", None),
    (
        "post",
        "/v1/accounts/{account}/credits",
        Some("CreditsRequest"),
    ),
    ("post", "/v1/keys", Some("CreateKeyRequest")),
    ("get", "/v1/keys", None),
    ("delete", "/v1/keys/{key}", None),
    ("post", "/v1/secrets", Some("CreateSecretRequest")),
    ("get", "/v1/secrets", None),
    ("delete", "/v1/secrets/{secret_id}", None),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The `{name}` segments of a path template.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// Follows a local `$ref` to its target.
fn resolve<'d>(doc: &'d Value, v: &'d Value) -> &'d Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.strip_prefix('#').expect("local $ref"))
            .unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => v,
    }
}

async fn fetch_document(server: &TestServer) -> Value {
    let response = server
        .http()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "/openapi.json needs no key");
    assert!(response.headers().contains_key("x-request-id"));
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_every_v1_endpoint() {
    let server = TestServer::start().await;
    let doc = fetch_document(&server).await;

    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["info"]["title"], "Paddock API");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "pdk_ + 40 base62 characters",
            "description": doc["components"]["securitySchemes"]["bearer"]["description"],
        })
    );
    let error_schema = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error_schema["type"], "object", "{error_schema}");
    assert!(error_schema["properties"]["error"].is_object());

    // Exactly the router's `/v1/` operations are documented.
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .filter(|(p, _)| p.starts_with("/v1/"))
        .flat_map(|(p, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| ((*m).to_owned(), p.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let unexpected: Vec<_> = documented.difference(&expected).collect();
    assert!(missing.is_empty(), "not in /openapi.json: {missing:?}");
    assert!(
        unexpected.is_empty(),
        "documented but not in this test's list of routes (add them to ENDPOINTS): {unexpected:?}"
    );

    let mut operation_ids = BTreeSet::new();
    for (method, path, body) in ENDPOINTS {
        let op = &doc["paths"][*path][*method];
        let name = format!("{} {path}", method.to_uppercase());
        let id = op["operationId"].as_str().expect("operationId");
        assert!(
            operation_ids.insert(id.to_owned()),
            "{name}: duplicate operationId {id}"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{name}: no tag"
        );
        assert_eq!(op["security"], json!([{"bearer": []}]), "{name}: security");

        // Every `{param}` of the path is a required path parameter.
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        for p in path_params(path) {
            assert!(
                params
                    .iter()
                    .any(|q| q["name"] == p && q["in"] == "path" && q["required"] == true),
                "{name}: path parameter `{p}` not documented"
            );
        }

        // A success response and the error envelope on the error responses.
        let responses = op["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{name}: no responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{name}: no success response"
        );
        for status in ["401", "403", "500"] {
            assert!(responses.contains_key(status), "{name}: no {status}");
        }
        for (status, response) in responses {
            if status.starts_with('2') {
                continue;
            }
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"], ERROR_REF,
                "{name}: {status} is not the error envelope"
            );
        }
        if *path != "/v1/deployments" && path.starts_with("/v1/deployments/") {
            assert!(responses.contains_key("404"), "{name}: no 404");
        }
        assert!(responses.contains_key("429"), "{name}: no 429");

        match body {
            Some(schema) => {
                let content = &op["requestBody"]["content"]["application/json"]["schema"];
                assert_eq!(
                    content["$ref"],
                    format!("#/components/schemas/{schema}"),
                    "{name}: request body"
                );
                assert!(
                    doc["components"]["schemas"][*schema].is_object(),
                    "{name}: {schema} not in components"
                );
                // Only thread create takes an empty body (spec §8.2).
                let optional = *path == "/v1/deployments/{dep}/threads";
                assert_eq!(
                    op["requestBody"]["required"], !optional,
                    "{name}: request body required"
                );
            }
            None => assert!(op.get("requestBody").is_none(), "{name}: unexpected body"),
        }
    }

    // Bodies whose schema is a component resolve; spot-check the shapes the spec fixes.
    let created = &doc["paths"]["/v1/deployments"]["post"]["responses"]["201"];
    let deployment = resolve(&doc, &created["content"]["application/json"]["schema"]);
    assert!(deployment["properties"]["deployment_id"].is_object());
    let create = &doc["components"]["schemas"]["CreateDeploymentRequest"];
    let required: BTreeSet<&str> = create["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["customer_id", "name", "system_prompt"])
    );
    assert_eq!(create["properties"]["customer_id"]["maxLength"], 128);
    let list = &doc["paths"]["/v1/deployments"]["get"];
    let names: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for q in ["customer_id", "status", "limit", "cursor"] {
        assert!(names.contains(&q), "list deployments: no `{q}` parameter");
    }
    let page = resolve(
        &doc,
        &list["responses"]["200"]["content"]["application/json"]["schema"],
    );
    assert_eq!(
        page["properties"]["data"]["items"]["$ref"], "#/components/schemas/DeploymentSummary",
        "{page}"
    );
    assert!(page["properties"]["next_cursor"].is_object(), "{page}");

    // The event stream is SSE, with its filters.
    let events = &doc["paths"]["/v1/deployments/{dep}/events"]["get"];
    assert!(
        events["responses"]["200"]["content"]["text/event-stream"].is_object(),
        "{}",
        events["responses"]["200"]
    );
    let names: Vec<&str> = events["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for q in ["after", "types", "thread_id", "run_id", "Last-Event-ID"] {
        assert!(names.contains(&q), "events: no `{q}` parameter");
    }
}

/// The list above is the router's: each entry reaches a handler, not the unknown-route 404.
#[tokio::test]
async fn every_listed_endpoint_is_routed() {
    let server = TestServer::start().await;
    let http = server.http();
    let send = |method: &str, path: &str| {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut request = http
            .request(method.clone(), server.url(path))
            .bearer_auth(&server.admin_key);
        if method == Method::POST || method == Method::PATCH {
            request = request.json(&json!({}));
        }
        request.send()
    };
    for (method, path, _) in ENDPOINTS {
        let concrete = path
            .replace("{dep}", "dep_missing")
            .replace("{run}", "run_missing")
            .replace("{thread}", "thr_missing")
            .replace("{account}", "acct_missing")
            .replace("{key}", "key_missing");
        let unknown_route: Value = send(method, "/v1/no-such-route")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let response = send(method, &concrete).await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body,
            unknown_route,
            "{} {path} is not routed ({status})",
            method.to_uppercase()
        );
    }
}
