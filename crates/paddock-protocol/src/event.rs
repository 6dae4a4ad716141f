//! Events on a deployment's SSE stream (spec §7.4).

use serde::{Deserialize, Serialize};

/// The event types Paddock emits. Clients must ignore types they do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Message,
    RunStatus,
    Token,
    ToolCall,
    ToolResult,
    SteeringRequest,
    SteeringResolved,
    Filesystem,
    ReplayTruncated,
    /// Paddock's own addition (clients ignore unknown types, spec §7.4): older turns of a
    /// thread were summarised so the conversation fits the model's context window.
    Compaction,
}

impl EventType {
    /// Every type, for validating `types=` filters.
    pub const ALL: [EventType; 10] = [
        EventType::Message,
        EventType::RunStatus,
        EventType::Token,
        EventType::ToolCall,
        EventType::ToolResult,
        EventType::SteeringRequest,
        EventType::SteeringResolved,
        EventType::Filesystem,
        EventType::ReplayTruncated,
        EventType::Compaction,
    ];

    /// The `event:` name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Message => "message",
            EventType::RunStatus => "run_status",
            EventType::Token => "token",
            EventType::ToolCall => "tool_call",
            EventType::ToolResult => "tool_result",
            EventType::SteeringRequest => "steering_request",
            EventType::SteeringResolved => "steering_resolved",
            EventType::Filesystem => "filesystem",
            EventType::ReplayTruncated => "replay_truncated",
            EventType::Compaction => "compaction",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// An event as committed to a deployment's log: its per-deployment sequence number (the `n` of
/// `evt_<n>`), type, the thread and run it belongs to, and its `data` object.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub deployment_id: String,
    pub kind: EventType,
    pub thread_id: Option<String>,
    pub run_id: Option<String>,
    /// The JSON text of `data`, serialised once when the event is appended.
    pub data: String,
    pub created_at: i64,
}

/// Builders for the `data` objects of events whose shape more than one crate writes.
pub mod payload {
    use serde_json::{Map, Value, json};

    use crate::{ErrorInfo, RunUsage};

    /// `run_status` data (spec §7.4). `reason` only on `running`; `error` on `error`;
    /// `usage` on `completed` and `error`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_status(
        run_id: &str,
        thread_id: Option<&str>,
        status: &str,
        trigger: &str,
        automation_id: Option<&str>,
        reason: Option<&str>,
        error: Option<&ErrorInfo>,
        usage: Option<&RunUsage>,
    ) -> Value {
        let mut m = Map::new();
        m.insert("run_id".into(), json!(run_id));
        m.insert("thread_id".into(), json!(thread_id));
        m.insert("status".into(), json!(status));
        m.insert("trigger".into(), json!(trigger));
        if let Some(a) = automation_id {
            m.insert("automation_id".into(), json!(a));
        }
        if let Some(r) = reason {
            m.insert("reason".into(), json!(r));
        }
        if let Some(e) = error {
            m.insert("error".into(), json!(e));
        }
        if let Some(u) = usage {
            m.insert("usage".into(), json!(u));
        }
        Value::Object(m)
    }

    /// `tool_result` data (spec §7.4).
    #[allow(clippy::too_many_arguments)]
    pub fn tool_result(
        run_id: &str,
        thread_id: Option<&str>,
        step: i64,
        call_id: &str,
        tool: &str,
        origin: &str,
        result: &Value,
        is_error: bool,
        truncated: bool,
        output_path: Option<&str>,
    ) -> Value {
        let mut v = json!({
            "run_id": run_id, "thread_id": thread_id, "step": step, "call_id": call_id,
            "tool": tool, "origin": origin, "result": result, "is_error": is_error,
            "truncated": truncated,
        });
        if let (Some(p), Value::Object(m)) = (output_path, &mut v) {
            m.insert("output_path".into(), json!(p));
        }
        v
    }

    /// `steering_request` data (spec §7.4): `tool`, `origin` and `arguments` only for
    /// `kind: "tool_call"`.
    pub fn steering_request(
        run_id: &str,
        thread_id: Option<&str>,
        request: &crate::SteeringRequest,
    ) -> Value {
        let mut m = Map::new();
        m.insert("run_id".into(), json!(run_id));
        m.insert("thread_id".into(), json!(thread_id));
        m.insert("request_id".into(), json!(request.request_id));
        m.insert("kind".into(), json!(request.kind));
        m.insert("summary".into(), json!(request.summary));
        m.insert("call_id".into(), json!(request.call_id));
        if let Some(t) = &request.tool {
            m.insert("tool".into(), json!(t));
        }
        if let Some(o) = &request.origin {
            m.insert("origin".into(), json!(o));
        }
        if let Some(a) = &request.arguments {
            m.insert("arguments".into(), a.clone());
        }
        Value::Object(m)
    }

    /// `steering_resolved` data (spec §7.4); `message` only when the answer had one.
    pub fn steering_resolved(
        run_id: &str,
        thread_id: Option<&str>,
        request_id: &str,
        decision: &str,
        message: Option<&str>,
    ) -> Value {
        let mut m = Map::new();
        m.insert("run_id".into(), json!(run_id));
        m.insert("thread_id".into(), json!(thread_id));
        m.insert("request_id".into(), json!(request_id));
        m.insert("decision".into(), json!(decision));
        if let Some(text) = message {
            m.insert("message".into(), json!(text));
        }
        Value::Object(m)
    }
}
