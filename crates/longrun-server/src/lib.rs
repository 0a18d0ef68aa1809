//! The longrun HTTP API (axum): operations under `/v1`, the worker protocol, long-poll and
//! Server-Sent Events, RFC 9457 problem documents for every error, the OpenAPI document
//! (`/openapi.json`, Swagger UI at `/docs`), health probes, and the maintenance loop.
//!
//! Every `/v1` route takes an API key once any exists (see `auth` for the switch, `caller` for
//! roles and tenants, `rate_limit`, `inflight` for idempotency keys in progress and `limits`
//! for input limits); `/healthz`, `/readyz`, `/openapi.json` and `/docs` stay public.
//!
//! A binary needs four calls:
//!
//! ```no_run
//! # async fn run(store: std::sync::Arc<dyn longrun_core::Store>) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use longrun_server::{AppState, ServerConfig, serve, spawn_maintenance};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = Arc::new(ServerConfig::default());
//! let stop = CancellationToken::new();
//! let maintenance = spawn_maintenance(store.clone(), config.clone(), stop.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let state = AppState { store, config };
//! serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! stop.cancel();
//! let _ = maintenance.await;
//! # Ok(()) }
//! ```

mod auth;
mod base_url;
mod caller;
mod config;
mod cursor;
mod error;
mod etag;
mod extract;
mod fingerprint;
mod inflight;
mod key_cache;
mod limits;
mod maintenance;
mod openapi;
mod prefer;
mod rate_limit;
mod routes;
mod shutdown;
mod submission;
mod timeout;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::serve::{ListenerExt, TapIo};
use longrun_core::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use config::{RateLimit, ServerConfig};
pub use error::{ApiError, Problem, ProblemKind};
pub use maintenance::spawn_maintenance;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Where operations live.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub config: Arc<ServerConfig>,
}

/// The whole HTTP application: `/v1` routes, `/openapi.json`, `/docs`, `/healthz`, `/readyz`;
/// unknown routes answer a `404` problem, a wrong method a `405` problem. It looks for API
/// keys at its first `/v1` request (and warns there when it runs open).
pub fn router(state: AppState) -> axum::Router {
    let gate = Arc::new(auth::Gate::new(&state.config));
    guarded_router(state, gate)
}

fn guarded_router(state: AppState, gate: Arc<auth::Gate>) -> axum::Router {
    let (api, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::api())
        .split_for_parts();
    openapi::secure(&mut document);
    openapi::close_seed_views(&mut document);
    openapi::declare_limits(&mut document, &state.config);
    let timeout = state.config.request_timeout;
    let body_limit = state.config.body_limit_bytes;
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(gate))
        .layer(Extension(Arc::new(inflight::InFlight::default())))
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            timeout::limit,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then shuts down gracefully:
/// stops accepting connections, ends event streams and long-polls at once (a waiting claim
/// answers no leases) and waits for the requests in flight. Looks for API keys first and logs
/// a warning when there are none (the server then runs open).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gate = Arc::new(auth::Gate::new(&state.config));
    if let Err(e) = gate.auth_on(&*state.store).await {
        tracing::error!(error = %e, "cannot look for API keys yet; requests will look again");
    }
    let stopping = CancellationToken::new();
    let app = guarded_router(state, gate).layer(Extension(stopping.clone()));
    axum::serve(
        without_delay(listener),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        stopping.cancel();
    })
    .await
}

/// `listener`, setting `TCP_NODELAY` on each connection it accepts: a small write (an event
/// of a stream, the end of a long answer) goes out at once instead of waiting until the client
/// acknowledges the one before, which a client may put off for 40 ms.
fn without_delay(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    })
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        ProblemKind::NotFound,
        format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ProblemKind::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut listener = without_delay(listener);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().unwrap());
    }
}
