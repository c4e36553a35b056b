//! The access matrix: role × RPC × purpose → allowed, with the categories readable, computed by
//! asking the rules and register in force exactly as the guard does on a call (the same
//! decision key, the register's limit on the categories), so that it cannot drift from what is
//! enforced. `tutela policies --matrix` prints it for integrators, who then need not read Cedar.
//!
//! What the matrix does not show: which subjects a caller reaches (a learner only themselves, a
//! guardian only their wards) and whether a subject consented, which the guard checks per call.

use serde::Serialize;
use tutela_proto::PURPOSE_NAMES;

use crate::access::{AccessRules, DecisionKey};
use crate::methods::{Authorisation, MethodTable};
use crate::principal::PrincipalKind;
use crate::register::Register;

/// One role calling one RPC for one purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatrixEntry {
    /// A staff role the policies name, or a kind's own role (`learner`, `guardian`, `partner`,
    /// `service`).
    pub role: String,
    /// `package.Service/Method`.
    pub rpc: String,
    /// The purpose's short name.
    pub purpose: &'static str,
    /// Whether the guard lets the call through.
    pub allowed: bool,
    /// The ErrorInfo reason of the refusal when not allowed (`PURPOSE_NOT_REGISTERED`,
    /// `ACCESS_DENIED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<&'static str>,
    /// The categories the caller may read (short names); empty when refused.
    pub readable: Vec<&'static str>,
    /// Whether the register makes the call depend on the subject's consent.
    pub consent_required: bool,
    /// The `@id`s of the policies that decided it (permits when allowed, forbids when refused).
    pub policies: Vec<String>,
}

/// The whole matrix.
#[derive(Debug, Clone, Serialize)]
pub struct AccessMatrix {
    /// Every role × guarded RPC × purpose, sorted by role, RPC and purpose.
    pub entries: Vec<MatrixEntry>,
    /// The RPCs a token inside their message authorises, which no role needs (and no rule
    /// decides).
    pub message_token_rpcs: Vec<String>,
}

/// The roles the matrix covers: every kind's own role and every role the policies name.
fn roles(rules: &AccessRules) -> Vec<String> {
    let mut roles: Vec<String> = PrincipalKind::ALL
        .iter()
        .filter_map(|k| k.own_role())
        .map(str::to_owned)
        .chain(rules.roles())
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// The matrix of `rules` and `register` over the RPCs of `methods`.
pub fn access_matrix(
    rules: &AccessRules,
    register: &Register,
    methods: &MethodTable,
) -> AccessMatrix {
    let mut guarded: Vec<_> = methods
        .iter()
        .filter(|m| m.authorisation == Authorisation::Guarded)
        .collect();
    guarded.sort_by(|a, b| a.rpc.cmp(&b.rpc));
    let mut message_token_rpcs: Vec<String> = methods
        .iter()
        .filter(|m| m.authorisation == Authorisation::MessageToken)
        .map(|m| m.rpc.clone())
        .collect();
    message_token_rpcs.sort();
    let mut entries = Vec::new();
    for role in roles(rules) {
        let kind = PrincipalKind::for_role(&role);
        for method in &guarded {
            for (purpose, purpose_name) in PURPOSE_NAMES {
                // The key the guard builds for a token of this role (see `DecisionKey::new`).
                let key = DecisionKey {
                    kind,
                    roles: vec![role.clone()],
                    has_partner: kind == PrincipalKind::Partner,
                    rpc: method.rpc.clone(),
                    service: method.area.clone(),
                    purpose,
                };
                let rule = register.rule(purpose);
                let decision = rules.decide(&key);
                let allowed = rule.is_some() && decision.allowed;
                let refusal = match (rule, decision.allowed) {
                    (None, _) => Some("PURPOSE_NOT_REGISTERED"),
                    (Some(_), false) => Some("ACCESS_DENIED"),
                    (Some(_), true) => None,
                };
                let readable = match rule {
                    Some(rule) if allowed => decision.readable.intersect(rule.categories).names(),
                    _ => Vec::new(),
                };
                entries.push(MatrixEntry {
                    role: role.clone(),
                    rpc: method.rpc.clone(),
                    purpose: purpose_name,
                    allowed,
                    refusal,
                    readable,
                    consent_required: rule.is_some_and(|r| r.consent_required),
                    policies: decision.policies.clone(),
                });
            }
        }
    }
    AccessMatrix {
        entries,
        message_token_rpcs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix_of(policies: &str) -> AccessMatrix {
        let rules = AccessRules::new(crate::access::DEFAULT_SCHEMA, policies).unwrap();
        access_matrix(
            &rules,
            &Register::default_register().unwrap(),
            &MethodTable::from_pool(tutela_proto::descriptor_pool().unwrap()),
        )
    }

    fn entry<'a>(m: &'a AccessMatrix, role: &str, rpc: &str, purpose: &str) -> &'a MatrixEntry {
        m.entries
            .iter()
            .find(|e| e.role == role && e.rpc.ends_with(rpc) && e.purpose == purpose)
            .unwrap_or_else(|| panic!("{role} {rpc} {purpose}"))
    }

    #[test]
    fn the_matrix_asks_the_rules_in_force() {
        let m = matrix_of(crate::access::DEFAULT_POLICIES);
        let dpo = entry(&m, "dpo", "SubjectData/DescribeSubject", "subject_rights");
        assert!(dpo.allowed, "{dpo:?}");
        assert!(!dpo.policies.is_empty());
        let tutor = entry(&m, "tutor", "SubjectData/ExportSubject", "subject_rights");
        assert!(!tutor.allowed);
        assert_eq!(tutor.refusal, Some("ACCESS_DENIED"));
        assert!(tutor.readable.is_empty());
        assert_eq!(
            m.message_token_rpcs,
            [
                "tutela.subscription.v1.SubscriptionService/ConfirmSubscription",
                "tutela.subscription.v1.SubscriptionService/Unsubscribe",
            ]
        );
        // Every role the default policies name, and every kind's own role.
        for role in [
            "registrar",
            "tutor",
            "exam_officer",
            "marketing",
            "dpo",
            "learner",
        ] {
            assert!(m.entries.iter().any(|e| e.role == role), "{role}");
        }
    }

    /// Generated, not hand-written: an operator's policy with a role of its own shows up, and
    /// what the defaults allowed and it does not is refused.
    #[test]
    fn an_operators_own_policies_give_their_own_matrix() {
        let m = matrix_of(
            "@id(\"auditors-read-certificates\")\n\
             permit (principal in Tutela::Role::\"auditor\", \
             action == Tutela::Action::\"tutela.enrolment.v1.CertificateService/ListCertificates\", \
             resource) when { context.purpose == \"quality_assurance\" };",
        );
        let auditor = entry(
            &m,
            "auditor",
            "CertificateService/ListCertificates",
            "quality_assurance",
        );
        assert!(auditor.allowed, "{auditor:?}");
        assert_eq!(auditor.policies, ["auditors-read-certificates"]);
        // Roles only the defaults named are gone; a kind's own role stays, refused.
        assert!(!m.entries.iter().any(|e| e.role == "dpo"));
        let learner = entry(
            &m,
            "learner",
            "SubjectData/DescribeSubject",
            "subject_rights",
        );
        assert!(!learner.allowed);
        assert_eq!(m.entries.iter().filter(|e| e.allowed).count(), 1);
    }
}
