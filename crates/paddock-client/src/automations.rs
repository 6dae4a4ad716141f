//! Automations (spec §9).

use paddock_protocol::{Automation, AutomationDeleted, AutomationTriggered, Page};
use reqwest::Method;
use serde::Serialize;

use crate::{Client, ClientError, PageQuery, seg};

fn path(deployment_id: &str) -> String {
    format!("/v1/deployments/{}/automations", seg(deployment_id))
}

fn one(deployment_id: &str, automation_id: &str) -> String {
    format!("{}/{}", path(deployment_id), seg(automation_id))
}

impl Client {
    /// `POST /v1/deployments/:dep/automations`: creates an automation from `body` (`name`,
    /// `schedule`, `instructions`, optional `thread_id` and `enabled`).
    pub async fn create_automation<B: Serialize + ?Sized>(
        &self,
        deployment_id: &str,
        body: &B,
    ) -> Result<Automation, ClientError> {
        self.send_body(Method::POST, &path(deployment_id), body)
            .await
    }

    /// `GET /v1/deployments/:dep/automations`: one page, newest first.
    pub async fn list_automations(
        &self,
        deployment_id: &str,
        page: &PageQuery,
    ) -> Result<Page<Automation>, ClientError> {
        self.get_json(&path(deployment_id), page).await
    }

    /// `GET /v1/deployments/:dep/automations/:id`: the automation with `runs` (its latest 20).
    pub async fn get_automation(
        &self,
        deployment_id: &str,
        automation_id: &str,
    ) -> Result<Automation, ClientError> {
        self.get_json(&one(deployment_id, automation_id), &()).await
    }

    /// `PATCH /v1/deployments/:dep/automations/:id`: merges `body` into the automation.
    pub async fn update_automation<B: Serialize + ?Sized>(
        &self,
        deployment_id: &str,
        automation_id: &str,
        body: &B,
    ) -> Result<Automation, ClientError> {
        self.send_body(Method::PATCH, &one(deployment_id, automation_id), body)
            .await
    }

    /// `DELETE /v1/deployments/:dep/automations/:id`.
    pub async fn delete_automation(
        &self,
        deployment_id: &str,
        automation_id: &str,
    ) -> Result<AutomationDeleted, ClientError> {
        self.send(self.raw(Method::DELETE, &one(deployment_id, automation_id)))
            .await
    }

    /// `POST /v1/deployments/:dep/automations/:id/trigger`: runs it now (`trigger: "manual"`).
    pub async fn trigger_automation(
        &self,
        deployment_id: &str,
        automation_id: &str,
    ) -> Result<AutomationTriggered, ClientError> {
        let path = format!("{}/trigger", one(deployment_id, automation_id));
        self.send(self.raw(Method::POST, &path)).await
    }
}
