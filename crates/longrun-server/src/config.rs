//! Server settings, with defaults suitable for a single-node deployment.

use std::num::NonZeroU32;
use std::time::Duration;

use longrun_core::{Owner, RetryPolicy};

/// Everything the HTTP layer and the maintenance loop can be tuned with.
///
/// `Prefer: wait=N` larger than [`max_wait_secs`](Self::max_wait_secs) is clamped (RFC 7240
/// lets a server apply a preference partially, and `Preference-Applied` says what was used);
/// a claim's explicit `waitSecs` larger than it is rejected with `422`, like every other
/// out-of-range field of a request body.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted request body, in bytes (default 1 MiB); larger bodies get `413`.
    pub body_limit_bytes: usize,
    /// Largest serialized size (compact JSON, bytes) of each of a submit's `args`, `kwargs`
    /// and `content` and of a completion's `result` (default 256 KiB); larger ones get `422`
    /// naming the field.
    pub max_field_bytes: usize,
    /// Deepest nesting of arrays and objects anywhere in a JSON request body (default 32; the
    /// body itself is level 1); deeper bodies get `422` before they are parsed. Values above
    /// 128 have no effect beyond it: the JSON parser refuses deeper input (`400`).
    pub max_json_depth: usize,
    /// The per-key rate limit (`None`: unlimited); see [`RateLimit`].
    pub rate_limit: Option<RateLimit>,
    /// While no API key exists (open mode), how long the server trusts its last look before
    /// it looks again (default 1 s): creating the first key turns authentication on within
    /// this time, without a restart. Once on, it stays on until the server restarts.
    pub key_recheck_interval: Duration,
    /// How long the server keeps an API key it has read (default 1 s): a key sending many
    /// requests is looked up once per this time, and a revoked key keeps working on a server
    /// for at most this long. Zero looks the key up on every request.
    pub key_cache_ttl: Duration,
    /// Retry policy of operations whose submit does not override it.
    pub default_retry_policy: RetryPolicy,
    /// The `Retry-After` (seconds) suggested while an operation is not finished.
    pub retry_after_secs: u32,
    /// Scheme and authority clients reach the server at (e.g. `https://jobs.example.com`),
    /// used in `Location` headers and absolute URLs; `None` means `http://{Host header}`.
    pub public_url: Option<String>,
    /// Owner of every request while no API key exists (open mode, where every caller acts as
    /// an admin of this customer).
    pub default_owner: Owner,
    /// Largest `limit` a list request may ask for.
    pub max_list_limit: u32,
    /// Page size of a list request without `limit`.
    pub default_list_limit: u32,
    /// Longest long-poll (`Prefer: wait`, claim `waitSecs`), seconds.
    pub max_wait_secs: u32,
    /// Longest lease a worker may ask for, seconds.
    pub max_lease_secs: u32,
    /// Most operations one claim may lease.
    pub max_claim: u32,
    /// Most operations one batch submit (`POST /v1/operations:batch`) may carry.
    pub max_batch_submit: u32,
    /// How often the maintenance loop expires leases and prunes old operations.
    pub maintenance_interval: Duration,
    /// Finished operations older than this are deleted by the maintenance loop (`None`: kept
    /// forever).
    pub retention: Option<time::Duration>,
    /// Longest time a request may take to produce its response head (must exceed
    /// `max_wait_secs`); the body of an event stream is not limited.
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            max_field_bytes: 256 * 1024,
            max_json_depth: 32,
            rate_limit: Some(RateLimit::default()),
            key_recheck_interval: Duration::from_secs(1),
            key_cache_ttl: Duration::from_secs(1),
            default_retry_policy: RetryPolicy::default(),
            retry_after_secs: 1,
            public_url: None,
            default_owner: Owner {
                customer: 1,
                user: 1,
                user_name: "default".into(),
            },
            max_list_limit: 1000,
            default_list_limit: 100,
            max_wait_secs: 60,
            max_lease_secs: 3600,
            max_claim: 1000,
            max_batch_submit: 1000,
            maintenance_interval: Duration::from_secs(1),
            retention: Some(time::Duration::days(7)),
            request_timeout: Duration::from_secs(90),
        }
    }
}

/// A token bucket per API key (and per client address for requests whose key fails
/// authentication): `per_second` tokens are added each second up to `burst`; each request
/// takes one (a long-poll or an event stream counts once). A request finding the bucket empty
/// gets `429` with `Retry-After`. Open mode (no API keys yet) is not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second (default 100).
    pub per_second: NonZeroU32,
    /// Requests that may come at once after a quiet spell (default 200).
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(100).expect("non-zero"),
            burst: NonZeroU32::new(200).expect("non-zero"),
        }
    }
}
