//! Authentication: turning a request into a [`Caller`], then charging its rate limit.
//!
//! Keys travel as `Authorization: Bearer lr_<id>_<secret>`. Each request finds its key (in the
//! [`KeyCache`], else with [`Store::find_key`]) and compares the secret's hash in constant time
//! ([`Token::matches`]); a revoked key fails once the cache has let go of it, within
//! `ServerConfig::key_cache_ttl`.
//! A missing, malformed, unknown, wrong or revoked key is `401` with `WWW-Authenticate:
//! Bearer`, one message for the last three so the answer does not tell which.
//!
//! Authentication is on once any unrevoked key exists ([`Store::has_active_keys`]). Until then
//! the server runs *open*: every caller is the configured default owner acting as an admin and
//! `Authorization` is ignored; [`crate::serve`] warns about it at start-up. While open, the
//! server looks for keys again at most every `ServerConfig::key_recheck_interval`, so creating
//! the first key (`longrun keys create`, on any node) turns authentication on within about a
//! second, without a restart. Once on it stays on until the process restarts: revoking every
//! key locks everyone out instead of opening the server to anyone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use longrun_core::{ApiKey, Store, StoreError, Token};

use crate::AppState;
use crate::caller::Caller;
use crate::config::ServerConfig;
use crate::error::{ApiError, ProblemKind};
use crate::key_cache::KeyCache;
use crate::rate_limit::{Bucket, RateLimiter};

/// The authentication switch and the rate limiter, shared by every request of a router.
pub struct Gate {
    keys_exist: AtomicBool,
    /// When open mode last looked for keys, in nanoseconds after `created` (0: never): read
    /// without a lock, so an open server's requests do not queue on one.
    looked_ns: AtomicU64,
    created: Instant,
    /// Held while looking, so that one request looks and the others wait for its answer.
    looking: tokio::sync::Mutex<()>,
    recheck: Duration,
    keys: KeyCache,
    limiter: RateLimiter,
}

impl Gate {
    /// A gate that has not looked for keys yet.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            keys_exist: AtomicBool::new(false),
            looked_ns: AtomicU64::new(0),
            created: Instant::now(),
            looking: tokio::sync::Mutex::new(()),
            recheck: config.key_recheck_interval,
            keys: KeyCache::new(config.key_cache_ttl),
            limiter: RateLimiter::new(config.rate_limit),
        }
    }

    /// Whether authentication is on, looking at the store when open mode's last look is older
    /// than the recheck interval. The first look that finds no key logs the open-mode warning.
    pub async fn auth_on(&self, store: &dyn Store) -> Result<bool, StoreError> {
        if self.keys_exist.load(Ordering::Acquire) {
            return Ok(true);
        }
        if self.looked_recently() {
            return Ok(false);
        }
        let _looking = self.looking.lock().await;
        if self.keys_exist.load(Ordering::Acquire) {
            return Ok(true);
        }
        if self.looked_recently() {
            return Ok(false);
        }
        let on = store.has_active_keys().await?;
        if on {
            self.keys_exist.store(true, Ordering::Release);
            tracing::info!("authentication is on: API keys exist");
        } else if self.looked_ns.load(Ordering::Acquire) == 0 {
            tracing::warn!("running open: no API keys exist; anyone can call every route");
        }
        let now = u64::try_from(self.created.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.looked_ns.store(now.max(1), Ordering::Release);
        Ok(on)
    }

    /// Whether open mode looked for keys less than the recheck interval ago.
    fn looked_recently(&self) -> bool {
        let at = self.looked_ns.load(Ordering::Acquire);
        at != 0 && self.created.elapsed() < Duration::from_nanos(at) + self.recheck
    }

    async fn admit(&self, parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
        if !self.auth_on(&*state.store).await? {
            return Ok(Caller::open(&state.config));
        }
        match authenticate(&parts.headers, &*state.store, &self.keys).await {
            Ok(key) => {
                self.limiter.charge(&Bucket::Key(key.id))?;
                Ok(Caller::from_key(key))
            }
            Err(refused) if refused.kind() == ProblemKind::Unauthorized => {
                let peer = parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.ip());
                self.limiter.charge(&Bucket::Client(peer))?;
                Err(refused)
            }
            Err(e) => Err(e),
        }
    }
}

/// The caller of a `/v1` route: `401` without a valid key (while authentication is on), `429`
/// over the rate limit, `503` when the keys cannot be read.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let gate = parts
            .extensions
            .get::<std::sync::Arc<Gate>>()
            .cloned()
            .expect("crate::router installs the gate");
        gate.admit(parts, state).await
    }
}

/// The unrevoked key whose token the request carries.
async fn authenticate(
    headers: &HeaderMap,
    store: &dyn Store,
    keys: &KeyCache,
) -> Result<ApiKey, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "authentication is required: send `Authorization: Bearer <API key>`",
            false,
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .and_then(Token::parse)
        .ok_or_else(|| {
            unauthorized(
                "malformed `Authorization`: expected `Bearer lr_<32 hex>_<64 hex>`",
                true,
            )
        })?;
    match keys.find(store, token.id).await? {
        Some((key, hash)) if key.revoked_at.is_none() && token.matches(&hash) => Ok(key),
        _ => Err(unauthorized("unknown or revoked API key", true)),
    }
}

/// `401` with the RFC 6750 challenge (`error="invalid_token"` when a token was presented).
fn unauthorized(detail: &str, token_presented: bool) -> ApiError {
    let challenge = if token_presented {
        r#"Bearer realm="longrun", error="invalid_token""#
    } else {
        r#"Bearer realm="longrun""#
    };
    ApiError::new(ProblemKind::Unauthorized, detail).with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    )
}
