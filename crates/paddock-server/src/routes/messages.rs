//! `POST /v1/deployments/:dep/messages` (spec §4).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use paddock_protocol::ids::{is_id_shaped, new_id, prefix};
use paddock_protocol::time::now_unix;
use paddock_protocol::{ErrorCode, MessageAccepted};
use paddock_store::{SendMessage, StoreError, ThreadTarget};

use super::{PathIds, deployment_of, require_ready};
use crate::auth::Caller;
use crate::body::DeferredJson;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[utoipa::path(
    post,
    path = "/v1/deployments/{dep}/messages",
    operation_id = "send_message",
    tag = "messages",
    summary = "Send a message",
    description = "Scope `deployments:write`. Stores the message and answers 202; it starts a run on an idle thread, joins a running one as steering input, or answers a waiting one (spec §4.2). The agent's output arrives on the event stream.",
    params(
        ("dep" = String, Path, description = "The deployment id (`dep_…`)."),
    ),
    request_body = paddock_protocol::SendMessageRequest,
    responses(
        (status = 202, description = "The message is stored; `run_id` is the run it started, joined or answered.", body = paddock_protocol::MessageAccepted),
        (status = 400, description = "`validation_error`: `content` missing, empty or too long; a bad attachment (`param` e.g. `attachments[0].url`).", body = paddock_protocol::ErrorBody),
        (status = 402, description = "`insufficient_credits`: the balance is ≤ 0; nothing is stored, started or resumed.", body = paddock_protocol::ErrorBody),
        (status = 404, description = "`not_found`: unknown deployment, or `thread_id` is not a thread of this deployment (`param: \"thread_id\"`).", body = paddock_protocol::ErrorBody),
        (status = 409, description = "`deployment_not_ready`: the deployment is `provisioning` or `error`; or `conflict`: the `Idempotency-Key` was used for another request, or its first request is still running.", body = paddock_protocol::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the JSON body limit (1 MiB by default).", body = paddock_protocol::ErrorBody),
        (status = 429, description = "`rate_limited`: the key's request limit, or a new run would exceed the deployment's active-run limit (8 by default).", body = paddock_protocol::ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before retrying (≥ 1)."))),
        crate::openapi::CommonErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn send(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ids: PathIds,
    body: DeferredJson,
) -> ApiResult<(StatusCode, Json<MessageAccepted>)> {
    let deployment = deployment_of(&state, &caller, ids.get("dep")).await?;
    let body = body.object()?;
    let message = crate::validate::message(&body, &state.settings)?;
    let thread_missing = |id: &str| {
        ApiError::not_found(format!("No thread {id} in this deployment.")).with_param("thread_id")
    };
    // A 404 for an id in the body comes before 409 and 402 (spec §1.8). The store checks
    // again inside its transaction, for a thread deleted meanwhile.
    if let ThreadTarget::Id(t) = &message.thread {
        if !is_id_shaped(t) {
            return Err(thread_missing(t));
        }
        match state.store.get_thread(&deployment.id, t).await {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => return Err(thread_missing(t)),
            Err(e) => return Err(e.into()),
        }
    }
    require_ready(&deployment)?;
    ensure_credits(&state, &caller.account_id).await?;

    let target = message.thread.clone();
    let send = SendMessage {
        deployment_id: deployment.id.clone(),
        target,
        message_id: new_id(prefix::MESSAGE),
        // Applied only if the thread's run waits on a human (spec §6.3a).
        answer: paddock_core::steering::classify_answer(&message.content),
        content: message.content,
        attachments: message.attachments,
        new_run_id: new_id(prefix::RUN),
        new_thread_id: new_id(prefix::THREAD),
        max_active_runs: state.settings.rate_limits.max_active_runs_per_deployment,
        now: now_unix(),
    };
    let outcome = {
        let guard = state.runtime.bus().lock(&deployment.id).await;
        let outcome = match state.store.send_message(send).await {
            Ok(o) => o,
            Err(StoreError::NotFound("thread")) => {
                let id = match &message.thread {
                    ThreadTarget::Id(t) => t.as_str(),
                    _ => "",
                };
                return Err(thread_missing(id));
            }
            Err(StoreError::LimitReached(m)) => {
                return Err(ApiError::rate_limited(
                    format!("{m} Wait for one to finish."),
                    5,
                ));
            }
            Err(e) => return Err(e.into()),
        };
        guard.publish(&outcome.events);
        outcome
    };
    // A new run, or a waiting run the message answered, is runnable now: the worker (this
    // node's, or any other's) claims it. Steering input to a running run needs nothing.
    if outcome.started_run || outcome.answered {
        state.runtime.wake();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageAccepted {
            run_id: outcome.run.id,
            deployment_id: deployment.id,
            thread_id: outcome.thread_id,
            message_id: outcome.message_id,
            status: "running".to_owned(),
        }),
    ))
}

/// `402` while the account's balance is at or below zero (spec §16.1).
pub(crate) async fn ensure_credits(state: &AppState, account_id: &str) -> ApiResult<()> {
    let account = state.store.get_account(account_id).await?;
    match account.balance_micros {
        Some(b) if b <= 0 => Err(ApiError::new(
            ErrorCode::InsufficientCredits,
            "The account has no credits left; add credits to continue.",
        )),
        _ => Ok(()),
    }
}
