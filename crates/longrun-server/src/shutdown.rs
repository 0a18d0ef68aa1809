//! Ending long-lived requests when the server shuts down: [`crate::serve`] puts a
//! [`CancellationToken`] in every request's extensions and cancels it when its shutdown future
//! completes, so event streams close and long-polls answer at once instead of holding the
//! graceful shutdown open. Without the token (the router driven directly) they never end early.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio_util::sync::CancellationToken;

/// The server's shutdown signal, as seen by a handler.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Option<CancellationToken>);

impl Shutdown {
    /// Completes when the server begins shutting down (never, without a token).
    pub async fn started(&self) {
        match &self.0 {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// Runs `work` unless shutdown begins first (`None` then). When both are ready, the work's
    /// output wins.
    pub async fn unless<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            output = work => Some(output),
            () = self.started() => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Shutdown {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Shutdown(
            parts.extensions.get::<CancellationToken>().cloned(),
        ))
    }
}
