//! The guard that stands in front of every tutela RPC: who is calling (principal), why (purpose),
//! whether the processing register and the access rules allow it, whether the learner consented,
//! and an audit record of it all. Services receive only what the guard has authorised.

pub mod access;
pub mod audit;
pub mod authorized;
pub mod categories;
pub mod consent;
pub mod error;
pub mod fields;
pub mod guard;
pub mod idempotency;
pub mod matrix;
pub mod methods;
pub mod principal;
pub mod redact;
pub mod register;
pub mod request;
pub mod rights;
pub mod scope;
pub mod token_call;
pub mod validate;

pub use access::{AccessRules, Decision, DecisionKey};
pub use authorized::{Authorized, SubjectAccess};
pub use categories::CategorySet;
pub use consent::{ConsentGate, ConsentSnapshot, ConsentSource};
pub use error::{AuthFailure, Error, Precondition, Result, Violation};
pub use guard::{Guard, GuardLayer};
pub use methods::MethodTable;
pub use principal::{Principal, PrincipalKind};
pub use register::{PurposeRule, Register};
pub use scope::Tenant;
pub use token_call::TokenCall;
