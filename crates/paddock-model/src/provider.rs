use std::pin::Pin;

use futures::Stream;

use crate::{ModelError, ModelEvent, ModelRequest};

/// A stream of normalised model output.
pub type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelEvent, ModelError>> + Send>>;

/// A model vendor's wire protocol (or the embedded runtime) behind one interface.
///
/// Implementations are cheap to share (`Arc<dyn ModelProvider>`) and must not hold
/// per-conversation state: everything a call needs is in the [`ModelRequest`].
#[async_trait::async_trait]
pub trait ModelProvider: Send + Sync {
    /// Starts one streamed model call. Errors before the first byte are returned here;
    /// errors after it arrive in the stream.
    async fn stream(&self, request: ModelRequest) -> Result<ModelStream, ModelError>;
}
