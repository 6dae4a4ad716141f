//! Request bodies as clients send them (spec §3–§16), plus the small acknowledgement bodies that
//! have no resource type of their own.
//!
//! These types describe the wire for the OpenAPI document (spec §17) and for clients. The server
//! does not deserialize bodies into them: it validates the JSON by hand so that every bad input
//! gets the documented error and `param`. Limits that the operator can configure are given here
//! with their defaults, in the field docs; fixed limits are also schema constraints.
//!
//! An optional field left out of a serialized body is "not given". Where `null` means something
//! different from "not given" (a `PATCH` that clears a value, a credits call that makes a balance
//! unlimited), the field is an `Option<Option<T>>`: `None` is left out, `Some(None)` is `null`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::Ref;
use utoipa::openapi::schema::{Object, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

use crate::resources::Attachment;

/// Reads a present field, `null` included, as `Some(..)`; an absent one stays `None` through
/// `#[serde(default)]`. Without this serde reads `null` as `None`, losing "given as null".
fn given<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `runtime` of a deployment (spec §3.5). Echoed as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentRuntime {
    /// Paddock's own agent runtime.
    Paddock,
    /// An alias of `paddock`, accepted so existing clients keep working.
    Hermes,
}

/// `sandbox.network` (spec §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxNetwork {
    /// No network inside the sandbox.
    None,
    /// Outbound internet only; never the host's own addresses or private networks (§1.13).
    Internet,
}

/// A tool's steering policy (spec §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolPolicy {
    /// The call runs without asking.
    AlwaysAllow,
    /// The call pauses before it executes until a person answers (§6).
    AlwaysAsk,
}

/// Where a skill's text comes from (spec §12.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkillSource {
    /// The SKILL.md text is in `content`.
    Inline,
    /// Fetched from `url` when the skill is created or replaced.
    Url,
    /// A workspace file at `path`, read again at the start of every run.
    File,
}

/// A key scope (spec §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    /// Every `GET` under `/v1/deployments`, including the SSE stream.
    #[serde(rename = "deployments:read")]
    DeploymentsRead,
    /// Every `POST`, `PUT`, `PATCH`, `DELETE` under `/v1/deployments`.
    #[serde(rename = "deployments:write")]
    DeploymentsWrite,
    /// Every method on `/v1/secrets`.
    #[serde(rename = "secrets:write")]
    SecretsWrite,
    /// `/v1/accounts` and `/v1/keys` for all accounts, plus the other scopes within the key's own
    /// account.
    #[serde(rename = "admin")]
    Admin,
}

/// A steering decision sent to the steering endpoint (spec §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SteeringDecision {
    /// Run the held call (or approve the `request_approval`).
    Approve,
    /// Do not run it; the model plans again.
    Reject,
}

/// The `sandbox` object of a create or update (spec §3.3): every sub-field optional. On create a
/// missing sub-field takes its default; on update it keeps its current value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SandboxSettings {
    /// `false`: no container; `shell` and `browser` are unavailable; file tools and the Files API
    /// work on the workspace directory on the host, with the same path confinement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = true)]
    pub enabled: Option<bool>,
    /// The sandbox backend: `bubblewrap` (the default on Linux) or `docker`, where the operator
    /// has enabled it. Default: the server's default backend. A type the server has not enabled
    /// gets `400` naming the enabled ones.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "bubblewrap")]
    pub kind: Option<String>,
    /// `false`: at the start of every run, everything in the workspace outside `.paddock/` is
    /// erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = true)]
    pub persistent_filesystem: Option<bool>,
    /// `docker` only: an image from the server's allowed-image list (default: the server's).
    /// Must be `null` for `bubblewrap`. In an update, `null` resets the image.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub image: Option<Option<String>>,
    /// Network access inside the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = "none")]
    pub network: Option<SandboxNetwork>,
    /// CPUs: 0.25 to the server maximum (default maximum 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = 1, minimum = 0.25)]
    pub cpus: Option<f64>,
    /// Memory in MiB: 256 to the server maximum (default maximum 16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = 2048, minimum = 256)]
    pub memory_mb: Option<u32>,
}

/// The `features` object of a create or update (spec §3.4): every flag optional. On create a
/// missing flag takes its default; on update it keeps its current value. Unknown flags are `400`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeatureSettings {
    /// The agent gets the `memory` tool and memories are put in its context at each run start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = true)]
    pub memory: Option<bool>,
    /// Idle-time memory consolidation runs (`trigger: "dreaming"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = false)]
    pub dreaming: Option<bool>,
    /// Schedules fire and the agent gets the `automations` tool; `false` makes automation create
    /// and trigger `409 conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = true)]
    pub automations: Option<bool>,
    /// `request_approval` is offered and `tool_policies` are enforced (§6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = true)]
    pub steering: Option<bool>,
    /// `filesystem` events are emitted on the stream (§7.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = false)]
    pub filesystem_webhooks: Option<bool>,
}

/// One MCP server entry (spec §14.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct McpServerEntry {
    /// 1–32 characters of `[A-Za-z0-9_-]`; no `__`; no leading or trailing `_`; not `builtin`;
    /// unique in the deployment.
    #[schema(min_length = 1, max_length = 32, pattern = "^[A-Za-z0-9_-]{1,32}$")]
    pub name: String,
    /// `http`/`https` URL reachable from the Paddock host (§1.13 rules apply).
    #[schema(max_length = 2048)]
    pub url: String,
    /// Tool names to expose, spelled as the server lists them; at most 200. Absent or `null`:
    /// all tools. Unknown names are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 200)]
    pub tools: Option<Vec<String>>,
    /// At most 20 headers sent on every request to the server; values at most 4,096 characters
    /// and may contain `${NAME}`, `NAME` a key of the deployment's `secrets` (§14.3). May not set
    /// `Host`, `Content-Length`, `Content-Type`, `Accept`, `Mcp-Session-Id`, `X-Customer-Id` or
    /// `X-Deployment-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// One skill entry (spec §12.2): `source`, `name`, and the field the source needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillEntry {
    /// Where the SKILL.md text comes from.
    pub source: SkillSource,
    /// 1–64 characters of lowercase `a-z`, digits and `-`; no leading or trailing `-`, no `--`.
    /// Must equal the SKILL.md front-matter `name`; unique per deployment.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9]+(-[a-z0-9]+)*$")]
    pub name: String,
    /// `inline` only: the full SKILL.md text (at most 100 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `url` only: an `http(s)` URL, fetched under §1.13 (10 s timeout, 100 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `file` only: a workspace path (§11.1), e.g. `skills/brand/SKILL.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `POST /v1/deployments` (spec §3.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateDeploymentRequest {
    /// Your identifier for the customer: 1–128 printable ASCII characters (0x20–0x7E), no
    /// leading or trailing space. Immutable.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]([ -~]*[!-~])?$")]
    pub customer_id: String,
    /// 1–200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// 1–100,000 characters (the limit is configurable).
    #[schema(min_length = 1)]
    pub system_prompt: String,
    /// `provider/model`; the provider must be configured on the server. Default: the server's
    /// `default_model` (out of the box the embedded local model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "anthropic/claude-sonnet-4.5")]
    pub model: Option<String>,
    /// Immutable; echoed as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = "paddock")]
    pub runtime: Option<DeploymentRuntime>,
    /// Missing sub-fields take their defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSettings>,
    /// Missing flags take their defaults; unknown flags are `400`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeatureSettings>,
    /// At most 20 servers, unique names (§14). Default `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 20)]
    pub mcp_servers: Option<Vec<McpServerEntry>>,
    /// At most 100 skills, unique names (§12). Default `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 100)]
    pub skills: Option<Vec<SkillEntry>>,
    /// At most 100 entries, name → `sec_…` id of this account (§15). Names match
    /// `^[A-Z_][A-Z0-9_]{0,127}$`. Default `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, String>>,
    /// At most 500 entries, model-facing tool name (§13.3; 1–64 characters of `[A-Za-z0-9_-]`)
    /// → policy. Keys for tools that do not exist are kept and have no effect. Default `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_policies: Option<BTreeMap<String, ToolPolicy>>,
}

/// `PATCH /v1/deployments/:dep` (spec §3.7): only fields in the body change. The update is
/// validated in full and applied atomically, from the next run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UpdateDeploymentRequest {
    /// Immutable: the current value is accepted, any other gets `400`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Replaced; 1–200 characters. `null` is a `400`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// Replaced; 1–100,000 characters (configurable). `null` is a `400`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub system_prompt: Option<String>,
    /// Replaced; `provider/model` with a configured provider. `null` is a `400`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Immutable: the current value is accepted, any other gets `400`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<DeploymentRuntime>,
    /// Merged per sub-field over the current sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSettings>,
    /// Merged per flag over the current features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeatureSettings>,
    /// Replaced as a whole; `[]` removes all servers. At most 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 20)]
    pub mcp_servers: Option<Vec<McpServerEntry>>,
    /// Replaced as a whole. An entry whose `name` matches an existing skill keeps its
    /// `skill_id`; existing skills not named are removed. At most 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 100)]
    pub skills: Option<Vec<SkillEntry>>,
    /// Merged per key; a key set to `null` is removed. After merging every `${NAME}` in MCP
    /// headers must still resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = secrets_patch_schema)]
    pub secrets: Option<BTreeMap<String, Option<String>>>,
    /// Merged per key; a key set to `null` is removed (the tool returns to its default policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = tool_policies_patch_schema)]
    pub tool_policies: Option<BTreeMap<String, Option<ToolPolicy>>>,
}

/// `secrets` of an update: name → `sec_…` id, or `null` to remove the name.
fn secrets_patch_schema() -> Object {
    map_of(
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .into(),
        "Merged per key; a key set to `null` is removed. After merging every `${NAME}` in MCP \
         headers must still resolve.",
    )
}

/// `tool_policies` of an update: tool name → policy, or `null` to return to the default.
fn tool_policies_patch_schema() -> Object {
    map_of(
        OneOfBuilder::new()
            .item(Ref::from_schema_name(ToolPolicy::name()))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into(),
        "Merged per key; a key set to `null` is removed (the tool returns to its default policy).",
    )
}

/// A JSON object whose values all follow `values`.
fn map_of(values: Schema, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(values))
        .description(Some(description))
        .build()
}

/// `POST /v1/deployments/:dep/messages` (spec §4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SendMessageRequest {
    /// 1–100,000 characters (the limit is configurable).
    #[schema(min_length = 1)]
    pub content: String,
    /// A thread of this deployment, or the literal `"new"` for a new thread. Default: the
    /// deployment's default thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "new")]
    pub thread_id: Option<String>,
    /// At most 10. Each `type` is `image`, `video` or `audio`; each `url` is `http`/`https`, at
    /// most 2,048 characters. Default `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 10)]
    pub attachments: Option<Vec<Attachment>>,
}

/// `POST /v1/deployments/:dep/threads` (spec §8.2). The body may be empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateThreadRequest {
    /// 0–200 characters; `null` or absent: no title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub title: Option<String>,
}

/// `PATCH /v1/deployments/:dep/threads/:thread_id` (spec §8.2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UpdateThreadRequest {
    /// 0–200 characters; `null` clears the title; absent leaves it unchanged.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub title: Option<Option<String>>,
}

/// `POST /v1/deployments/:dep/runs/:run_id/steering` (spec §6.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SteeringAnswerRequest {
    /// The run's pending steering request (`srq_…`).
    pub request_id: String,
    /// `approve` or `reject`.
    pub decision: SteeringDecision,
    /// 1–100,000 characters (configurable); passed to the model and stored in the thread as a
    /// `user` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub message: Option<String>,
}

/// `POST /v1/accounts` (spec §16.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateAccountRequest {
    /// 1–100 characters of `[a-z0-9_-]`, unique on the server.
    #[schema(min_length = 1, max_length = 100, pattern = "^[a-z0-9_-]{1,100}$")]
    pub name: String,
    /// Credits, at most 6 decimal places; `null` or absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<f64>,
}

/// `POST /v1/accounts/:account_id/credits` (spec §16.1): exactly one of `amount` or `balance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreditsRequest {
    /// Credits added to the balance (may be negative), at most 6 decimal places. `409` on an
    /// account whose balance is `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
    /// The new balance, at most 6 decimal places; `null` makes it unlimited.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<f64>)]
    pub balance: Option<Option<f64>>,
}

/// `POST /v1/keys` (spec §16.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateKeyRequest {
    /// 1–100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Non-empty.
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
    /// The account the key belongs to. Default: the caller's account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// RFC 3339 timestamp in the future; `null` or absent: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// The answer to `DELETE /v1/deployments/:dep/threads/:thread_id` (spec §8.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ThreadDeleted {
    pub thread_id: String,
    /// Always `deleted`.
    #[schema(example = "deleted")]
    pub status: String,
}

/// The answer to `DELETE /v1/keys/:key_id` (spec §16.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyRevoked {
    pub key_id: String,
    /// Always `revoked`.
    #[schema(example = "revoked")]
    pub status: String,
}

/// `POST /v1/secrets` (spec §15.1).
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateSecretRequest {
    /// The credential, 8 to 65,536 bytes. Stored encrypted; never returned.
    #[schema(min_length = 8, max_length = 65536)]
    pub value: String,
    /// 1–128 characters of `[A-Za-z0-9_.-]`, unique in the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    pub name: Option<String>,
    /// If set, only deployments with this `customer_id` may reference the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
}

impl std::fmt::Debug for CreateSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSecretRequest")
            .field("name", &self.name)
            .field("customer_id", &self.customer_id)
            .finish_non_exhaustive()
    }
}

/// The answer to `DELETE /v1/secrets/:secret_id` (spec §15.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecretDeleted {
    pub secret_id: String,
    /// Always `deleted`.
    #[schema(example = "deleted")]
    pub status: String,
}

/// The answer to `GET /healthz` (spec §17).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// The answer to `GET /readyz` (spec §17).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessStatus {
    /// `ready` (200) or `unavailable` (503).
    #[schema(example = "ready")]
    pub status: String,
    pub checks: ReadinessChecks,
}

/// Each dependency of `/readyz`: `ok`, or `error: <reason>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessChecks {
    /// Reachable and migrated.
    pub database: String,
    /// The sandbox backend answers.
    pub sandbox: String,
    /// The scheduler runs.
    pub scheduler: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_and_absent_stay_distinct_where_null_means_something() {
        let absent: UpdateThreadRequest = serde_json::from_value(json!({})).unwrap();
        let cleared: UpdateThreadRequest = serde_json::from_value(json!({"title": null})).unwrap();
        assert_eq!(absent.title, None);
        assert_eq!(cleared.title, Some(None));
        assert_eq!(serde_json::to_value(&absent).unwrap(), json!({}));
        assert_eq!(
            serde_json::to_value(&cleared).unwrap(),
            json!({"title": null})
        );

        let unlimited: CreditsRequest = serde_json::from_value(json!({"balance": null})).unwrap();
        assert_eq!(unlimited.balance, Some(None));
        assert_eq!(unlimited.amount, None);
    }

    #[test]
    fn bodies_serialize_as_the_spec_writes_them() {
        let create = CreateDeploymentRequest {
            customer_id: "cus_123".into(),
            name: "Acme".into(),
            system_prompt: "Help.".into(),
            model: None,
            runtime: Some(DeploymentRuntime::Hermes),
            sandbox: Some(SandboxSettings {
                kind: Some("docker".into()),
                network: Some(SandboxNetwork::Internet),
                ..SandboxSettings::default()
            }),
            features: None,
            mcp_servers: None,
            skills: Some(vec![SkillEntry {
                source: SkillSource::Inline,
                name: "brand-voice".into(),
                content: Some("---\nname: brand-voice\n---\n".into()),
                url: None,
                path: None,
            }]),
            secrets: None,
            tool_policies: Some(BTreeMap::from([("x__y".into(), ToolPolicy::AlwaysAsk)])),
        };
        assert_eq!(
            serde_json::to_value(&create).unwrap(),
            json!({"customer_id": "cus_123", "name": "Acme", "system_prompt": "Help.",
                   "runtime": "hermes", "sandbox": {"type": "docker", "network": "internet"},
                   "skills": [{"source": "inline", "name": "brand-voice",
                               "content": "---\nname: brand-voice\n---\n"}],
                   "tool_policies": {"x__y": "always_ask"}})
        );
        let key = CreateKeyRequest {
            name: "k".into(),
            scopes: vec![Scope::DeploymentsRead, Scope::Admin],
            account_id: None,
            expires_at: None,
        };
        assert_eq!(
            serde_json::to_value(&key).unwrap(),
            json!({"name": "k", "scopes": ["deployments:read", "admin"]})
        );
        let answer = SteeringAnswerRequest {
            request_id: "srq_1".into(),
            decision: SteeringDecision::Reject,
            message: None,
        };
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            json!({"request_id": "srq_1", "decision": "reject"})
        );
    }
}
