//! What a handler gets from the guard: proof that this call was authenticated, named a
//! registered purpose and passed the access rules, with the tenant to scope every query by and
//! the categories the caller may read. Only the guard can make one; a handler reached without it
//! (a wiring mistake) fails closed.

use std::sync::{Arc, Mutex};

use tutela_proto::common::{DataCategory, Purpose};

use crate::categories::CategorySet;
use crate::error::{Error, Result};
use crate::principal::Principal;
use crate::register::PurposeRule;

#[derive(Debug)]
struct Inner {
    principal: Principal,
    purpose: Purpose,
    rule: Arc<PurposeRule>,
    readable: CategorySet,
    rpc: String,
    policies: Vec<String>,
    accesses: Mutex<Vec<(String, CategorySet)>>,
}

/// An authorised call. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Authorized(Arc<Inner>);

impl Authorized {
    pub(crate) fn new(
        principal: Principal,
        purpose: Purpose,
        rule: Arc<PurposeRule>,
        readable: CategorySet,
        rpc: String,
        policies: Vec<String>,
    ) -> Self {
        Self(Arc::new(Inner {
            principal,
            purpose,
            rule,
            readable,
            rpc,
            policies,
            accesses: Mutex::new(Vec::new()),
        }))
    }

    /// The guard's authorisation of `request`, or a failure if the request did not pass the guard.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Error::internal("handler reached without the guard's authorisation"))
    }

    /// The tenant every query of this call is scoped to.
    pub fn tenant(&self) -> &str {
        &self.0.principal.tenant
    }

    /// Who is calling.
    pub fn principal(&self) -> &Principal {
        &self.0.principal
    }

    /// The purpose of the call.
    pub fn purpose(&self) -> Purpose {
        self.0.purpose
    }

    /// What the register says about the purpose.
    pub fn rule(&self) -> &PurposeRule {
        &self.0.rule
    }

    /// The categories the caller may read: the access rules' grant within the register's limit
    /// for the purpose.
    pub fn readable(&self) -> CategorySet {
        self.0.readable
    }

    /// The RPC (`package.Service/Method`).
    pub fn rpc(&self) -> &str {
        &self.0.rpc
    }

    /// Ids of the policies that permitted the call.
    pub fn policies(&self) -> &[String] {
        &self.0.policies
    }

    /// Fails unless the caller may read `category` for this purpose.
    pub fn require_readable(&self, category: DataCategory) -> Result<()> {
        if self.0.readable.contains(category) {
            Ok(())
        } else {
            Err(Error::CategoryDenied(category.short_name()))
        }
    }

    /// Fails unless the purpose may touch `category` at all (data minimisation on writes).
    pub fn require_purpose_allows(&self, category: DataCategory) -> Result<()> {
        if self.0.rule.categories.contains(category) {
            Ok(())
        } else {
            Err(Error::CategoryDenied(category.short_name()))
        }
    }
}

impl Authorized {
    /// Fails unless the caller may act on `subject_id` at all: a learner only on themselves, a
    /// guardian only on their wards; staff, services and partners are limited by the access rules
    /// and the tenant instead. A subject out of reach looks the same as one that does not exist.
    pub fn require_subject(&self, subject_id: &str) -> Result<()> {
        use crate::principal::PrincipalKind;
        let p = &self.0.principal;
        let reachable = match p.kind {
            PrincipalKind::Learner => p.id == subject_id,
            PrincipalKind::Guardian => p.wards.iter().any(|w| w == subject_id),
            _ => true,
        };
        if reachable {
            Ok(())
        } else {
            Err(Error::NotFound("subject"))
        }
    }
}

impl Authorized {
    /// Notes that this call read or changed `categories` of `subject_id`'s data. The guard writes
    /// one audit record per subject before the response leaves, and fails the call if it cannot.
    pub fn record_access(&self, subject_id: &str, categories: CategorySet) {
        let mut accesses = self.0.accesses.lock().unwrap_or_else(|p| p.into_inner());
        match accesses.iter_mut().find(|(s, _)| s == subject_id) {
            Some((_, seen)) => *seen = seen.union(categories),
            None => accesses.push((subject_id.to_owned(), categories)),
        }
    }

    /// The accesses recorded so far, emptied.
    pub(crate) fn take_accesses(&self) -> Vec<(String, CategorySet)> {
        std::mem::take(&mut *self.0.accesses.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
