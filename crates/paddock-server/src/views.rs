//! Store records rendered as the wire objects of the spec. The only place that decides how a
//! record looks to a client.

use paddock_protocol::time::format_unix;
use paddock_protocol::{
    Account, ApiKey, Deployment, DeploymentSummary, EventsInfo, FilesystemInfo, Message, Run,
    Thread,
};
use paddock_store::{
    AccountRecord, DeploymentRecord, KeyRecord, MessageRecord, RunRecord, ThreadRecord,
};

/// Micro-credits (what the store keeps) as credits on the wire.
pub(crate) fn credits(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

pub(crate) fn deployment(d: &DeploymentRecord, public_url: &str) -> Deployment {
    let c = &d.config;
    Deployment {
        deployment_id: d.id.clone(),
        customer_id: d.customer_id.clone(),
        name: d.name.clone(),
        runtime: d.runtime.clone(),
        status: d.status.clone(),
        error: d.error.clone(),
        model: c.model.clone(),
        system_prompt: c.system_prompt.clone(),
        thread_id: d.default_thread_id.clone(),
        sandbox: c.sandbox.clone(),
        features: c.features.clone(),
        mcp_servers: c.mcp_servers.clone(),
        skills: c.skills.clone(),
        secrets: c.secrets.clone(),
        tool_policies: c.tool_policies.clone(),
        filesystem: FilesystemInfo {
            workspace_path: "/workspace".to_owned(),
            persistent: c.sandbox.persistent_filesystem,
        },
        events: EventsInfo {
            transport: "sse".to_owned(),
            url: format!("{public_url}/v1/deployments/{}/events", d.id),
        },
        created_at: format_unix(d.created_at),
        updated_at: format_unix(d.updated_at),
    }
}

pub(crate) fn deployment_summary(d: &DeploymentRecord) -> DeploymentSummary {
    DeploymentSummary {
        deployment_id: d.id.clone(),
        customer_id: d.customer_id.clone(),
        name: d.name.clone(),
        runtime: d.runtime.clone(),
        status: d.status.clone(),
        model: d.config.model.clone(),
        created_at: format_unix(d.created_at),
    }
}

pub(crate) fn thread(t: &ThreadRecord) -> Thread {
    Thread {
        thread_id: t.id.clone(),
        deployment_id: t.deployment_id.clone(),
        title: t.title.clone(),
        status: t.status.clone(),
        is_default: t.is_default,
        automation_id: t.automation_id.clone(),
        message_count: t.message_count,
        created_at: format_unix(t.created_at),
        last_activity_at: format_unix(t.last_activity_at),
    }
}

pub(crate) fn message(m: &MessageRecord) -> Message {
    Message {
        message_id: m.id.clone(),
        role: m.role.clone(),
        content: m.content.clone(),
        run_id: m.run_id.clone(),
        attachments: m.attachments.clone(),
        automation_id: m.automation_id.clone(),
        created_at: format_unix(m.created_at),
    }
}

pub(crate) fn run(r: &RunRecord) -> Run {
    Run {
        run_id: r.id.clone(),
        deployment_id: r.deployment_id.clone(),
        thread_id: r.thread_id.clone(),
        status: r.status.clone(),
        trigger: r.trigger.clone(),
        automation_id: r.automation_id.clone(),
        model: r.model.clone(),
        steering_request: r.steering_request.clone(),
        error: r.error.clone(),
        warnings: r.warnings.clone(),
        usage: r.usage,
        created_at: format_unix(r.created_at),
        updated_at: format_unix(r.updated_at),
        finished_at: r.finished_at.map(format_unix),
    }
}

pub(crate) fn account(a: &AccountRecord) -> Account {
    Account {
        account_id: a.id.clone(),
        name: a.name.clone(),
        balance: a.balance_micros.map(credits),
        created_at: format_unix(a.created_at),
    }
}

/// A key as listed; `text` only in the create response.
pub(crate) fn key(k: &KeyRecord, text: Option<String>, now: i64) -> ApiKey {
    let status = if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    };
    ApiKey {
        key_id: k.id.clone(),
        key: text,
        prefix: k.prefix.clone(),
        name: k.name.clone(),
        account_id: k.account_id.clone(),
        scopes: k.scopes.clone(),
        status: status.to_owned(),
        created_at: format_unix(k.created_at),
        last_used_at: k.last_used_at.map(format_unix),
        expires_at: k.expires_at.map(format_unix),
        revoked_at: k.revoked_at.map(format_unix),
    }
}
