//! Deployment provisioning (spec §3.2): create answers at once with `provisioning`; this makes
//! the workspace in the background and moves the deployment to `ready` (or `error`). Also the
//! workspace's removal or archiving when a deployment is deleted.

use std::time::Duration;

use paddock_protocol::ErrorInfo;
use paddock_protocol::time::now_unix;
use paddock_store::{DeploymentRecord, StoreError};

use crate::state::AppState;

/// Provisions `deployment` in the background.
pub(crate) fn start(state: &AppState, deployment: DeploymentRecord) {
    let state = state.clone();
    tokio::spawn(async move {
        provision(&state, deployment).await;
    });
}

/// Finishes provisioning of deployments left `provisioning` by a previous process.
pub(crate) async fn resume(state: &AppState) -> Result<(), StoreError> {
    for d in state.store.provisioning_deployments().await? {
        start(state, d);
    }
    Ok(())
}

async fn provision(state: &AppState, mut deployment: DeploymentRecord) {
    let root = state.settings.workspaces_dir().join(&deployment.id);
    let timeout = state.settings.provisioning_timeout;
    let outcome = tokio::time::timeout(timeout, async {
        prepare_workspace(root)
            .await
            .map_err(|e| format!("could not create the workspace: {e}"))?;
        if deployment.config.sandbox.enabled {
            prepare_sandbox(state, &deployment).await?;
        }
        Ok::<(), String>(())
    })
    .await;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!(
            "provisioning took longer than {} seconds",
            timeout.as_secs()
        )),
    };
    // Re-read: the deployment may have been updated (or deleted) meanwhile; only its status
    // changes here.
    let current = match state
        .store
        .get_deployment(&deployment.account_id, &deployment.id)
        .await
    {
        Ok(d) => d,
        Err(StoreError::NotFound(_)) => return,
        Err(e) => {
            tracing::error!(deployment_id = %deployment.id, error = %e, "provisioning: could not reload");
            return;
        }
    };
    deployment = current;
    match error {
        None => {
            deployment.status = "ready".to_owned();
            deployment.error = None;
        }
        Some(message) => {
            tracing::warn!(deployment_id = %deployment.id, %message, "provisioning failed");
            deployment.status = "error".to_owned();
            deployment.error = Some(ErrorInfo {
                code: "provisioning_failed".to_owned(),
                message,
            });
        }
    }
    deployment.updated_at = now_unix();
    if let Err(e) = state.store.set_deployment_status(&deployment).await {
        tracing::error!(deployment_id = %deployment.id, error = %e, "provisioning: could not record status");
    }
}

/// Sets the deployment's sandbox up (workspace ownership, cgroups) and runs the backend's
/// health check (spec §3.2: "starts the sandbox once as a health check"). A failure fails
/// provisioning; nothing falls back to running outside the sandbox.
async fn prepare_sandbox(state: &AppState, deployment: &DeploymentRecord) -> Result<(), String> {
    let sandbox = state.runtime.sandbox();
    let spec = state
        .runtime
        .sandbox_spec(&deployment.id, &deployment.config);
    sandbox
        .prepare(&spec)
        .await
        .map_err(|e| format!("could not prepare the sandbox: {e}"))?;
    sandbox
        .probe()
        .await
        .map_err(|e| format!("the sandbox health check failed: {e}"))
}

async fn prepare_workspace(root: std::path::PathBuf) -> std::io::Result<()> {
    tokio::fs::create_dir_all(root.join(".paddock")).await
}

/// Removes a deleted deployment's workspace, or with `retain` moves it under the snapshots
/// directory and returns when that archive expires.
pub(crate) async fn remove_workspace(
    state: &AppState,
    deployment_id: &str,
    retain: bool,
) -> Option<i64> {
    let root = state.settings.workspaces_dir().join(deployment_id);
    if retain {
        let expires_at = now_unix()
            + i64::try_from(state.settings.snapshot_retention.as_secs()).unwrap_or(i64::MAX / 2);
        let dest = state
            .settings
            .snapshots_dir()
            .join(format!("{deployment_id}.expires-{expires_at}"));
        match tokio::fs::rename(&root, &dest).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Err(e) = tokio::fs::create_dir_all(&dest).await {
                    tracing::warn!(error = %e, "could not create an empty snapshot directory");
                }
            }
            Err(e) => tracing::error!(deployment_id, error = %e, "could not archive the workspace"),
        }
        return Some(expires_at);
    }
    match tokio::fs::remove_dir_all(&root).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!(deployment_id, error = %e, "could not remove the workspace"),
    }
    None
}

/// Deletes snapshot archives past their expiry.
pub(crate) async fn prune_snapshots(state: &AppState) {
    let Ok(mut dir) = tokio::fs::read_dir(state.settings.snapshots_dir()).await else {
        return;
    };
    let now = now_unix();
    while let Ok(Some(entry)) = dir.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let expired = name
            .rsplit_once(".expires-")
            .and_then(|(_, t)| t.parse::<i64>().ok())
            .is_some_and(|t| t <= now);
        if expired && let Err(e) = tokio::fs::remove_dir_all(entry.path()).await {
            tracing::warn!(snapshot = %name, error = %e, "could not remove an expired snapshot");
        }
    }
}

/// How long [`prune_snapshots`] waits between passes.
pub(crate) const SNAPSHOT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
