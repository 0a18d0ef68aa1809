//! The HTTP routes, grouped by audience, and what their answers share.

mod common_responses;
mod events;
mod health;
mod operations;
mod workers;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use longrun_core::Operation;
use longrun_core::views::View;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::base_url::BaseUrl;

/// Every documented route.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(operations::submit, operations::list))
        .routes(routes!(operations::submit_batch))
        .routes(routes!(operations::get, operations::delete))
        .routes(routes!(operations::cancel))
        .routes(routes!(operations::result))
        .routes(routes!(events::events))
        .routes(routes!(workers::claim))
        .routes(routes!(workers::heartbeat))
        .routes(routes!(workers::complete))
        .routes(routes!(workers::fail))
        .routes(routes!(workers::release))
        .routes(routes!(workers::reports))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// `?view=`: which rendering of the operation to answer with.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ViewQuery {
    /// `operation` (default, the canonical resource), `async-operation`, `task-status` or
    /// `async-task`.
    pub view: Option<View>,
}

/// An operation rendered in `view` with status `status`, plus `Retry-After` while it is not
/// finished.
fn operation_response(
    status: StatusCode,
    op: Operation,
    view: Option<View>,
    base: &BaseUrl,
    retry_after_secs: u32,
) -> Response {
    let terminal = op.is_terminal();
    let mut response = json_response(status, &view.unwrap_or_default().render_owned(op, &base.0));
    set_retry_after(&mut response, terminal, retry_after_secs);
    response
}

/// Room for an operation's JSON (most are 1 to 2 KB): written into a buffer this size from
/// the start, it is not copied to a buffer twice as big as it grows, as with `axum::Json`.
const OPERATION_JSON_CAPACITY: usize = 2048;

/// `value` as an `application/json` response with status `status`, written into a buffer of
/// [`OPERATION_JSON_CAPACITY`]. Should it fail to serialize, `axum::Json` answers for it (a
/// `500`), as it would have.
fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let mut body = Vec::with_capacity(OPERATION_JSON_CAPACITY);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => {
            let json = HeaderValue::from_static("application/json");
            (status, [(header::CONTENT_TYPE, json)], body).into_response()
        }
        Err(_) => (status, axum::Json(value)).into_response(),
    }
}

/// Sets `Retry-After` unless the operation is finished (`terminal`).
fn set_retry_after(response: &mut Response, terminal: bool, retry_after_secs: u32) {
    if !terminal {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    }
}

/// Sets each header of `names` (`Location`, `Operation-Location`) to the operation's URL
/// (skipped if the URL is not a valid header value, which a configured `public_url` could
/// make it).
fn set_location(response: &mut Response, names: &[&'static str], base: &BaseUrl, id: Uuid) {
    if let Ok(url) = HeaderValue::from_str(&base.operation(id)) {
        for name in names {
            response.headers_mut().insert(*name, url.clone());
        }
    }
}
