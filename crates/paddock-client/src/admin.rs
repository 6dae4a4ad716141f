//! Accounts, credits and keys (spec §16, scope `admin`), and the health endpoints (spec §17).

use paddock_protocol::{Account, ApiKey, Page};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{ApiResponse, Client, ClientError, PageQuery, decode_response, seg};

/// The body of `POST /v1/accounts/:account_id/credits`: exactly one of `amount` or `balance`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CreditsChange {
    /// `{"amount": n}`: adds `n` (may be negative) to a non-null balance.
    Add(f64),
    /// `{"balance": n}` or `{"balance": null}`: sets the balance (`None` is unlimited).
    Set(Option<f64>),
}

/// Filter and paging of `GET /v1/keys` (spec §16.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListKeysQuery {
    /// Only keys of this account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Items per page (1–100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl Client {
    /// `POST /v1/accounts`: creates account `name` with `balance` (`None` is unlimited).
    pub async fn create_account(
        &self,
        name: &str,
        balance: Option<f64>,
    ) -> Result<Account, ClientError> {
        let body = json!({ "name": name, "balance": balance });
        self.send_body(Method::POST, "/v1/accounts", &body).await
    }

    /// `GET /v1/accounts`: one page of accounts, newest first.
    pub async fn list_accounts(&self, page: &PageQuery) -> Result<Page<Account>, ClientError> {
        self.get_json("/v1/accounts", page).await
    }

    /// `GET /v1/accounts/:account_id`: one account with its current balance.
    pub async fn get_account(&self, account_id: &str) -> Result<Account, ClientError> {
        self.get_json(&format!("/v1/accounts/{}", seg(account_id)), &())
            .await
    }

    /// `POST /v1/accounts/:account_id/credits`: adds to or sets the balance; returns the account.
    pub async fn update_credits(
        &self,
        account_id: &str,
        change: CreditsChange,
    ) -> Result<Account, ClientError> {
        let body = match change {
            CreditsChange::Add(amount) => json!({ "amount": amount }),
            CreditsChange::Set(balance) => json!({ "balance": balance }),
        };
        let path = format!("/v1/accounts/{}/credits", seg(account_id));
        self.send_body(Method::POST, &path, &body).await
    }

    /// `POST /v1/keys`: creates a key named `name` with `scopes` in `account_id` (default: the
    /// caller's account), optionally expiring at the RFC 3339 `expires_at`. The answer is the
    /// only place the secret appears (`ApiKey::key`).
    pub async fn create_key(
        &self,
        name: &str,
        scopes: &[&str],
        account_id: Option<&str>,
        expires_at: Option<&str>,
    ) -> Result<ApiKey, ClientError> {
        let mut body = json!({ "name": name, "scopes": scopes });
        if let Value::Object(map) = &mut body {
            if let Some(a) = account_id {
                map.insert("account_id".into(), json!(a));
            }
            if let Some(e) = expires_at {
                map.insert("expires_at".into(), json!(e));
            }
        }
        self.send_body(Method::POST, "/v1/keys", &body).await
    }

    /// `GET /v1/keys`: one page of keys (without secrets), newest first.
    pub async fn list_keys(&self, query: &ListKeysQuery) -> Result<Page<ApiKey>, ClientError> {
        self.get_json("/v1/keys", query).await
    }

    /// `DELETE /v1/keys/:key_id`: revokes a key. Returns `{"key_id": …, "status": "revoked"}`.
    pub async fn delete_key(&self, key_id: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/keys/{}", seg(key_id));
        self.send(self.raw(Method::DELETE, &path)).await
    }

    /// `GET /healthz`: `{"status": "ok"}` whenever the server process serves HTTP.
    pub async fn healthz(&self) -> Result<Value, ClientError> {
        self.get_json("/healthz", &()).await
    }

    /// `GET /readyz`: the readiness report. Both 200 (`"status": "ready"`) and 503
    /// (`"status": "unavailable"`, failing checks named) are returned as `Ok`, with the status
    /// in [`ApiResponse::status`]; any other status is an error.
    pub async fn readyz(&self) -> Result<ApiResponse<Value>, ClientError> {
        let resp = self.raw(Method::GET, "/readyz").send().await?;
        let status = resp.status().as_u16();
        if status == 200 || status == 503 {
            decode_response(resp).await
        } else {
            Err(ClientError::from_response(resp).await)
        }
    }
}
