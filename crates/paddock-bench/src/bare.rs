//! The physical limit: a bare axum handler that answers `POST …/messages` with 202 and a
//! run-shaped body, nothing else (no auth, no storage), on the same HTTP stack as Paddock.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running bare server.
pub struct BareAxum {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

async fn accept(
    Path(dep): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    let _ = body;
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "run_id": "run_bare", "deployment_id": dep, "thread_id": "thr_bare",
            "message_id": "msg_bare", "status": "running",
        })),
    )
}

impl BareAxum {
    /// Binds `listen` and serves in the background.
    pub async fn start(listen: SocketAddr) -> anyhow::Result<BareAxum> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().route("/v1/deployments/{dep}/messages", post(accept));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bare axum stopped: {e}");
            }
        });
        Ok(BareAxum { addr, task })
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BareAxum {
    fn drop(&mut self) {
        self.task.abort();
    }
}
