//! Retry policy: how many times an operation is retried and how long it waits in between.

use serde::{Deserialize, Serialize};
use time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;

/// Exponential backoff with jitter.
///
/// The delay before retry `n` (0-based) is `d/2 + j·d/2` where `d = min(cap, base·2ⁿ)` and
/// `j ∈ [0, 1)` is derived from the operation id and `n` ("equal jitter"): retries of many
/// operations that failed together spread out, while one operation's schedule is reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// How many retries after the first attempt.
    pub max_retries: u32,
    /// The delay before the first retry, before jitter, in seconds.
    pub backoff_base_secs: f64,
    /// The longest delay between two attempts, in seconds.
    pub backoff_cap_secs: f64,
}

impl Default for RetryPolicy {
    /// Three retries, 1 s doubling up to 5 minutes.
    fn default() -> Self {
        Self {
            max_retries: 3,
            backoff_base_secs: 1.0,
            backoff_cap_secs: 300.0,
        }
    }
}

impl RetryPolicy {
    /// Whether an operation that has been retried `retries` times may be retried again.
    pub fn allows_retry(&self, retries: u32) -> bool {
        retries < self.max_retries
    }

    /// The delay before retry number `retry` (0-based) of operation `id`.
    pub fn delay(&self, id: Uuid, retry: u32) -> Duration {
        let exp = self.backoff_base_secs * 2f64.powi(retry.min(62) as i32);
        let capped = exp.min(self.backoff_cap_secs).max(0.0);
        let jitter = jitter_fraction(id, retry);
        Duration::seconds_f64(capped / 2.0 + jitter * capped / 2.0)
    }
}

/// A fraction in `[0, 1)` that depends only on `id` and `retry` (splitmix64 of both).
fn jitter_fraction(id: Uuid, retry: u32) -> f64 {
    let (hi, lo) = id.as_u64_pair();
    let mut z = hi ^ lo.rotate_left(17) ^ (u64::from(retry)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delay_stays_between_half_and_full_of_capped_exponential(
            base in 0.01f64..10.0, cap in 0.01f64..1000.0, retry in 0u32..100, raw in any::<u128>()
        ) {
            let policy = RetryPolicy { max_retries: 5, backoff_base_secs: base, backoff_cap_secs: cap };
            let d = policy.delay(Uuid::from_u128(raw), retry).as_seconds_f64();
            let full = (base * 2f64.powi(retry.min(62) as i32)).min(cap);
            prop_assert!(d >= full / 2.0 - 1e-6, "{d} < {full}/2");
            prop_assert!(d <= full + 1e-6, "{d} > {full}");
        }
    }

    #[test]
    fn delays_grow_until_the_cap() {
        let policy = RetryPolicy {
            max_retries: 10,
            backoff_base_secs: 1.0,
            backoff_cap_secs: 8.0,
        };
        let id = Uuid::now_v7();
        // Each capped exponential step doubles, so the lower bound of retry n+1 reaches the upper bound of n.
        assert!(policy.delay(id, 3).as_seconds_f64() >= 4.0);
        assert!(policy.delay(id, 20).as_seconds_f64() <= 8.0);
        assert!(policy.delay(id, 0).as_seconds_f64() <= 1.0);
    }

    #[test]
    fn jitter_differs_between_operations() {
        let policy = RetryPolicy::default();
        let delays: std::collections::HashSet<_> = (0..50u128)
            .map(|i| {
                policy
                    .delay(Uuid::from_u128(i * 7919), 2)
                    .whole_milliseconds()
            })
            .collect();
        assert!(
            delays.len() > 40,
            "jitter spread too little: {}",
            delays.len()
        );
    }

    #[test]
    fn retries_stop_at_max() {
        let policy = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        assert!(policy.allows_retry(0));
        assert!(policy.allows_retry(1));
        assert!(!policy.allows_retry(2));
    }
}
