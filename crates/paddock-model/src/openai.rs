//! OpenAI Chat Completions (streaming, tool calls), usable for any compatible endpoint.

use std::collections::BTreeMap;

use crate::{ModelError, ModelProvider, ModelRequest, ModelStream};

/// A client for one Chat Completions endpoint.
pub struct OpenAiProvider {
    _private: (),
}

impl OpenAiProvider {
    /// `base_url` ends with the API version (`…/v1`); `/chat/completions` is appended.
    pub fn new(
        _base_url: &str,
        _api_key: Option<String>,
        _headers: &BTreeMap<String, String>,
    ) -> Result<Self, ModelError> {
        todo!("helper fills this in")
    }
}

#[async_trait::async_trait]
impl ModelProvider for OpenAiProvider {
    async fn stream(&self, _request: ModelRequest) -> Result<ModelStream, ModelError> {
        todo!()
    }
}
