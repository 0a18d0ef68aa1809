//! The canonical status of an operation and which changes between statuses are legal.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an operation is in its lifecycle.
///
/// `pending` covers "accepted, not started" and "waiting to retry"; the three terminal states
/// never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = AsyncOperationStatus)]
pub enum Status {
    /// Accepted and waiting for a worker (possibly until a future `runAt`).
    Pending,
    /// Held by a worker under a lease.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error, retries exhausted or not retryable.
    Failed,
    /// Cancelled before it could finish.
    Cancelled,
}

impl Status {
    /// All statuses, in lifecycle order.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
    ];

    /// Whether the status is final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }

    /// The lowercase wire name (`pending`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Whether the lifecycle allows moving from `self` to `to`:
    /// `pending → running → succeeded | failed`, `pending | running → cancelled`,
    /// `running → pending` (a retry, or a lease released at shutdown).
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Pending, Running)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Pending, Cancelled)
                | (Running, Cancelled)
                | (Running, Pending)
        )
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!("unknown status `{s}`: expected pending, running, succeeded, failed or cancelled")
            })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
