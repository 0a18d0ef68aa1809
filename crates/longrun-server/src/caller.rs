//! Who is calling, and what that caller may do and see: the role and tenant rules.
//!
//! | role | may | sees |
//! |---|---|---|
//! | submitter | submit, get, list, result, events, cancel, delete | its own customer's operations |
//! | worker | claim (within its key's names and queues), heartbeat, complete, fail, release; submit children of an operation it may be running | nothing to read: reports are fenced by the lease id |
//! | admin | everything | every customer's operations |
//!
//! A route the role may not use is `403`. An operation the caller may not see is `404` with the
//! very body an unknown id gets, on every route, and a `parentId` it may not see is `422`
//! parent-not-found as if unknown: nobody learns that another tenant's operation exists.

use longrun_core::{ApiKey, ClaimFilter, Operation, Owner, Role, Status, Store};
use uuid::Uuid;

use crate::config::ServerConfig;
use crate::error::{ApiError, ProblemKind};

/// What a route does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Get, list, result, events.
    Read,
    /// Cancel or delete.
    Manage,
    /// Claim, heartbeat, complete, fail, release.
    Work,
}

/// The authenticated caller (in open mode: the default owner, acting as an admin).
#[derive(Debug, Clone)]
pub struct Caller {
    role: Role,
    owner: Owner,
    filter: ClaimFilter,
}

impl Caller {
    /// Open mode: every caller is the configured default owner, as an admin.
    pub fn open(config: &ServerConfig) -> Self {
        Self {
            role: Role::Admin,
            owner: config.default_owner.clone(),
            filter: ClaimFilter::default(),
        }
    }

    /// The holder of `key`.
    pub fn from_key(key: ApiKey) -> Self {
        Self {
            role: key.role,
            owner: Owner {
                customer: key.customer,
                user: key.user,
                user_name: key.user_name,
            },
            filter: ClaimFilter {
                names: key.names,
                queues: key.queues,
            },
        }
    }

    /// `403` unless the role may do `action`.
    pub fn allow(&self, action: Action) -> Result<(), ApiError> {
        let allowed = match (self.role, action) {
            (Role::Admin, _) => true,
            (Role::Submitter, action) => action != Action::Work,
            (Role::Worker, action) => action == Action::Work,
        };
        if allowed {
            return Ok(());
        }
        let what = match action {
            Action::Read => "read operations",
            Action::Manage => "cancel or delete operations",
            Action::Work => "use the worker protocol",
        };
        Err(forbidden(format!(
            "a {} key may not {what}",
            self.role.as_str()
        )))
    }

    /// Whether the caller may see `op` (its own customer's, or any for an admin).
    fn sees(&self, op: &Operation) -> bool {
        self.role == Role::Admin || op.customer == self.owner.customer
    }

    /// The operation `id` when the caller may see it; else `404`, exactly as if it did not
    /// exist.
    pub async fn find(&self, store: &dyn Store, id: Uuid) -> Result<Operation, ApiError> {
        store
            .get(id)
            .await?
            .filter(|op| self.sees(op))
            .ok_or_else(|| ApiError::operation_not_found(id))
    }

    /// `404` (as for an unknown id) unless the caller may see operation `id`; costs an admin
    /// nothing.
    pub async fn check_sees(&self, store: &dyn Store, id: Uuid) -> Result<(), ApiError> {
        if self.role != Role::Admin {
            self.find(store, id).await?;
        }
        Ok(())
    }

    /// The customer a listing is confined to, given the `customer` the request asked for:
    /// an admin's choice (`None`: all), else the caller's own. `None` when the request asked a
    /// non-admin for another customer's operations: there are none it may see.
    pub fn list_customer(&self, requested: Option<i64>) -> Option<Option<i64>> {
        if self.role == Role::Admin {
            return Some(requested);
        }
        let own = self.owner.customer;
        requested.is_none_or(|c| c == own).then_some(Some(own))
    }

    /// The owner of a new operation: the caller as creator; the customer is the parent's for
    /// a child, else the caller's. A worker may only submit children (`403` otherwise) of an
    /// operation it may be running: `running`, with a name and queue its key may claim. A
    /// parent the caller may not use is `422` parent-not-found, as if it did not exist.
    pub async fn owner_of_new(
        &self,
        store: &dyn Store,
        parent_id: Option<Uuid>,
    ) -> Result<Owner, ApiError> {
        let Some(parent_id) = parent_id else {
            if self.role == Role::Worker {
                return Err(forbidden(
                    "a worker key may only submit children (`parentId`) of an operation it runs",
                ));
            }
            return Ok(self.owner.clone());
        };
        let parent = store
            .get(parent_id)
            .await?
            .filter(|parent| match self.role {
                Role::Worker => {
                    parent.status == Status::Running
                        && self.filter.accepts(&parent.name, &parent.queue)
                }
                _ => self.sees(parent),
            })
            .ok_or(longrun_core::StoreError::ParentNotFound(parent_id))?;
        Ok(Owner {
            customer: parent.customer,
            ..self.owner.clone()
        })
    }

    /// What a claim may take: the request's names and queues narrowed to the key's (when the
    /// key has any). Asking only for names or queues outside the key's is `403`.
    pub fn claim_filter(&self, requested: ClaimFilter) -> Result<ClaimFilter, ApiError> {
        Ok(ClaimFilter {
            names: narrow("names", requested.names, &self.filter.names)?,
            queues: narrow("queues", requested.queues, &self.filter.queues)?,
        })
    }
}

/// `asked` within `allowed` (empty: anything).
fn narrow(field: &str, asked: Vec<String>, allowed: &[String]) -> Result<Vec<String>, ApiError> {
    if allowed.is_empty() {
        return Ok(asked);
    }
    if asked.is_empty() {
        return Ok(allowed.to_vec());
    }
    let both: Vec<String> = asked.into_iter().filter(|a| allowed.contains(a)).collect();
    if both.is_empty() {
        return Err(forbidden(format!(
            "this key may only claim {field} {}",
            allowed.join(", ")
        )));
    }
    Ok(both)
}

fn forbidden(detail: impl Into<String>) -> ApiError {
    ApiError::new(ProblemKind::Forbidden, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, names: &[&str]) -> Caller {
        Caller {
            role,
            owner: Owner {
                customer: 7,
                user: 1,
                user_name: "u".into(),
            },
            filter: ClaimFilter {
                names: names.iter().map(|n| n.to_string()).collect(),
                queues: vec![],
            },
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn roles_allow_their_routes_only() {
        let [submitter, worker, admin] =
            [Role::Submitter, Role::Worker, Role::Admin].map(|r| caller(r, &[]));
        for action in [Action::Read, Action::Manage, Action::Work] {
            assert!(admin.allow(action).is_ok());
            assert_eq!(submitter.allow(action).is_ok(), action != Action::Work);
            assert_eq!(worker.allow(action).is_ok(), action == Action::Work);
        }
    }

    #[test]
    fn a_keys_names_narrow_a_claim() {
        let worker = caller(Role::Worker, &["a", "b"]);
        let ask = |names: &[&str]| {
            worker.claim_filter(ClaimFilter {
                names: strings(names),
                queues: strings(&["q"]),
            })
        };
        assert_eq!(ask(&[]).unwrap().names, strings(&["a", "b"]));
        assert_eq!(ask(&["b", "c"]).unwrap().names, strings(&["b"]));
        assert_eq!(ask(&["b"]).unwrap().queues, strings(&["q"]));
        assert_eq!(ask(&["c"]).unwrap_err().kind(), ProblemKind::Forbidden);
        let any = caller(Role::Worker, &[]);
        let filter = ClaimFilter {
            names: strings(&["c"]),
            queues: vec![],
        };
        assert_eq!(any.claim_filter(filter).unwrap().names, strings(&["c"]));
    }

    #[test]
    fn listings_are_confined_to_the_callers_customer() {
        let submitter = caller(Role::Submitter, &[]);
        assert_eq!(submitter.list_customer(None), Some(Some(7)));
        assert_eq!(submitter.list_customer(Some(7)), Some(Some(7)));
        assert_eq!(submitter.list_customer(Some(8)), None);
        let admin = caller(Role::Admin, &[]);
        assert_eq!(admin.list_customer(None), Some(None));
        assert_eq!(admin.list_customer(Some(8)), Some(Some(8)));
    }
}
