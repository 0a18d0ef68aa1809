//! The rate limit: a token bucket (GCRA, the `governor` crate) per API key, and one per client
//! address for requests whose key fails authentication, so guessing keys is throttled too.
//!
//! Open mode (no API keys exist) is not limited: it is for local development, where every
//! caller is already an admin and tests and benchmarks run flat out. Each request takes one
//! token however long it lasts, so a long-poll or an event stream counts once.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use uuid::Uuid;

use crate::config::RateLimit;
use crate::error::{ApiError, ProblemKind};

/// After this many checks, buckets that are full again are forgotten, so the limiter's memory
/// follows the callers of the last moments, not every caller ever seen.
const PRUNE_EVERY: u32 = 4096;

/// Whose tokens a request takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// An authenticated API key.
    Key(Uuid),
    /// A client whose key failed authentication, by its address (`None`: the address is not
    /// known because the router is driven without a listener; all such clients share one).
    Client(Option<IpAddr>),
}

/// The buckets of every caller.
pub struct RateLimiter {
    limit: Option<(RateLimit, DefaultKeyedRateLimiter<Bucket>)>,
    checks: AtomicU32,
}

impl RateLimiter {
    /// Buckets of `limit` (`None`: every request passes).
    pub fn new(limit: Option<RateLimit>) -> Self {
        let limit = limit.map(|limit| {
            let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
            (limit, DefaultKeyedRateLimiter::keyed(quota))
        });
        Self {
            limit,
            checks: AtomicU32::new(0),
        }
    }

    /// Takes a token from `bucket`; a `429` problem with `Retry-After` (whole seconds, rounded
    /// up) when it is empty.
    pub fn charge(&self, bucket: &Bucket) -> Result<(), ApiError> {
        let Some((limit, limiter)) = &self.limit else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(bucket).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            ApiError::new(
                ProblemKind::RateLimited,
                format!(
                    "over the rate limit of {} requests per second (bursts of {}); retry in {secs} s",
                    limit.per_second, limit.burst
                ),
            )
            .retry_after(secs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    #[test]
    fn a_burst_passes_then_each_bucket_is_limited_on_its_own() {
        let limiter = RateLimiter::new(Some(RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        }));
        let a = Bucket::Key(Uuid::now_v7());
        assert!(limiter.charge(&a).is_ok());
        assert!(limiter.charge(&a).is_ok());
        let refused = limiter.charge(&a).unwrap_err();
        assert_eq!(refused.kind(), ProblemKind::RateLimited);
        assert!(refused.problem().detail.contains("retry in 1 s"));
        assert!(limiter.charge(&Bucket::Client(None)).is_ok());
        assert!(RateLimiter::new(None).charge(&a).is_ok());
    }
}
