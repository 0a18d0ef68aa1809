//! The lifecycle as named state changes on [`Operation`].
//!
//! Every change a store makes goes through one of these methods, which check the transition
//! table ([`Status::can_become`]) and the lease fence, then bump `version` and `updatedAt`. An
//! illegal change is an error value and leaves the operation untouched.

use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::{Operation, OperationError, Resource, Status};

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The lifecycle does not allow this change from the current status.
    #[error("cannot {change} an operation that is {from}")]
    Illegal {
        /// The attempted change (`complete`, `cancel`, ...).
        change: &'static str,
        /// The status it was in.
        from: Status,
    },
    /// The caller's lease is not the operation's current one (expired, re-claimed, or finished).
    #[error("lease {lease} is not the current lease of this operation")]
    StaleLease {
        /// The lease the caller presented.
        lease: Uuid,
    },
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was pending and is now cancelled.
    Cancelled,
    /// It is running: the request is recorded and its worker learns it at the next heartbeat.
    Requested,
}

impl CancelOutcome {
    /// What a cancel did, read off the operation it just changed.
    pub fn of(op: &Operation) -> Self {
        if op.status == Status::Cancelled {
            CancelOutcome::Cancelled
        } else {
            CancelOutcome::Requested
        }
    }
}

/// What a worker's progress report carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressUpdate {
    /// 0–100.
    pub pct: Option<f64>,
    /// Short text.
    pub detail: Option<String>,
}

impl Operation {
    fn become_(
        &mut self,
        to: Status,
        change: &'static str,
        now: OffsetDateTime,
    ) -> Result<(), TransitionError> {
        if !self.status.can_become(to) {
            return Err(TransitionError::Illegal {
                change,
                from: self.status,
            });
        }
        self.status = to;
        self.touch(now);
        if to.is_terminal() {
            self.completed_at = Some(now);
            self.lease_expires_at = None;
        }
        Ok(())
    }

    fn touch(&mut self, now: OffsetDateTime) {
        self.updated_at = now;
        self.version += 1;
    }

    fn check_lease(&self, lease: Uuid, change: &'static str) -> Result<(), TransitionError> {
        match self.status {
            Status::Running if self.execution_id == Some(lease) => Ok(()),
            // Its own attempt already ended it: a repeated report.
            from if from.is_terminal() && self.execution_id == Some(lease) => {
                Err(TransitionError::Illegal { change, from })
            }
            _ => Err(TransitionError::StaleLease { lease }),
        }
    }

    /// A worker takes it: `pending → running` under a new lease.
    pub fn start(
        &mut self,
        lease: Uuid,
        worker: &str,
        lease_for: Duration,
        now: OffsetDateTime,
    ) -> Result<(), TransitionError> {
        self.become_(Status::Running, "start", now)?;
        self.execution_id = Some(lease);
        self.worker = Some(worker.to_owned());
        self.started_at = Some(now);
        self.lease_expires_at = Some(now + lease_for);
        self.progress_pct = None;
        self.status_detail = None;
        Ok(())
    }

    /// The worker is alive: extends the lease and records progress. Returns whether
    /// cancellation has been requested.
    pub fn heartbeat(
        &mut self,
        lease: Uuid,
        lease_for: Duration,
        progress: ProgressUpdate,
        now: OffsetDateTime,
    ) -> Result<bool, TransitionError> {
        self.check_lease(lease, "heartbeat")?;
        self.lease_expires_at = Some(now + lease_for);
        if progress.pct.is_some() {
            self.progress_pct = progress.pct;
        }
        if progress.detail.is_some() {
            self.status_detail = progress.detail;
        }
        self.touch(now);
        Ok(self.cancel_requested)
    }

    /// The worker finished it: `running → succeeded`. A cancel request that came too late
    /// does not undo finished work (as in Google's and Azure's operation APIs).
    pub fn succeed(
        &mut self,
        lease: Uuid,
        result: Option<serde_json::Value>,
        result_url: Option<String>,
        resources: Vec<Resource>,
        now: OffsetDateTime,
    ) -> Result<(), TransitionError> {
        self.check_lease(lease, "complete")?;
        self.become_(Status::Succeeded, "complete", now)?;
        self.result = result;
        self.result_url = result_url;
        self.resources = resources;
        self.progress_pct = Some(100.0);
        self.error = None;
        Ok(())
    }

    /// The worker reports a failure. When cancellation was requested it ends `cancelled`;
    /// when `retryable` and the policy allows, it goes back to `pending` with `retries + 1`
    /// and a `runAt` after the backoff; otherwise it ends `failed`.
    pub fn fail(
        &mut self,
        lease: Uuid,
        error: OperationError,
        retryable: bool,
        now: OffsetDateTime,
    ) -> Result<Status, TransitionError> {
        self.check_lease(lease, "fail")?;
        self.end_attempt(error, retryable, now)
    }

    /// Its lease ran out without a heartbeat (the worker died or hung): treated as a retryable
    /// failure of the attempt.
    pub fn expire_lease(&mut self, now: OffsetDateTime) -> Result<Status, TransitionError> {
        if self.status != Status::Running {
            return Err(TransitionError::Illegal {
                change: "expire the lease of",
                from: self.status,
            });
        }
        let error = OperationError {
            code: "lease_expired".into(),
            error_type: "LeaseExpired".into(),
            message: format!(
                "worker {} stopped heartbeating; its lease expired",
                self.worker.as_deref().unwrap_or("?")
            ),
        };
        self.end_attempt(error, true, now)
    }

    fn end_attempt(
        &mut self,
        error: OperationError,
        retryable: bool,
        now: OffsetDateTime,
    ) -> Result<Status, TransitionError> {
        if self.cancel_requested {
            self.cancel_with(now)?;
        } else if retryable && self.retry_policy.allows_retry(self.retries) {
            let delay = self.retry_policy.delay(self.id, self.retries);
            self.become_(Status::Pending, "retry", now)?;
            self.retries += 1;
            self.run_at = now + delay;
            self.lease_expires_at = None;
            self.error = Some(error);
        } else {
            self.become_(Status::Failed, "fail", now)?;
            self.error = Some(error);
        }
        Ok(self.status)
    }

    fn cancel_with(&mut self, now: OffsetDateTime) -> Result<(), TransitionError> {
        self.become_(Status::Cancelled, "cancel", now)?;
        self.error = Some(OperationError {
            code: "cancelled".into(),
            error_type: "Cancelled".into(),
            message: "the operation was cancelled".into(),
        });
        Ok(())
    }

    /// A client asks to cancel it: a pending operation ends `cancelled` at once; a running one
    /// records the request for its worker.
    pub fn cancel(&mut self, now: OffsetDateTime) -> Result<CancelOutcome, TransitionError> {
        match self.status {
            Status::Pending => {
                self.cancel_with(now)?;
                Ok(CancelOutcome::Cancelled)
            }
            Status::Running => {
                if !self.cancel_requested {
                    self.cancel_requested = true;
                    self.touch(now);
                }
                Ok(CancelOutcome::Requested)
            }
            from => Err(TransitionError::Illegal {
                change: "cancel",
                from,
            }),
        }
    }

    /// The worker gives it back unfinished (graceful shutdown): `running → pending`, ready
    /// at once, not counted as a retry.
    pub fn release(&mut self, lease: Uuid, now: OffsetDateTime) -> Result<(), TransitionError> {
        self.check_lease(lease, "release")?;
        if self.cancel_requested {
            return self.cancel_with(now);
        }
        self.become_(Status::Pending, "release", now)?;
        self.run_at = now;
        self.lease_expires_at = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewOperation, RetryPolicy};
    use proptest::prelude::*;

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-01-01 00:00 UTC)
    }

    fn op(max_retries: u32) -> Operation {
        let mut new = NewOperation::named("t");
        new.retry_policy = RetryPolicy {
            max_retries,
            ..RetryPolicy::default()
        };
        new.into_operation(Uuid::now_v7(), None, now())
    }

    fn err() -> OperationError {
        OperationError {
            code: "boom".into(),
            error_type: "ValueError".into(),
            message: "bad".into(),
        }
    }

    #[test]
    fn happy_path_bumps_version_and_sets_times() {
        let mut op = op(3);
        let lease = Uuid::now_v7();
        op.start(lease, "w1", Duration::seconds(30), now()).unwrap();
        assert_eq!((op.status, op.version), (Status::Running, 2));
        assert_eq!(op.lease_expires_at, Some(now() + Duration::seconds(30)));
        op.succeed(lease, Some(serde_json::json!(7)), None, vec![], now())
            .unwrap();
        assert_eq!((op.status, op.version), (Status::Succeeded, 3));
        assert_eq!(op.completed_at, Some(now()));
        assert_eq!(op.progress_pct, Some(100.0));
    }

    #[test]
    fn retryable_failure_requeues_with_backoff_until_retries_run_out() {
        let mut op = op(1);
        let first = Uuid::now_v7();
        op.start(first, "w", Duration::seconds(30), now()).unwrap();
        assert_eq!(op.fail(first, err(), true, now()).unwrap(), Status::Pending);
        assert_eq!(op.retries, 1);
        assert!(op.run_at > now());
        assert_eq!(op.error, Some(err()));
        let second = Uuid::now_v7();
        op.start(second, "w", Duration::seconds(30), now()).unwrap();
        assert_eq!(op.fail(second, err(), true, now()).unwrap(), Status::Failed);
        assert_eq!(op.retries, 1);
    }

    #[test]
    fn fatal_failure_fails_at_once() {
        let mut op = op(5);
        let lease = Uuid::now_v7();
        op.start(lease, "w", Duration::seconds(30), now()).unwrap();
        assert_eq!(op.fail(lease, err(), false, now()).unwrap(), Status::Failed);
        assert_eq!(op.retries, 0);
    }

    #[test]
    fn stale_lease_changes_nothing() {
        let mut op = op(3);
        let old = Uuid::now_v7();
        op.start(old, "w", Duration::seconds(1), now()).unwrap();
        op.expire_lease(now()).unwrap();
        let new = Uuid::now_v7();
        op.start(new, "w2", Duration::seconds(30), now()).unwrap();
        let before = op.clone();
        assert_eq!(
            op.succeed(old, None, None, vec![], now()),
            Err(TransitionError::StaleLease { lease: old })
        );
        assert_eq!(op, before);
    }

    #[test]
    fn cancel_of_running_is_a_request_and_ends_cancelled_on_failure_report() {
        let mut op = op(3);
        let lease = Uuid::now_v7();
        op.start(lease, "w", Duration::seconds(30), now()).unwrap();
        assert_eq!(op.cancel(now()).unwrap(), CancelOutcome::Requested);
        assert_eq!(op.status, Status::Running);
        assert!(
            op.heartbeat(
                lease,
                Duration::seconds(30),
                ProgressUpdate::default(),
                now()
            )
            .unwrap()
        );
        assert_eq!(
            op.fail(lease, err(), true, now()).unwrap(),
            Status::Cancelled
        );
        assert_eq!(op.error.as_ref().unwrap().code, "cancelled");
    }

    #[test]
    fn terminal_states_refuse_every_change() {
        let mut op = op(0);
        op.cancel(now()).unwrap();
        let before = op.clone();
        assert!(op.cancel(now()).is_err());
        assert!(
            op.start(Uuid::now_v7(), "w", Duration::seconds(1), now())
                .is_err()
        );
        assert!(op.expire_lease(now()).is_err());
        assert_eq!(op, before);
    }

    #[derive(Debug, Clone)]
    enum Action {
        Start,
        Heartbeat(bool),
        Succeed(bool),
        Fail(bool, bool),
        Expire,
        Cancel,
        Release(bool),
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            Just(Action::Start),
            any::<bool>().prop_map(Action::Heartbeat),
            any::<bool>().prop_map(Action::Succeed),
            (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Action::Fail(a, b)),
            Just(Action::Expire),
            Just(Action::Cancel),
            any::<bool>().prop_map(Action::Release),
        ]
    }

    proptest! {
        /// Whatever is attempted, every change that happens is one the table allows, a refused
        /// change leaves the operation as it was, and retries never exceed the policy.
        #[test]
        fn random_actions_follow_the_lifecycle(actions in proptest::collection::vec(action(), 1..40), max in 0u32..4) {
            let mut op = op(max);
            let mut current = Uuid::nil();
            for action in actions {
                let before = op.clone();
                let lease_of = |stale: bool| if stale { Uuid::from_u128(42) } else { current };
                let result = match action {
                    Action::Start => {
                        let lease = Uuid::now_v7();
                        let r = op.start(lease, "w", Duration::seconds(5), now()).map(|_| ());
                        if r.is_ok() { current = lease; }
                        r
                    }
                    Action::Heartbeat(stale) => op.heartbeat(lease_of(stale), Duration::seconds(5), ProgressUpdate::default(), now()).map(|_| ()),
                    Action::Succeed(stale) => op.succeed(lease_of(stale), None, None, vec![], now()),
                    Action::Fail(stale, retryable) => op.fail(lease_of(stale), err(), retryable, now()).map(|_| ()),
                    Action::Expire => op.expire_lease(now()).map(|_| ()),
                    Action::Cancel => op.cancel(now()).map(|_| ()),
                    Action::Release(stale) => op.release(lease_of(stale), now()),
                };
                match result {
                    Ok(()) => {
                        prop_assert!(before.status == op.status || before.status.can_become(op.status));
                        prop_assert!(!before.status.is_terminal());
                        prop_assert!(op.version > before.version || op == before);
                    }
                    Err(_) => prop_assert_eq!(&op, &before),
                }
                prop_assert!(op.retries <= max);
            }
        }
    }
}
