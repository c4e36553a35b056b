//! Access rules in Cedar: a schema and policies validated against it at start-up, and decisions
//! cached on exactly the attributes the rules can read.
//!
//! Why the cache is sound: a Cedar request is built *only* from a [`DecisionKey`] — the principal
//! entity carries the key's kind, roles and partner flag and nothing else, the action is the key's
//! RPC, the resource the key's service, the context the key's purpose — and Cedar evaluation is
//! deterministic. So a cached decision is exactly what evaluating its key again would give; it can
//! never turn a deny into an allow. Policies cannot name individual principals (the principal's id
//! is not in the request), which is intended: rules are about kinds and roles. Grants of a
//! subject's own data are keyed on `principal.kind`, the fact the guard's reach check reads
//! ([`Principal::reach`]), so the two cannot disagree about who a learner or guardian is. A
//! reload builds new [`AccessRules`] with an empty cache.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use tutela_proto::common::{DataCategory, Purpose};

use crate::categories::CategorySet;
use crate::principal::{Principal, PrincipalKind};

/// The schema shipped with tutela.
pub const DEFAULT_SCHEMA: &str = include_str!("../cedar/tutela.cedarschema");
/// The policies shipped with tutela.
pub const DEFAULT_POLICIES: &str = include_str!("../cedar/policies.cedar");

/// Most cached decisions before the cache is emptied (keys are few in practice: roles × RPCs ×
/// purposes).
const CACHE_LIMIT: usize = 65_536;

/// Everything a decision depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecisionKey {
    /// Principal kind.
    pub kind: PrincipalKind,
    /// Sorted, de-duplicated roles.
    pub roles: Vec<String>,
    /// Whether the principal carries a partner id.
    pub has_partner: bool,
    /// The RPC, as its gRPC path without the leading slash.
    pub rpc: String,
    /// The tutela service the RPC belongs to (e.g. `privacy`).
    pub service: String,
    /// The purpose of the call.
    pub purpose: Purpose,
}

impl DecisionKey {
    /// The key of `principal` calling `rpc` of `service` for `purpose`. The rules see a
    /// learner, guardian, partner or service as its kind and its kind's own role, and staff as
    /// their staff roles: no token can show the rules a kind role its kind does not have, so
    /// what the rules grant follows from the same kind as the guard's reach check, even if a
    /// policy names a kind role instead of `principal.kind`.
    pub fn new(principal: &Principal, rpc: &str, service: &str, purpose: Purpose) -> Self {
        let roles = match principal.kind.own_role() {
            Some(own) => vec![own.to_owned()],
            None => principal
                .roles
                .iter()
                .filter(|r| PrincipalKind::for_role(r) == PrincipalKind::Staff)
                .cloned()
                .collect(),
        };
        Self {
            kind: principal.kind,
            roles,
            has_partner: principal.partner.is_some(),
            rpc: rpc.to_owned(),
            service: service.to_owned(),
            purpose,
        }
    }
}

/// The outcome of the access rules for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the RPC may be called.
    pub allowed: bool,
    /// The data categories the caller may read (before the register's limit for the purpose).
    pub readable: CategorySet,
    /// Ids of the policies that decided the RPC (permits when allowed, forbids when denied).
    pub policies: Vec<String>,
}

/// Why the access rules did not load.
#[derive(Debug, thiserror::Error)]
pub enum AccessRulesError {
    /// The schema does not parse.
    #[error("cedar schema: {0}")]
    Schema(String),
    /// The policies do not parse.
    #[error("cedar policies: {0}")]
    Policies(String),
    /// The policies do not validate against the schema.
    #[error("cedar policies do not validate against the schema: {0}")]
    Validation(String),
}

/// Validated Cedar policies with their decision cache.
pub struct AccessRules {
    schema: Schema,
    policies: PolicySet,
    authorizer: Authorizer,
    actions: HashSet<String>,
    names: HashMap<cedar_policy::PolicyId, String>,
    read_actions: Vec<(DataCategory, EntityUid)>,
    cache: RwLock<HashMap<DecisionKey, Arc<Decision>>>,
}

impl std::fmt::Debug for AccessRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRules")
            .field("policies", &self.policies.policies().count())
            .field("actions", &self.actions.len())
            .finish_non_exhaustive()
    }
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, AccessRulesError> {
    let t =
        EntityTypeName::from_str(type_name).map_err(|e| AccessRulesError::Schema(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

impl AccessRules {
    /// The rules shipped with tutela.
    pub fn default_rules() -> Result<Self, AccessRulesError> {
        Self::new(DEFAULT_SCHEMA, DEFAULT_POLICIES)
    }

    /// Parses and validates `policies` against `schema` (strict mode: a policy that mentions an
    /// unknown action, entity type or attribute is refused).
    pub fn new(schema: &str, policies: &str) -> Result<Self, AccessRulesError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(schema)
            .map_err(|e| AccessRulesError::Schema(format!("{e:?}")))?;
        let policies = PolicySet::from_str(policies)
            .map_err(|e| AccessRulesError::Policies(format!("{e:?}")))?;
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            return Err(AccessRulesError::Validation(errors.join("; ")));
        }
        // Audit records name policies by their @id, so every policy must have one, once.
        let mut names = HashMap::new();
        let mut seen = HashSet::new();
        for policy in policies.policies() {
            let Some(name) = policy.annotation("id") else {
                return Err(AccessRulesError::Policies(format!(
                    "policy {} has no @id(\"...\") annotation",
                    policy.id()
                )));
            };
            if !seen.insert(name.to_owned()) {
                return Err(AccessRulesError::Policies(format!(
                    "@id({name:?}) is used twice"
                )));
            }
            names.insert(policy.id().clone(), name.to_owned());
            // `action == <group>` validates but matches no request (requests name single
            // actions): a rule that silently grants or forbids nothing. Refuse it.
            if let cedar_policy::ActionConstraint::Eq(action) = policy.action_constraint()
                && schema.action_groups().any(|group| *group == action)
            {
                return Err(AccessRulesError::Policies(format!(
                    "@id({name:?}): `action == {action}` names a group of actions and matches no \
                     call; write `action in {action}`"
                )));
            }
        }
        let actions: HashSet<String> = schema
            .actions()
            .map(|a| a.id().unescaped().to_owned())
            .collect();
        let mut read_actions = Vec::new();
        for c in CategorySet::personal().iter() {
            let name = format!("read::{}", c.short_name());
            if !actions.contains(&name) {
                return Err(AccessRulesError::Schema(format!(
                    "schema lacks action {name:?}"
                )));
            }
            read_actions.push((c, uid("Tutela::Action", &name)?));
        }
        Ok(Self {
            schema,
            policies,
            authorizer: Authorizer::new(),
            actions,
            names,
            read_actions,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The roles the policies name (`Tutela::Role::"..."` anywhere in a policy), sorted: the
    /// staff roles an operator's rules grant something to, plus any kind role they name.
    pub fn roles(&self) -> Vec<String> {
        fn walk(value: &serde_json::Value, out: &mut HashSet<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if map.get("type").and_then(|t| t.as_str()) == Some("Tutela::Role")
                        && let Some(id) = map.get("id").and_then(|i| i.as_str())
                    {
                        out.insert(id.to_owned());
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut roles = HashSet::new();
        for policy in self.policies.policies() {
            if let Ok(json) = policy.to_json() {
                walk(&json, &mut roles);
            }
        }
        let mut roles: Vec<String> = roles.into_iter().collect();
        roles.sort();
        roles
    }

    /// Whether the schema has an action for `rpc` (a gRPC path without the leading slash).
    pub fn has_action(&self, rpc: &str) -> bool {
        self.actions.contains(rpc)
    }

    /// The decision for `key`, from the cache or by evaluating the policies.
    pub fn decide(&self, key: &DecisionKey) -> Arc<Decision> {
        if let Ok(cache) = self.cache.read()
            && let Some(hit) = cache.get(key)
        {
            return hit.clone();
        }
        let decision = Arc::new(self.evaluate(key));
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key.clone(), decision.clone());
        }
        decision
    }

    /// Evaluates the policies for `key` without the cache. Any failure to build the request
    /// denies.
    pub fn evaluate(&self, key: &DecisionKey) -> Decision {
        let deny = Decision {
            allowed: false,
            readable: CategorySet::EMPTY,
            policies: Vec::new(),
        };
        let Ok(built) = self.request_parts(key) else {
            return deny;
        };
        let (principal, resource, entities, context) = built;
        let ask = |action: EntityUid| {
            Request::new(
                principal.clone(),
                action,
                resource.clone(),
                context.clone(),
                Some(&self.schema),
            )
            .ok()
            .map(|r| self.authorizer.is_authorized(&r, &self.policies, &entities))
        };
        let Ok(rpc_action) = uid("Tutela::Action", &key.rpc) else {
            return deny;
        };
        if !self.actions.contains(&key.rpc) {
            return deny;
        }
        let Some(response) = ask(rpc_action) else {
            return deny;
        };
        let allowed = response.decision() == CedarDecision::Allow;
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| {
                self.names
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| id.to_string())
            })
            .collect();
        policies.sort();
        let mut readable = CategorySet::EMPTY;
        if allowed {
            for (category, action) in &self.read_actions {
                if ask(action.clone()).is_some_and(|r| r.decision() == CedarDecision::Allow) {
                    readable.insert(*category);
                }
            }
        }
        Decision {
            allowed,
            readable,
            policies,
        }
    }

    fn request_parts(
        &self,
        key: &DecisionKey,
    ) -> Result<(EntityUid, EntityUid, Entities, Context), AccessRulesError> {
        // A fixed principal id: the decision must not depend on who, only on what they are.
        let principal = uid("Tutela::Principal", "caller")?;
        let mut parents = HashSet::new();
        let mut entities = Vec::new();
        for role in &key.roles {
            let role_uid = uid("Tutela::Role", role)?;
            parents.insert(role_uid.clone());
            entities.push(Entity::new_no_attrs(role_uid, HashSet::new()));
        }
        let attrs = HashMap::from([
            (
                "kind".to_owned(),
                RestrictedExpression::new_string(key.kind.as_str().to_owned()),
            ),
            (
                "has_partner".to_owned(),
                RestrictedExpression::new_bool(key.has_partner),
            ),
        ]);
        entities.push(
            Entity::new(principal.clone(), attrs, parents)
                .map_err(|e| AccessRulesError::Schema(e.to_string()))?,
        );
        let resource = uid("Tutela::Service", &key.service)?;
        entities.push(Entity::new_no_attrs(resource.clone(), HashSet::new()));
        let entities = Entities::from_entities(entities, Some(&self.schema))
            .map_err(|e| AccessRulesError::Schema(e.to_string()))?;
        let context = Context::from_pairs([(
            "purpose".to_owned(),
            RestrictedExpression::new_string(key.purpose.short_name().to_owned()),
        )])
        .map_err(|e| AccessRulesError::Schema(e.to_string()))?;
        Ok((principal, resource, entities, context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(roles: &[&str], rpc: &str, purpose: Purpose) -> DecisionKey {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        DecisionKey {
            kind: roles
                .first()
                .map_or(PrincipalKind::Staff, |r| PrincipalKind::for_role(r)),
            roles,
            has_partner: false,
            rpc: rpc.to_owned(),
            service: "privacy".to_owned(),
            purpose,
        }
    }

    const EXPORT: &str = "tutela.privacy.v1.SubjectData/ExportSubject";
    const ERASE: &str = "tutela.privacy.v1.SubjectData/EraseSubject";

    #[test]
    fn the_default_rules_validate() {
        AccessRules::default_rules().unwrap();
    }

    #[test]
    fn the_dpo_handles_rights_requests_and_reads_every_category() {
        let rules = AccessRules::default_rules().unwrap();
        let d = rules.decide(&key(&["dpo"], ERASE, Purpose::SubjectRights));
        assert!(d.allowed);
        assert_eq!(d.policies, ["dpo-handles-rights-requests"]);
        assert_eq!(d.readable, CategorySet::personal());
    }

    #[test]
    fn a_tutor_cannot_erase_and_nothing_is_allowed_for_the_wrong_purpose() {
        let rules = AccessRules::default_rules().unwrap();
        assert!(
            !rules
                .decide(&key(&["tutor"], ERASE, Purpose::SubjectRights))
                .allowed
        );
        assert!(
            !rules
                .decide(&key(&["dpo"], ERASE, Purpose::Marketing))
                .allowed
        );
        assert!(
            !rules
                .decide(&key(&[], EXPORT, Purpose::SubjectRights))
                .allowed
        );
    }

    #[test]
    fn a_learner_may_export_but_not_erase() {
        let rules = AccessRules::default_rules().unwrap();
        assert!(
            rules
                .decide(&key(&["learner"], EXPORT, Purpose::SubjectRights))
                .allowed
        );
        assert!(
            !rules
                .decide(&key(&["learner"], ERASE, Purpose::SubjectRights))
                .allowed
        );
    }

    /// What the rules grant a subject on their own data follows from the kind, like the guard's
    /// reach: a staff or service principal showing the rules a learner's or guardian's role
    /// (which authentication refuses anyway) gains nothing from it.
    #[test]
    fn own_data_grants_follow_the_kind_not_a_role() {
        let rules = AccessRules::default_rules().unwrap();
        let get = "tutela.enrolment.v1.LearnerService/GetLearner";
        let own = |kind, roles: &[&str]| {
            rules.evaluate(&DecisionKey {
                kind,
                ..key(roles, get, Purpose::SubjectRights)
            })
        };
        assert!(own(PrincipalKind::Learner, &["learner"]).allowed);
        assert!(own(PrincipalKind::Guardian, &["guardian"]).allowed);
        for (kind, roles) in [
            (PrincipalKind::Staff, &["learner"][..]),
            (PrincipalKind::Staff, &["tutor", "guardian"]),
            (PrincipalKind::Service, &["learner"]),
        ] {
            let d = own(kind, roles);
            assert!(!d.allowed, "{kind:?} {roles:?}: {:?}", d.policies);
        }
    }

    #[test]
    fn an_unknown_rpc_is_denied() {
        let rules = AccessRules::default_rules().unwrap();
        let d = rules.decide(&key(
            &["dpo"],
            "tutela.privacy.v1.SubjectData/Nope",
            Purpose::SubjectRights,
        ));
        assert!(!d.allowed);
        assert!(d.readable.is_empty());
    }

    #[test]
    fn a_rule_naming_a_group_with_equals_is_refused() {
        let policies = format!(
            "{DEFAULT_POLICIES}\n@id(\"oops\")\npermit (principal, action == Tutela::Action::\"rights_read\", resource);\n"
        );
        let err = AccessRules::new(DEFAULT_SCHEMA, &policies).unwrap_err();
        assert!(err.to_string().contains("oops"), "{err}");
    }

    #[test]
    fn a_forbid_wins_over_a_permit() {
        let rules = AccessRules::new(
            DEFAULT_SCHEMA,
            &format!(
                "{DEFAULT_POLICIES}\n@id(\"test-forbid\") forbid (principal in Tutela::Role::\"dpo\", action == Tutela::Action::\"{ERASE}\", resource);"
            ),
        )
        .unwrap();
        let d = rules.decide(&key(&["dpo"], ERASE, Purpose::SubjectRights));
        assert!(!d.allowed);
        assert_eq!(d.policies, ["test-forbid"]);
    }

    #[test]
    fn policies_that_do_not_match_the_schema_are_refused() {
        let err = AccessRules::new(
            DEFAULT_SCHEMA,
            "permit (principal, action == Tutela::Action::\"no-such-action\", resource);",
        )
        .unwrap_err();
        assert!(matches!(err, AccessRulesError::Validation(_)), "{err}");
    }

    #[test]
    fn a_cached_decision_equals_a_fresh_evaluation() {
        let rules = AccessRules::default_rules().unwrap();
        for roles in [&["dpo"][..], &["tutor"], &["learner"], &["partner"], &[]] {
            for rpc in [EXPORT, ERASE] {
                for (purpose, _) in tutela_proto::PURPOSE_NAMES {
                    let k = key(roles, rpc, purpose);
                    let first = rules.decide(&k);
                    let cached = rules.decide(&k);
                    assert_eq!(*first, rules.evaluate(&k));
                    assert_eq!(*cached, *first);
                }
            }
        }
    }
}
