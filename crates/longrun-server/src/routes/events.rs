//! `GET /v1/operations/{id}/events`: an operation's changes as Server-Sent Events.
//!
//! Each event has `id:` the operation's version, `event:` its status (`pending`, `running`,
//! `succeeded`, `failed`, `cancelled`) and `data:` the operation in the requested view. On
//! connect the current state is sent unless `Last-Event-ID` already names its version (or a
//! later one); then one event per change; the stream ends after the event of a finished
//! operation (at once when that event was already seen), when the operation is deleted, or when
//! the server shuts down. A comment every 15 s keeps proxies from closing an idle stream.
//!
//! Changes are learnt from [`Store::subscribe`](longrun_core::Store::subscribe), subscribed
//! before the first read so nothing between the read and the wait is missed; each one is
//! re-read from the store, so a burst of changes may be seen as one event with the latest state.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use futures::stream::{self, StreamExt};
use longrun_core::views::View;
use longrun_core::waiting::next_change_of;
use longrun_core::{Change, Operation, Store};
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

use super::ViewQuery;
use super::common_responses::{OperationNotFound, Unavailable};
use crate::AppState;
use crate::base_url::BaseUrl;
use crate::caller::{Action, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{OperationId, QueryParams};
use crate::openapi::OperationEvent;
use crate::shutdown::Shutdown;

/// How often an idle stream carries a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How far ahead one wait for a change looks; only bounds a single wait, the stream goes on.
const WAIT_SLICE: Duration = Duration::from_secs(3600);

/// Follow an operation's changes (Server-Sent Events).
#[utoipa::path(
    get,
    path = "/v1/operations/{id}/events",
    tag = "operations",
    params(
        ("id" = Uuid, Path, description = "Operation id."),
        ViewQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume: the id (version) of the last event received."),
    ),
    responses(
        (status = 200, description = "An event stream: `id:` version, `event:` status, `data:` the operation in the requested view (JSON). Ends after the finished operation's event. The schema is that of one event.", body = OperationEvent, content_type = "text/event-stream"),
        (status = 400, description = "Unknown `view`.", body = Problem, content_type = "application/problem+json"),
        OperationNotFound,
        Unavailable,
    )
)]
pub async fn events(
    caller: Caller,
    State(state): State<AppState>,
    base: BaseUrl,
    OperationId(id): OperationId,
    QueryParams(query): QueryParams<ViewQuery>,
    headers: HeaderMap,
    shutdown: Shutdown,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.allow(Action::Read)?;
    let changes = state.store.subscribe();
    let op = caller.find(&*state.store, id).await?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let follower = Follower {
        store: state.store.clone(),
        changes,
        id,
        view: query.view.unwrap_or_default(),
        base,
        last_sent: last_seen.unwrap_or(0),
        finished: false,
    };
    let stream = follower
        .into_stream(op)
        .take_until(async move { shutdown.started().await });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The state of one event stream.
struct Follower {
    store: std::sync::Arc<dyn Store>,
    changes: broadcast::Receiver<Change>,
    id: Uuid,
    view: View,
    base: BaseUrl,
    /// The version of the last event the client has.
    last_sent: i64,
    /// The last event was sent (or the operation is gone): end the stream.
    finished: bool,
}

impl Follower {
    fn into_stream(self, first: Operation) -> impl Stream<Item = Result<Event, Infallible>> {
        stream::unfold((self, Some(first)), |(mut follower, mut next)| async move {
            loop {
                if follower.finished {
                    return None;
                }
                let op = match next.take() {
                    Some(op) => op,
                    None => follower.next_state().await?,
                };
                follower.finished = op.is_terminal();
                if op.version > follower.last_sent {
                    follower.last_sent = op.version;
                    let event = follower.event(&op);
                    return Some((Ok(event), (follower, None)));
                }
            }
        })
    }

    /// Waits for a change and re-reads the operation; `None` when it is gone or unreadable.
    async fn next_state(&mut self) -> Option<Operation> {
        while !next_change_of(&mut self.changes, self.id, Instant::now() + WAIT_SLICE).await {}
        match self.store.get(self.id).await {
            Ok(op) => op,
            Err(e) => {
                tracing::warn!(operation = %self.id, error = %e, "event stream ended: cannot read the operation");
                None
            }
        }
    }

    fn event(&self, op: &Operation) -> Event {
        let data = serde_json::to_string(&self.view.render(op, &self.base.0))
            .expect("an operation serializes");
        Event::default()
            .id(op.version.to_string())
            .event(op.status.as_str())
            .data(data)
    }
}
