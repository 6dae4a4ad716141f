//! Deployment bodies: create (spec §3.5) and update (§3.7), with the `sandbox` (§3.3),
//! `features` (§3.4), `mcp_servers` (§14), `secrets` (§15) and `tool_policies` rules.
//!
//! Checks run in the order of the §3.5 field table and stop at the first problem. Two checks
//! span fields and run after every field is valid: each `${NAME}` in an MCP header must name a
//! key of the (merged) `secrets` (400), and then every secret reference is checked against the
//! account (422), so any 400 wins over a 422 (§1.8).

use std::collections::BTreeMap;

use paddock_protocol::{DeploymentConfig, ErrorCode, Features, McpServer, Sandbox};
use paddock_store::DeploymentRecord;
use serde_json::Value;

use super::{
    NewDeployment, Validator, as_array, as_bool, as_object, as_str, body_object, chars, check_len,
    given, http_url, kind, required, required_string, type_error,
};
use crate::error::ApiError;

const MAX_CUSTOMER_ID: usize = 128;
const MAX_NAME: usize = 200;
const RUNTIMES: [&str; 2] = ["paddock", "hermes"];
const DOCKER: &str = "docker";
const MAX_IMAGE_CHARS: usize = 512;
const NETWORKS: [&str; 2] = ["none", "internet"];
const MIN_CPUS: f64 = 0.25;
const DEFAULT_CPUS: f64 = 1.0;
const MIN_MEMORY_MB: u32 = 256;
const DEFAULT_MEMORY_MB: u32 = 2048;
const FEATURE_FLAGS: [&str; 5] = [
    "memory",
    "dreaming",
    "automations",
    "steering",
    "filesystem_webhooks",
];
const MAX_MCP_SERVERS: usize = 20;
const MAX_MCP_NAME: usize = 32;
const MAX_MCP_TOOLS: usize = 200;
const MAX_MCP_HEADERS: usize = 20;
const MAX_HEADER_VALUE: usize = 4096;
/// Headers Paddock sets itself on MCP requests (spec §14.1), lowercase.
const FORBIDDEN_HEADERS: [&str; 7] = [
    "host",
    "content-length",
    "content-type",
    "accept",
    "mcp-session-id",
    "x-customer-id",
    "x-deployment-id",
];
const MAX_SECRETS: usize = 100;
const MAX_SECRET_KEY: usize = 128;
const MAX_TOOL_POLICIES: usize = 500;
const MAX_TOOL_NAME: usize = 64;
const TOOL_POLICIES: [&str; 2] = ["always_allow", "always_ask"];

/// Whether a body is a create (defaults underneath, `null` is "not given" or invalid) or an
/// update (the current configuration underneath, `null` removes a map key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Patch,
}

impl Validator<'_> {
    /// Validates a `POST /v1/deployments` body (spec §3.5) and fills in every default.
    ///
    /// 400 `validation_error` for a missing, mistyped or invalid field, a duplicate MCP server
    /// name, an unresolved `${NAME}` in an MCP header or an unconfigured model provider; then
    /// 422 `invalid_secret_ref` for a `secrets` value that is not a secret of this account
    /// (this version has no secrets store, so every reference is refused).
    pub fn deployment_create(&self, body: &Value) -> Result<NewDeployment, ApiError> {
        let obj = body_object(body)?;

        let customer_id = customer_id(required(
            obj,
            "customer_id",
            "customer_id",
            "your identifier for the customer, 1 to 128 printable ASCII characters",
        )?)?;
        let name = required_string(obj, "name", 1, MAX_NAME)?;
        let system_prompt =
            required_string(obj, "system_prompt", 1, self.settings.limits.content_chars)?;
        let model = match given(obj, "model") {
            Some(v) => self.model(v)?,
            None => self.settings.default_model.clone(),
        };
        let runtime = match given(obj, "runtime") {
            Some(v) => runtime(v)?,
            None => RUNTIMES[0].to_owned(),
        };
        let sandbox = match given(obj, "sandbox") {
            Some(v) => self.sandbox(v, self.default_sandbox())?,
            None => self.default_sandbox(),
        };
        let features = match given(obj, "features") {
            Some(v) => features(v, Features::default())?,
            None => Features::default(),
        };
        let mcp_servers = match given(obj, "mcp_servers") {
            Some(v) => mcp_servers(v)?,
            None => Vec::new(),
        };
        if let Some(v) = given(obj, "skills") {
            skills(v)?;
        }
        let (secrets, new_refs) = match given(obj, "secrets") {
            Some(v) => secrets(v, &BTreeMap::new(), Mode::Create)?,
            None => (BTreeMap::new(), Vec::new()),
        };
        let tool_policies = match given(obj, "tool_policies") {
            Some(v) => tool_policies(v, &BTreeMap::new(), Mode::Create)?,
            None => BTreeMap::new(),
        };

        check_header_refs(&mcp_servers, &secrets)?;
        check_secret_refs(self.secrets, &customer_id, &secrets, &new_refs)?;

        Ok(NewDeployment {
            customer_id,
            name,
            runtime,
            config: DeploymentConfig {
                model,
                system_prompt,
                sandbox,
                features,
                mcp_servers,
                skills: Vec::new(),
                secrets,
                tool_policies,
                disabled_tools: Default::default(),
            },
        })
    }

    /// Validates a `PATCH /v1/deployments/:dep` body (spec §3.7) and returns the deployment's
    /// new `(name, config)` after merging it into `current`. The body is validated in full
    /// before anything is returned, so on any error nothing is to be applied.
    ///
    /// - `name`, `system_prompt`, `model`: replaced under the create rules; `null` is a 400;
    /// - `sandbox`, `features`: merged per sub-field (`sandbox.image: null` resets the image;
    ///   changing `sandbox.type` away from `docker` without naming an image drops it);
    /// - `secrets`, `tool_policies`: merged per key, a key set to `null` is removed;
    /// - `mcp_servers`, `skills`: replaced whole (`null` is "not given");
    /// - `customer_id`, `runtime`: the current value is accepted, anything else is a 400.
    ///
    /// After merging, every `${NAME}` in MCP headers must still name a key of `secrets`.
    pub fn deployment_patch(
        &self,
        body: &Value,
        current: &DeploymentRecord,
    ) -> Result<(String, DeploymentConfig), ApiError> {
        let obj = body_object(body)?;
        let mut config = current.config.clone();

        if let Some(v) = obj.get("customer_id") {
            immutable(v, "customer_id", &current.customer_id)?;
        }
        let name = match obj.get("name") {
            Some(v) => replaced_string(v, "name", 1, MAX_NAME)?,
            None => current.name.clone(),
        };
        if let Some(v) = obj.get("system_prompt") {
            config.system_prompt =
                replaced_string(v, "system_prompt", 1, self.settings.limits.content_chars)?;
        }
        if let Some(v) = obj.get("model") {
            not_null(
                v,
                "model",
                &format!("a model such as `{}`", self.settings.default_model),
            )?;
            config.model = self.model(v)?;
        }
        if let Some(v) = obj.get("runtime") {
            immutable(v, "runtime", &current.runtime)?;
        }
        if let Some(v) = given(obj, "sandbox") {
            config.sandbox = self.sandbox(v, config.sandbox)?;
        }
        if let Some(v) = given(obj, "features") {
            config.features = features(v, config.features)?;
        }
        if let Some(v) = given(obj, "mcp_servers") {
            config.mcp_servers = mcp_servers(v)?;
        }
        if let Some(v) = given(obj, "skills") {
            skills(v)?;
        }
        let mut new_refs = Vec::new();
        if let Some(v) = given(obj, "secrets") {
            (config.secrets, new_refs) = secrets(v, &config.secrets, Mode::Patch)?;
        }
        if let Some(v) = given(obj, "tool_policies") {
            config.tool_policies = tool_policies(v, &config.tool_policies, Mode::Patch)?;
        }

        check_header_refs(&config.mcp_servers, &config.secrets)?;
        check_secret_refs(
            self.secrets,
            &current.customer_id,
            &config.secrets,
            &new_refs,
        )?;

        Ok((name, config))
    }

    /// The `sandbox` a deployment gets when it names none (spec §3.3), within the server's
    /// limits.
    fn default_sandbox(&self) -> Sandbox {
        Sandbox {
            enabled: true,
            kind: self.settings.sandbox_default.clone(),
            persistent_filesystem: true,
            image: None,
            cpus: DEFAULT_CPUS.min(self.settings.sandbox_max_cpus),
            memory_mb: DEFAULT_MEMORY_MB.min(self.settings.sandbox_max_memory_mb),
            network: NETWORKS[0].to_owned(),
        }
    }

    /// A non-null `model`: `provider/name`, usable on this server.
    fn model(&self, v: &Value) -> Result<String, ApiError> {
        let m = as_str(v, "model")?;
        if !m.contains('/') {
            return Err(ApiError::validation(
                "model",
                format!(
                    "`model` must look like provider/name (e.g. `{}`), got `{}`.",
                    self.settings.default_model,
                    m.chars().take(200).collect::<String>()
                ),
            ));
        }
        self.models
            .validate(m)
            .map_err(|e| ApiError::validation("model", e.to_string()))?;
        Ok(m.to_owned())
    }

    /// A non-null `sandbox` object, merged sub-field by sub-field over `base`.
    fn sandbox(&self, v: &Value, mut s: Sandbox) -> Result<Sandbox, ApiError> {
        let obj = as_object(v, "sandbox")?;
        let settings = self.settings;

        if let Some(v) = given(obj, "enabled") {
            s.enabled = as_bool(v, "sandbox.enabled")?;
        }
        let mut type_given = false;
        if let Some(v) = given(obj, "type") {
            let t = as_str(v, "sandbox.type")?;
            if !settings.sandbox_backends.iter().any(|b| b == t) {
                return Err(ApiError::validation(
                    "sandbox.type",
                    format!(
                        "`sandbox.type` `{}` is not enabled on this server; enabled: {}.",
                        t.chars().take(64).collect::<String>(),
                        list(settings.sandbox_backends.iter().map(String::as_str)),
                    ),
                ));
            }
            s.kind = t.to_owned();
            type_given = true;
        }
        if let Some(v) = given(obj, "persistent_filesystem") {
            s.persistent_filesystem = as_bool(v, "sandbox.persistent_filesystem")?;
        }
        match obj.get("image") {
            Some(Value::Null) => s.image = None,
            Some(v) => {
                let image = as_str(v, "sandbox.image")?;
                check_len(image, "sandbox.image", 1, MAX_IMAGE_CHARS)?;
                if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(ApiError::validation(
                        "sandbox.image",
                        "`sandbox.image` must be an image reference without spaces or control characters.",
                    ));
                }
                s.image = Some(image.to_owned());
            }
            // A new non-docker type drops the image the docker sandbox had.
            None if type_given && s.kind != DOCKER => s.image = None,
            None => {}
        }
        if s.image.is_some() && s.kind != DOCKER {
            return Err(ApiError::validation(
                "sandbox.image",
                format!(
                    "`sandbox.image` can only be set when `sandbox.type` is `docker`; it must be null for `{}`.",
                    s.kind
                ),
            ));
        }
        if let Some(v) = given(obj, "network") {
            let n = as_str(v, "sandbox.network")?;
            if !NETWORKS.contains(&n) {
                return Err(one_of("sandbox.network", n, &NETWORKS));
            }
            s.network = n.to_owned();
        }
        if let Some(v) = given(obj, "cpus") {
            let max = settings.sandbox_max_cpus;
            let c = v
                .as_f64()
                .ok_or_else(|| type_error("sandbox.cpus", "a number", v))?;
            if !(MIN_CPUS..=max).contains(&c) {
                return Err(ApiError::validation(
                    "sandbox.cpus",
                    format!("`sandbox.cpus` must be from {MIN_CPUS} to {max}, got {c}."),
                ));
            }
            s.cpus = c;
        }
        if let Some(v) = given(obj, "memory_mb") {
            let max = settings.sandbox_max_memory_mb;
            let out_of_range = || {
                ApiError::validation(
                    "sandbox.memory_mb",
                    format!(
                        "`sandbox.memory_mb` must be an integer from {MIN_MEMORY_MB} to {max}, got {v}."
                    ),
                )
            };
            let m = integer(v).ok_or_else(|| {
                if v.is_number() {
                    out_of_range()
                } else {
                    type_error("sandbox.memory_mb", "an integer", v)
                }
            })?;
            let m = u32::try_from(m)
                .ok()
                .filter(|m| (MIN_MEMORY_MB..=max).contains(m))
                .ok_or_else(out_of_range)?;
            s.memory_mb = m;
        }
        Ok(s)
    }
}

/// A JSON number with no fractional part (`512` or `512.0`).
fn integer(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    if v.is_u64() {
        return Some(i64::MAX);
    }
    let f = v.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// `a, b, c` for messages.
fn list<'s>(items: impl IntoIterator<Item = &'s str>) -> String {
    let v: Vec<&str> = items.into_iter().collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// "`param` must be one of a, b; got `x`."
fn one_of(param: &str, got: &str, allowed: &[&str]) -> ApiError {
    ApiError::validation(
        param,
        format!(
            "`{param}` must be one of {}; got `{}`.",
            list(allowed.iter().copied()),
            got.chars().take(64).collect::<String>()
        ),
    )
}

/// `customer_id`: 1–128 printable ASCII characters, no leading or trailing space.
pub(super) fn customer_id(v: &Value) -> Result<String, ApiError> {
    let p = "customer_id";
    let s = as_str(v, p)?;
    check_len(s, p, 1, MAX_CUSTOMER_ID)?;
    if !s.chars().all(|c| (' '..='~').contains(&c)) {
        return Err(ApiError::validation(
            p,
            "`customer_id` may contain only printable ASCII characters (0x20 to 0x7E).",
        ));
    }
    if s.starts_with(' ') || s.ends_with(' ') {
        return Err(ApiError::validation(
            p,
            "`customer_id` must not start or end with a space.",
        ));
    }
    Ok(s.to_owned())
}

/// `runtime`: `paddock` or its alias `hermes`, echoed as sent.
fn runtime(v: &Value) -> Result<String, ApiError> {
    let r = as_str(v, "runtime")?;
    if !RUNTIMES.contains(&r) {
        return Err(one_of("runtime", r, &RUNTIMES));
    }
    Ok(r.to_owned())
}

/// A PATCH field that may not be `null`.
fn not_null(v: &Value, param: &str, what: &str) -> Result<(), ApiError> {
    if v.is_null() {
        return Err(ApiError::validation(
            param,
            format!("`{param}` cannot be null: send {what}, or leave the field out to keep it."),
        ));
    }
    Ok(())
}

/// A PATCH string replaced under the create rules.
fn replaced_string(v: &Value, param: &str, min: usize, max: usize) -> Result<String, ApiError> {
    not_null(v, param, &format!("a string of {min} to {max} characters"))?;
    let s = as_str(v, param)?;
    check_len(s, param, min, max)?;
    Ok(s.to_owned())
}

/// An immutable field in a PATCH: the current value is accepted, anything else is a 400.
fn immutable(v: &Value, param: &str, current: &str) -> Result<(), ApiError> {
    if v.as_str() == Some(current) {
        return Ok(());
    }
    if !v.is_string() && !v.is_null() {
        return Err(type_error(param, "a string", v));
    }
    Err(ApiError::validation(
        param,
        format!("`{param}` cannot be changed; this deployment's is `{current}`."),
    ))
}

/// A non-null `features` object, merged flag by flag over `f`.
fn features(v: &Value, mut f: Features) -> Result<Features, ApiError> {
    let obj = as_object(v, "features")?;
    for flag in FEATURE_FLAGS {
        let Some(v) = given(obj, flag) else { continue };
        let on = as_bool(v, &format!("features.{flag}"))?;
        match flag {
            "memory" => f.memory = on,
            "dreaming" => f.dreaming = on,
            "automations" => f.automations = on,
            "steering" => f.steering = on,
            _ => f.filesystem_webhooks = on,
        }
    }
    if let Some(unknown) = obj.keys().find(|k| !FEATURE_FLAGS.contains(&k.as_str())) {
        return Err(ApiError::validation(
            format!("features.{unknown}"),
            format!(
                "Unknown feature flag `{}`; the flags are {}.",
                unknown.chars().take(64).collect::<String>(),
                list(FEATURE_FLAGS)
            ),
        ));
    }
    Ok(f)
}

/// A non-null `skills` array: its shape only (spec §12.2). Loading the entries (fetching,
/// reading, checking SKILL.md) is async and happens in the route, which also sets
/// `config.skills` from what it stored.
fn skills(v: &Value) -> Result<(), ApiError> {
    crate::skills::entries(v).map(|_| ())
}

/// A non-null `mcp_servers` array (spec §14.1).
fn mcp_servers(v: &Value) -> Result<Vec<McpServer>, ApiError> {
    let arr = as_array(v, "mcp_servers")?;
    if arr.len() > MAX_MCP_SERVERS {
        return Err(ApiError::validation(
            "mcp_servers",
            format!(
                "A deployment may have at most {MAX_MCP_SERVERS} MCP servers, got {}.",
                arr.len()
            ),
        ));
    }
    let mut out: Vec<McpServer> = Vec::with_capacity(arr.len());
    for (i, entry) in arr.iter().enumerate() {
        let p = format!("mcp_servers[{i}]");
        let obj = as_object(entry, &p)?;

        let name_p = format!("{p}.name");
        let name = as_str(
            required(
                obj,
                "name",
                &name_p,
                "1 to 32 characters of A-Z, a-z, 0-9, `_` and `-`",
            )?,
            &name_p,
        )?;
        mcp_name(name, &name_p)?;
        if let Some(j) = out.iter().position(|s| s.name == name) {
            return Err(ApiError::validation(
                name_p,
                format!(
                    "Duplicate MCP server name `{name}` (also mcp_servers[{j}]); names must be unique."
                ),
            ));
        }

        let url_p = format!("{p}.url");
        let url = as_str(
            required(obj, "url", &url_p, "an http or https URL")?,
            &url_p,
        )?;
        http_url(url, &url_p)?;

        let tools = match given(obj, "tools") {
            Some(v) => Some(mcp_tools(v, &format!("{p}.tools"))?),
            None => None,
        };
        let headers = match given(obj, "headers") {
            Some(v) => mcp_headers(v, &format!("{p}.headers"))?,
            None => BTreeMap::new(),
        };
        out.push(McpServer {
            name: name.to_owned(),
            url: url.to_owned(),
            tools,
            headers,
        });
    }
    Ok(out)
}

/// An MCP server `name`: 1–32 of `[A-Za-z0-9_-]`, no `__`, no leading or trailing `_`, not
/// `builtin`.
fn mcp_name(name: &str, p: &str) -> Result<(), ApiError> {
    check_len(name, p, 1, MAX_MCP_NAME)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ApiError::validation(
            p,
            format!("`{p}` may contain only A-Z, a-z, 0-9, `_` and `-`."),
        ));
    }
    if name.contains("__") {
        return Err(ApiError::validation(
            p,
            format!("`{p}` must not contain `__` (it separates server and tool in tool names)."),
        ));
    }
    if name.starts_with('_') || name.ends_with('_') {
        return Err(ApiError::validation(
            p,
            format!("`{p}` must not start or end with `_`."),
        ));
    }
    if name == "builtin" {
        return Err(ApiError::validation(
            p,
            format!("`{p}` must not be `builtin`, which names Paddock's own tools."),
        ));
    }
    Ok(())
}

/// A non-null MCP `tools` list: at most 200 strings.
fn mcp_tools(v: &Value, p: &str) -> Result<Vec<String>, ApiError> {
    let arr = as_array(v, p)?;
    if arr.len() > MAX_MCP_TOOLS {
        return Err(ApiError::validation(
            p,
            format!(
                "`{p}` may list at most {MAX_MCP_TOOLS} tools, got {}.",
                arr.len()
            ),
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(j, t)| {
            let tp = format!("{p}[{j}]");
            let t = as_str(t, &tp)?;
            if t.is_empty() {
                return Err(ApiError::validation(
                    tp,
                    "Tool names must not be empty.".to_owned(),
                ));
            }
            Ok(t.to_owned())
        })
        .collect()
}

/// A non-null MCP `headers` object: at most 20, valid names Paddock does not set itself,
/// string values of at most 4,096 characters that are well-formed templates.
fn mcp_headers(v: &Value, p: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let obj = as_object(v, p)?;
    if obj.len() > MAX_MCP_HEADERS {
        return Err(ApiError::validation(
            p,
            format!(
                "`{p}` may have at most {MAX_MCP_HEADERS} headers, got {}.",
                obj.len()
            ),
        ));
    }
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in obj {
        let hp = format!("{p}.{name}");
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::validation(
                hp,
                "Not a valid HTTP header name: use letters, digits and !#$%&'*+-.^_`|~ only.",
            ));
        }
        let lower = name.to_ascii_lowercase();
        if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
            return Err(ApiError::validation(
                hp,
                format!(
                    "The header `{name}` is set by Paddock and cannot be configured; these cannot be set: Host, Content-Length, Content-Type, Accept, Mcp-Session-Id, X-Customer-Id, X-Deployment-Id."
                ),
            ));
        }
        if let Some(other) = out.keys().find(|k| k.eq_ignore_ascii_case(name)) {
            return Err(ApiError::validation(
                hp,
                format!(
                    "The header `{name}` is given twice (also as `{other}`); header names are case-insensitive."
                ),
            ));
        }
        let value = as_str(value, &hp)?;
        let n = chars(value);
        if n > MAX_HEADER_VALUE {
            return Err(ApiError::validation(
                &hp,
                format!("`{hp}` must be at most {MAX_HEADER_VALUE} characters long, got {n}."),
            ));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ApiError::validation(
                &hp,
                format!("`{hp}` must not contain control characters such as line breaks."),
            ));
        }
        template_refs(value).map_err(|e| ApiError::validation(&hp, e.message(&hp)))?;
        out.insert(name.clone(), value.to_owned());
    }
    Ok(out)
}

/// Why a header template (spec §14.3) is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TemplateError {
    /// `${` with no closing `}`.
    Unterminated,
    /// `${}`.
    EmptyName,
}

impl TemplateError {
    fn message(self, param: &str) -> String {
        match self {
            TemplateError::Unterminated => format!(
                "`{param}` has a `${{` without a closing `}}`; write `${{NAME}}` to use a secret, or `$$` for a literal `$`."
            ),
            TemplateError::EmptyName => format!(
                "`{param}` has an empty `${{}}`; write `${{NAME}}` with NAME a key of `secrets`, or `$$` for a literal `$`."
            ),
        }
    }
}

/// The secret names a header template refers to, in order. `${NAME}` is a reference, `$$` a
/// literal `$`, and any other `$` is literal.
fn template_refs(s: &str) -> Result<Vec<&str>, TemplateError> {
    let mut refs = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        let after = rest.get(at + 1..).unwrap_or("");
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(TemplateError::Unterminated)?;
            let name = tail.get(..end).unwrap_or("");
            if name.is_empty() {
                return Err(TemplateError::EmptyName);
            }
            refs.push(name);
            rest = tail.get(end + 1..).unwrap_or("");
        } else {
            rest = after;
        }
    }
    Ok(refs)
}

/// Whether `k` matches `^[A-Z_][A-Z0-9_]{0,127}$`.
fn secret_key_ok(k: &str) -> bool {
    let mut cs = k.chars();
    let Some(first) = cs.next() else { return false };
    (first.is_ascii_uppercase() || first == '_')
        && k.len() <= MAX_SECRET_KEY
        && cs.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `v` has the shape of a secret id: `sec_` plus an opaque id part (spec §1.5).
fn secret_id_shaped(v: &str) -> bool {
    v.len() > "sec_".len() && v.starts_with("sec_") && paddock_protocol::ids::is_id_shaped(v)
}

/// A non-null `secrets` object merged over `base`; returns the merged map and the keys this
/// body sets (whose references must still be checked against the account).
fn secrets(
    v: &Value,
    base: &BTreeMap<String, String>,
    mode: Mode,
) -> Result<(BTreeMap<String, String>, Vec<String>), ApiError> {
    let obj = as_object(v, "secrets")?;
    let too_many = |n: usize| {
        ApiError::validation(
            "secrets",
            format!("A deployment may have at most {MAX_SECRETS} secrets, got {n}."),
        )
    };
    if mode == Mode::Create && obj.len() > MAX_SECRETS {
        return Err(too_many(obj.len()));
    }
    let mut merged = base.clone();
    let mut set = Vec::new();
    for (k, value) in obj {
        let p = format!("secrets.{k}");
        if !secret_key_ok(k) {
            return Err(ApiError::validation(
                p,
                "Secret names must match ^[A-Z_][A-Z0-9_]{0,127}$ (upper-case letters, digits and `_`, not starting with a digit).",
            ));
        }
        match value {
            Value::Null if mode == Mode::Patch => {
                merged.remove(k);
            }
            Value::String(id) if secret_id_shaped(id) => {
                merged.insert(k.clone(), id.clone());
                set.push(k.clone());
            }
            Value::String(_) => {
                return Err(ApiError::validation(
                    p.clone(),
                    format!("`{p}` must be a secret id (`sec_…`, from POST /v1/secrets)."),
                ));
            }
            other => {
                let expected = if mode == Mode::Patch {
                    "a secret id (`sec_…`), or null to remove the key"
                } else {
                    "a secret id (`sec_…`)"
                };
                return Err(type_error(&p, expected, other));
            }
        }
    }
    if merged.len() > MAX_SECRETS {
        return Err(too_many(merged.len()));
    }
    Ok((merged, set))
}

/// A non-null `tool_policies` object merged over `base`.
fn tool_policies(
    v: &Value,
    base: &BTreeMap<String, String>,
    mode: Mode,
) -> Result<BTreeMap<String, String>, ApiError> {
    let obj = as_object(v, "tool_policies")?;
    let too_many = |n: usize| {
        ApiError::validation(
            "tool_policies",
            format!("A deployment may have at most {MAX_TOOL_POLICIES} tool policies, got {n}."),
        )
    };
    if mode == Mode::Create && obj.len() > MAX_TOOL_POLICIES {
        return Err(too_many(obj.len()));
    }
    let mut merged = base.clone();
    for (k, value) in obj {
        let p = format!("tool_policies.{k}");
        let n = chars(k);
        if n == 0
            || n > MAX_TOOL_NAME
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ApiError::validation(
                p,
                format!(
                    "Tool policy keys are model-facing tool names: 1 to {MAX_TOOL_NAME} characters of A-Z, a-z, 0-9, `_` and `-`."
                ),
            ));
        }
        match value {
            Value::Null if mode == Mode::Patch => {
                merged.remove(k);
            }
            Value::String(policy) if TOOL_POLICIES.contains(&policy.as_str()) => {
                merged.insert(k.clone(), policy.clone());
            }
            Value::String(policy) => return Err(one_of(&p, policy, &TOOL_POLICIES)),
            other => {
                return Err(ApiError::validation(
                    p.clone(),
                    format!(
                        "`{p}` must be `always_allow` or `always_ask`{}, got {}.",
                        if mode == Mode::Patch {
                            ", or null to remove it"
                        } else {
                            ""
                        },
                        kind(other)
                    ),
                ));
            }
        }
    }
    if merged.len() > MAX_TOOL_POLICIES {
        return Err(too_many(merged.len()));
    }
    Ok(merged)
}

/// Every `${NAME}` in the MCP headers must name a key of `secrets` (spec §14.3).
fn check_header_refs(
    servers: &[McpServer],
    secrets: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    for (i, server) in servers.iter().enumerate() {
        for (header, value) in &server.headers {
            let p = format!("mcp_servers[{i}].headers.{header}");
            let refs = template_refs(value).map_err(|e| ApiError::validation(&p, e.message(&p)))?;
            if let Some(missing) = refs.into_iter().find(|name| !secrets.contains_key(*name)) {
                return Err(ApiError::validation(
                    p.clone(),
                    format!(
                        "`{p}` uses `${{{}}}`, which is not a key of this deployment's `secrets` (keys: {}); add it to `secrets`, or write `$$` for a literal `$`.",
                        missing.chars().take(128).collect::<String>(),
                        list(secrets.keys().map(String::as_str)),
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The references this body sets must be secrets of the account and, when a secret is bound
/// to a customer, of this deployment's customer (spec §15.2). `known` holds the account's
/// secrets among the referenced ids (id → bound `customer_id`); without it no id is known.
fn check_secret_refs(
    known: Option<&super::SecretRefs>,
    customer_id: &str,
    secrets: &BTreeMap<String, String>,
    keys: &[String],
) -> Result<(), ApiError> {
    for key in keys {
        let id = secrets.get(key).map(String::as_str).unwrap_or_default();
        let refused = |message: String| {
            ApiError::new(ErrorCode::InvalidSecretRef, message).with_param(format!("secrets.{key}"))
        };
        match known.and_then(|k| k.get(id)) {
            None => return Err(refused(format!("`{id}` is not a secret of this account."))),
            Some(Some(bound)) if bound != customer_id => {
                return Err(refused(format!(
                    "Secret `{id}` is bound to another customer; only deployments with that `customer_id` may reference it."
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
