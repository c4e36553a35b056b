//! The vocabularies of partners and agreements as they are stored: one short name per proto enum
//! value, in one table each, so that the database and the contract cannot drift apart unnoticed
//! (a stored name this build does not know reads as unspecified and is never written).

use tutela_proto::common::Purpose;
use tutela_proto::sharing::{
    AgreementPurpose, AgreementState, PartnerKind, PartnerRole, TransferSafeguard,
};

/// Short names of partner kinds.
pub const KINDS: [(PartnerKind, &str); 8] = [
    (PartnerKind::ExamBody, "exam_body"),
    (PartnerKind::College, "college"),
    (PartnerKind::TrainingProvider, "training_provider"),
    (PartnerKind::Funder, "funder"),
    (PartnerKind::Employer, "employer"),
    (PartnerKind::Regulator, "regulator"),
    (PartnerKind::LawEnforcement, "law_enforcement"),
    (PartnerKind::LegalAdviser, "legal_adviser"),
];

/// Short names of partner roles.
pub const ROLES: [(PartnerRole, &str); 3] = [
    (PartnerRole::Controller, "controller"),
    (PartnerRole::Processor, "processor"),
    (PartnerRole::JointController, "joint_controller"),
];

/// Short names of transfer safeguards.
pub const SAFEGUARDS: [(TransferSafeguard, &str); 5] = [
    (TransferSafeguard::None, "none"),
    (TransferSafeguard::Sccs, "sccs"),
    (TransferSafeguard::UkIdta, "uk_idta"),
    (TransferSafeguard::Bcrs, "bcrs"),
    (TransferSafeguard::Art49Derogation, "art49_derogation"),
];

/// The register purpose of each agreement purpose: the register's short name is what is stored.
pub const PURPOSES: [(AgreementPurpose, Purpose); 6] = [
    (AgreementPurpose::ExamBooking, Purpose::ExamBooking),
    (AgreementPurpose::ExamResults, Purpose::ExamResults),
    (AgreementPurpose::FunderReporting, Purpose::FunderReporting),
    (
        AgreementPurpose::MalpracticeInvestigation,
        Purpose::MalpracticeInvestigation,
    ),
    (AgreementPurpose::LegalObligation, Purpose::LegalObligation),
    (
        AgreementPurpose::ThirdPartyDisclosure,
        Purpose::ThirdPartyDisclosure,
    ),
];

/// The stored name of `value` in `table`.
pub fn name<T: PartialEq + Copy>(table: &[(T, &'static str)], value: T) -> Option<&'static str> {
    table.iter().find(|(v, _)| *v == value).map(|(_, n)| *n)
}

/// The value stored as `name` in `table`, as its proto number; 0 (unspecified) if unknown.
pub fn number<T: Copy + Into<i32>>(table: &[(T, &'static str)], name: &str) -> i32 {
    table
        .iter()
        .find(|(_, n)| *n == name)
        .map_or(0, |(v, _)| (*v).into())
}

/// The register purpose of an agreement purpose.
pub fn purpose_of(p: AgreementPurpose) -> Option<Purpose> {
    PURPOSES.iter().find(|(a, _)| *a == p).map(|(_, r)| *r)
}

/// The agreement purpose stored under a register purpose's short name.
pub fn agreement_purpose(stored: &str) -> AgreementPurpose {
    PURPOSES
        .iter()
        .find(|(_, r)| r.short_name() == stored)
        .map_or(AgreementPurpose::Unspecified, |(a, _)| *a)
}

/// An agreement's stored states (expiry is not stored: it follows from `valid_to`).
pub const DRAFT: &str = "draft";
/// See [`DRAFT`].
pub const ACTIVE: &str = "active";
/// See [`DRAFT`].
pub const TERMINATED: &str = "terminated";

/// The state an agreement stored as `state` with `valid_to` is in at `now`.
pub fn state_at(
    state: &str,
    valid_to: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> AgreementState {
    match state {
        DRAFT => AgreementState::Draft,
        ACTIVE if valid_to.is_some_and(|end| end <= now) => AgreementState::Expired,
        ACTIVE => AgreementState::Active,
        TERMINATED => AgreementState::Terminated,
        _ => AgreementState::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enum_value_but_unspecified_has_one_stored_name() {
        // Proto enums number their values from 0 (unspecified) without gaps.
        assert_eq!(KINDS.len(), PartnerKind::LegalAdviser as usize);
        assert_eq!(ROLES.len(), PartnerRole::JointController as usize);
        assert_eq!(
            SAFEGUARDS.len(),
            TransferSafeguard::Art49Derogation as usize
        );
        assert_eq!(
            PURPOSES.len(),
            AgreementPurpose::ThirdPartyDisclosure as usize
        );
        for (kind, n) in KINDS {
            assert_eq!(number(&KINDS, n), kind as i32);
        }
        assert_eq!(number(&KINDS, "unknown"), 0);
        for (a, r) in PURPOSES {
            assert_eq!(agreement_purpose(r.short_name()), a);
        }
        // Marketing is never an agreement's purpose (S2).
        assert!(PURPOSES.iter().all(|(_, r)| *r != Purpose::Marketing));
        assert_eq!(
            agreement_purpose("marketing"),
            AgreementPurpose::Unspecified
        );
    }
}
