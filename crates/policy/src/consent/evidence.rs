//! Validation of consent evidence, shared by the ledger's own RPCs and by services that record
//! a guardian's consent in the call that collects a minor's data, so both refuse the same input
//! with the same violations.

use tutela_proto::consent::{ConsentActor, ConsentEvidence, ConsentMethod, Guardian};

use crate::principal::{Principal, PrincipalKind};
use crate::validate::{Checks, Field};

/// Checks `evidence` (the request field `field`, e.g. `evidence`) for a decision recorded by
/// `caller`, adding one violation per bad field; the trimmed evidence when all is well. A
/// guardian principal's own id replaces any guardian id they send, so a guardian cannot record
/// a decision in someone else's name.
pub fn check_evidence(
    c: &mut Checks,
    caller: &Principal,
    evidence: Option<&ConsentEvidence>,
    field: &str,
) -> Option<ConsentEvidence> {
    parse_evidence(c, caller, evidence, field).ok()
}

/// [`check_evidence`], parsed.
pub fn parse_evidence(
    c: &mut Checks,
    caller: &Principal,
    evidence: Option<&ConsentEvidence>,
    field: &str,
) -> Field<ConsentEvidence> {
    let Some(e) = evidence else {
        return Err(c.flag(
            field,
            "required: how the decision was made and where the proof is",
        ));
    };
    let at = |name: &str| format!("{field}.{name}");
    let before = c.len();
    if matches!(
        ConsentMethod::try_from(e.method),
        Ok(ConsentMethod::Unspecified) | Err(_)
    ) {
        c.fail(at("method"), "required");
    }
    c.required_text(&e.wording_version, &at("wording_version"), 64);
    let hash = e.wording_sha256.trim();
    c.wording_sha256(hash, &at("wording_sha256"));
    c.required_text(&e.evidence_reference, &at("evidence_reference"), 256);
    let actor = ConsentActor::try_from(e.actor).unwrap_or(ConsentActor::Unspecified);
    match actor {
        ConsentActor::Unspecified => c.fail(at("actor"), "required"),
        ConsentActor::Subject if caller.kind == PrincipalKind::Guardian => c.fail(
            at("actor"),
            "a guardian records decisions as CONSENT_ACTOR_GUARDIAN",
        ),
        ConsentActor::Guardian if caller.kind == PrincipalKind::Learner => c.fail(
            at("actor"),
            "a learner records their own decisions as CONSENT_ACTOR_SUBJECT",
        ),
        _ => {}
    }
    let mut guardian = e.guardian.clone();
    match (actor, guardian.as_mut()) {
        (ConsentActor::Guardian, None) => {
            c.fail(at("guardian"), "required when the actor is a guardian")
        }
        (ConsentActor::Guardian, Some(g)) => {
            if caller.kind == PrincipalKind::Guardian {
                // A guardian acting for themselves is who their token says.
                if !g.guardian_id.trim().is_empty() && g.guardian_id.trim() != caller.id {
                    c.fail(
                        at("guardian.guardian_id"),
                        "must be the calling guardian's own id",
                    );
                }
                g.guardian_id = caller.id.clone();
            }
            c.optional_text(&g.guardian_id, &at("guardian.guardian_id"), 128);
            c.required_text(&g.name, &at("guardian.name"), 128);
            c.required_text(&g.relationship, &at("guardian.relationship"), 64);
        }
        (_, Some(_)) => c.fail(at("guardian"), "only allowed when the actor is a guardian"),
        (_, None) => {}
    }
    c.clean_since(before, || ConsentEvidence {
        method: e.method,
        wording_version: e.wording_version.trim().to_owned(),
        wording_sha256: hash.to_owned(),
        evidence_reference: e.evidence_reference.trim().to_owned(),
        actor: e.actor,
        guardian: guardian.map(|g| Guardian {
            guardian_id: g.guardian_id.trim().to_owned(),
            name: g.name.trim().to_owned(),
            relationship: g.relationship.trim().to_owned(),
        }),
    })
}
