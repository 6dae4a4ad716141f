//! Deployments, messages, runs, steering and threads (spec §3–§6, §8).

use paddock_protocol::{
    Attachment, Deployment, DeploymentDeleted, DeploymentSummary, MessageAccepted, Page, Run,
    Thread, ThreadWithMessages,
};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{Client, ClientError, PageQuery, seg};

/// Filters and paging of `GET /v1/deployments` (spec §3.6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListDeploymentsQuery {
    /// Only deployments of this customer (exact match).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Only deployments in this status (`provisioning`, `ready`, `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Items per page (1–100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Filters and paging of `GET /v1/deployments/:dep/runs` (spec §5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListRunsQuery {
    /// Only runs on this thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Only runs in this status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only runs started by this automation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automation_id: Option<String>,
    /// Only runs with this trigger (`message`, `schedule`, `manual`, `dreaming`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Items per page (1–100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `/v1/deployments/<dep>` with the id encoded.
fn dep_path(deployment_id: &str) -> String {
    format!("/v1/deployments/{}", seg(deployment_id))
}

impl Client {
    /// `POST /v1/deployments`: creates a deployment from `body` (any JSON object, typically a
    /// `serde_json::json!` literal) and returns it, normally still `provisioning`.
    pub async fn create_deployment<B: Serialize + ?Sized>(
        &self,
        body: &B,
    ) -> Result<Deployment, ClientError> {
        self.send_body(Method::POST, "/v1/deployments", body).await
    }

    /// `GET /v1/deployments/:dep`: the full deployment object.
    pub async fn get_deployment(&self, deployment_id: &str) -> Result<Deployment, ClientError> {
        self.get_json(&dep_path(deployment_id), &()).await
    }

    /// `GET /v1/deployments`: one page of deployment summaries, newest first.
    pub async fn list_deployments(
        &self,
        query: &ListDeploymentsQuery,
    ) -> Result<Page<DeploymentSummary>, ClientError> {
        self.get_json("/v1/deployments", query).await
    }

    /// `PATCH /v1/deployments/:dep`: applies the partial update `body` and returns the result.
    pub async fn update_deployment<B: Serialize + ?Sized>(
        &self,
        deployment_id: &str,
        body: &B,
    ) -> Result<Deployment, ClientError> {
        self.send_body(Method::PATCH, &dep_path(deployment_id), body)
            .await
    }

    /// `DELETE /v1/deployments/:dep`: deletes the deployment; with `retain_filesystem` the
    /// server archives the workspace first (the query parameter is sent only when `true`).
    pub async fn delete_deployment(
        &self,
        deployment_id: &str,
        retain_filesystem: bool,
    ) -> Result<DeploymentDeleted, ClientError> {
        let mut req = self.raw(Method::DELETE, &dep_path(deployment_id));
        if retain_filesystem {
            req = req.query(&[("retain_filesystem", "true")]);
        }
        self.send(req).await
    }

    /// `POST /v1/deployments/:dep/messages`: sends `content` to `thread_id` (the default thread
    /// when `None`, or `"new"`), with optional media attachments. Returns the run it went to.
    pub async fn send_message(
        &self,
        deployment_id: &str,
        content: &str,
        thread_id: Option<&str>,
        attachments: &[Attachment],
    ) -> Result<MessageAccepted, ClientError> {
        let mut body = Map::new();
        body.insert("content".into(), json!(content));
        if let Some(t) = thread_id {
            body.insert("thread_id".into(), json!(t));
        }
        if !attachments.is_empty() {
            body.insert("attachments".into(), json!(attachments));
        }
        self.send_message_with(deployment_id, &Value::Object(body))
            .await
    }

    /// `POST /v1/deployments/:dep/messages` with an arbitrary JSON `body`, for requests
    /// [`Client::send_message`] cannot express (missing or mistyped fields).
    pub async fn send_message_with<B: Serialize + ?Sized>(
        &self,
        deployment_id: &str,
        body: &B,
    ) -> Result<MessageAccepted, ClientError> {
        let path = format!("{}/messages", dep_path(deployment_id));
        self.send_body(Method::POST, &path, body).await
    }

    /// `GET /v1/deployments/:dep/runs/:run_id`: one run.
    pub async fn get_run(&self, deployment_id: &str, run_id: &str) -> Result<Run, ClientError> {
        let path = format!("{}/runs/{}", dep_path(deployment_id), seg(run_id));
        self.get_json(&path, &()).await
    }

    /// `GET /v1/deployments/:dep/runs`: one page of full run objects, newest first.
    pub async fn list_runs(
        &self,
        deployment_id: &str,
        query: &ListRunsQuery,
    ) -> Result<Page<Run>, ClientError> {
        let path = format!("{}/runs", dep_path(deployment_id));
        self.get_json(&path, query).await
    }

    /// `POST /v1/deployments/:dep/runs/:run_id/cancel`: cancels an active run and returns it
    /// (`status: "error"`, `error.code: "cancelled"`).
    pub async fn cancel_run(&self, deployment_id: &str, run_id: &str) -> Result<Run, ClientError> {
        let path = format!("{}/runs/{}/cancel", dep_path(deployment_id), seg(run_id));
        self.send(self.raw(Method::POST, &path)).await
    }

    /// `POST /v1/deployments/:dep/runs/:run_id/steering`: answers the pending steering request
    /// `request_id` with `decision` (`approve` or `reject`) and an optional `message`.
    pub async fn respond_steering(
        &self,
        deployment_id: &str,
        run_id: &str,
        request_id: &str,
        decision: &str,
        message: Option<&str>,
    ) -> Result<Run, ClientError> {
        let path = format!("{}/runs/{}/steering", dep_path(deployment_id), seg(run_id));
        let mut body = json!({ "request_id": request_id, "decision": decision });
        if let (Some(m), Value::Object(map)) = (message, &mut body) {
            map.insert("message".into(), json!(m));
        }
        self.send_body(Method::POST, &path, &body).await
    }

    /// `POST /v1/deployments/:dep/threads`: creates a thread with an optional `title`.
    pub async fn create_thread(
        &self,
        deployment_id: &str,
        title: Option<&str>,
    ) -> Result<Thread, ClientError> {
        let path = format!("{}/threads", dep_path(deployment_id));
        let body = match title {
            Some(t) => json!({ "title": t }),
            None => json!({}),
        };
        self.send_body(Method::POST, &path, &body).await
    }

    /// `GET /v1/deployments/:dep/threads`: one page of threads, newest first.
    pub async fn list_threads(
        &self,
        deployment_id: &str,
        page: &PageQuery,
    ) -> Result<Page<Thread>, ClientError> {
        let path = format!("{}/threads", dep_path(deployment_id));
        self.get_json(&path, page).await
    }

    /// `GET /v1/deployments/:dep/threads/:thread_id`: the thread plus the newest
    /// `messages_limit` (1–500, server default 100) messages older than `messages_before`.
    pub async fn get_thread(
        &self,
        deployment_id: &str,
        thread_id: &str,
        messages_limit: Option<u32>,
        messages_before: Option<&str>,
    ) -> Result<ThreadWithMessages, ClientError> {
        #[derive(Serialize)]
        struct Query<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            messages_limit: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            messages_before: Option<&'a str>,
        }
        let path = format!("{}/threads/{}", dep_path(deployment_id), seg(thread_id));
        let query = Query {
            messages_limit,
            messages_before,
        };
        self.get_json(&path, &query).await
    }

    /// `PATCH /v1/deployments/:dep/threads/:thread_id`: sets the title (`None` clears it).
    pub async fn update_thread(
        &self,
        deployment_id: &str,
        thread_id: &str,
        title: Option<&str>,
    ) -> Result<Thread, ClientError> {
        let path = format!("{}/threads/{}", dep_path(deployment_id), seg(thread_id));
        self.send_body(Method::PATCH, &path, &json!({ "title": title }))
            .await
    }

    /// `DELETE /v1/deployments/:dep/threads/:thread_id`: deletes the thread, its messages and
    /// runs. Returns `{"thread_id": …, "status": "deleted"}`.
    pub async fn delete_thread(
        &self,
        deployment_id: &str,
        thread_id: &str,
    ) -> Result<Value, ClientError> {
        let path = format!("{}/threads/{}", dep_path(deployment_id), seg(thread_id));
        self.send(self.raw(Method::DELETE, &path)).await
    }
}
