//! `CLOCK_MONOTONIC` in milliseconds: the clock every process of the yardstick reads. It is
//! system-wide on Linux, so a timestamp taken by the driver and one taken by a handler in the
//! worker process compare (`std::time::Instant` does not cross processes).

use nix::time::{ClockId, clock_gettime};

/// Now, in milliseconds of `CLOCK_MONOTONIC`.
pub fn now_ms() -> f64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always readable");
    ts.tv_sec() as f64 * 1e3 + ts.tv_nsec() as f64 / 1e6
}

/// Milliseconds to a `Duration` (negative: zero).
pub fn ms(ms: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(ms.max(0.0) / 1e3)
}
