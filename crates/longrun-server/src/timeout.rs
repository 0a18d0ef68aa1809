//! The request timeout: a response head not ready within `ServerConfig::request_timeout`
//! becomes a `503` problem. Only the head is timed, so an event stream may run for hours.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ProblemKind};

/// Middleware (`axum::middleware::from_fn_with_state`) applying the timeout.
pub async fn limit(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ProblemKind::Timeout,
            format!("the request took longer than {} s", timeout.as_secs_f64()),
        )
        .into_response(),
    }
}
