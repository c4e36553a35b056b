//! The authorisation matrix: every guarded RPC of the contract × every role × every purpose ×
//! every consent state (none, granted, withdrawn), through the real guard with the default rules
//! and register, reading a real ledger. The expected outcome is written by hand below: a short
//! list of grants, consent where the register demands it, and "denied" for everything else — so
//! anything the rules allow without an explicit grant here fails the test.

use tutela_policy::guard::Outcome;
use tutela_policy::methods::Authorisation;
use tutela_policy::principal::TokenRequest;
use tutela_policy::{MethodTable, Register};
use tutela_proto::PURPOSE_NAMES;
use tutela_proto::common::Purpose;
use tutela_proto::consent::consent_ledger_server::ConsentLedger;

use crate::gate::{headers_for, migrated, process, staff, with};
use crate::*;

const ROLES: [&str; 9] = [
    "registrar",
    "tutor",
    "exam_officer",
    "marketing",
    "dpo",
    "partner",
    "learner",
    "guardian",
    "service",
];

/// Subjects in each consent state for every consent-based purpose.
const NO_CONSENT: &str = "00000000-0000-4000-8000-000000000001";
const GRANTED: &str = "00000000-0000-4000-8000-000000000002";
const WITHDRAWN: &str = "00000000-0000-4000-8000-000000000003";

/// The hand-written grants: (RPC method names, roles, purpose).
fn granted(rpc: &str, role: &str, purpose: Purpose) -> bool {
    let method = rpc.rsplit('/').next().unwrap_or(rpc);
    // One method name in two services: the ledger's is for platform services recording it.
    let ledger_rpc = rpc.starts_with("tutela.consent.");
    let rights_read = ["DescribeSubject", "ExportSubject"];
    let rights_write = [
        "EraseSubject",
        "RestrictSubject",
        "RectifySubject",
        "ObjectToProcessing",
    ];
    let ledger = [
        "RecordConsent",
        "WithdrawConsent",
        "GetConsentState",
        "ListConsentHistory",
    ];
    if enrolment_granted(method, role, purpose)
        || subscription_granted(method, role, purpose)
        || sharing_granted(method, role, purpose)
        || survey_granted(method, role, purpose)
        || rights_granted(method, role, purpose)
        || (method == "ListAccesses" && role == "dpo" && purpose == Purpose::LegalObligation)
    {
        return true;
    }
    match purpose {
        Purpose::SubjectRights if method == "RecordIdentityVerification" && !ledger_rpc => {
            ["dpo", "registrar"].contains(&role)
        }
        // The rights coordinator carries requests out in every service as a `service`.
        Purpose::SubjectRights => {
            (rights_read.contains(&method)
                && ["dpo", "learner", "guardian", "service"].contains(&role))
                || (rights_write.contains(&method) && ["dpo", "service"].contains(&role))
        }
        Purpose::ConsentManagement
            if method == "RecordRestriction"
                || method == "RecordObjection"
                || (method == "RecordIdentityVerification" && ledger_rpc) =>
        {
            ["dpo", "service"].contains(&role)
        }
        Purpose::ConsentManagement => {
            ledger.contains(&method)
                && [
                    "registrar",
                    "dpo",
                    "marketing",
                    "service",
                    "learner",
                    "guardian",
                ]
                .contains(&role)
        }
        _ => false,
    }
}

/// The rights service's grants: the dpo and registrars record, verify and follow requests; the
/// dpo alone decides them and hands out bundles.
fn rights_granted(method: &str, role: &str, purpose: Purpose) -> bool {
    if purpose != Purpose::SubjectRights {
        return false;
    }
    match method {
        "SubmitRightsRequest"
        | "VerifyRequesterIdentity"
        | "GetRightsRequest"
        | "ListRightsRequests" => ["dpo", "registrar"].contains(&role),
        "ApproveRightsRequest"
        | "RefuseRightsRequest"
        | "ExtendRightsRequestDeadline"
        | "RetryRightsRequest"
        | "DownloadAccessBundle" => role == "dpo",
        _ => false,
    }
}

/// The survey service's grants: staff run surveys and release results, learners and the platform
/// answer, for quality assurance only.
fn survey_granted(method: &str, role: &str, purpose: Purpose) -> bool {
    if purpose != Purpose::QualityAssurance {
        return false;
    }
    let runners = ["registrar", "tutor", "dpo"];
    match method {
        "GetSurvey" | "ListSurveys" => {
            runners.contains(&role) || ["service", "learner"].contains(&role)
        }
        "CreateSurvey" | "CloseSurvey" => runners.contains(&role),
        "InviteRespondents" | "RemindRespondents" => runners.contains(&role) || role == "service",
        "DeclineSurvey" | "SubmitResponse" => ["service", "learner"].contains(&role),
        "CreateRelease" | "ListReleases" => runners.contains(&role),
        "ListHeldComments" | "ReviewHeldComment" => role == "dpo",
        // The sharing service reads the releases it shares as a service.
        "GetRelease" => runners.contains(&role) || role == "service",
        _ => false,
    }
}

/// The subscription service's grants (ConfirmSubscription and Unsubscribe are token calls, not
/// in the matrix).
fn subscription_granted(method: &str, role: &str, purpose: Purpose) -> bool {
    let keepers = [
        "registrar",
        "dpo",
        "marketing",
        "service",
        "learner",
        "guardian",
    ];
    match method {
        "Subscribe" | "OptOut" | "ListSubscriptions" | "ListTopics" => {
            purpose == Purpose::ConsentManagement && keepers.contains(&role)
        }
        "PutTopic" => purpose == Purpose::ConsentManagement && ["marketing", "dpo"].contains(&role),
        "ResolveAudience" => purpose == Purpose::Marketing && role == "marketing",
        "RecordEvents" => purpose == Purpose::Marketing && ["marketing", "service"].contains(&role),
        _ => false,
    }
}

/// The sharing service's grants: the dpo manages partners, agreements and partners' webhooks
/// for the legal obligation of accountability; exam officers read partners and agreements (not
/// webhooks) for exam bookings and results; disclosures, pulls and notices as below.
fn sharing_granted(method: &str, role: &str, purpose: Purpose) -> bool {
    let agreement_purposes = [
        Purpose::ExamBooking,
        Purpose::ExamResults,
        Purpose::FunderReporting,
        Purpose::MalpracticeInvestigation,
        Purpose::LegalObligation,
        Purpose::ThirdPartyDisclosure,
    ];
    match method {
        "GetPartner" | "ListPartners" | "GetAgreement" | "ListAgreements" => {
            (role == "dpo" && purpose == Purpose::LegalObligation)
                || (role == "exam_officer"
                    && [Purpose::ExamBooking, Purpose::ExamResults].contains(&purpose))
        }
        "CreatePartner"
        | "RotatePartnerKey"
        | "CreateAgreement"
        | "ActivateAgreement"
        | "TerminateAgreement"
        | "SetWebhookEndpoint"
        | "GetWebhookEndpoint"
        | "ListWebhookMessages" => role == "dpo" && purpose == Purpose::LegalObligation,
        // Disclosing decides that data leaves: the dpo for every agreement purpose, an exam
        // officer to book exams; partners pull their own for those purposes.
        "Disclose" => {
            (role == "dpo" && agreement_purposes.contains(&purpose))
                || (role == "exam_officer" && purpose == Purpose::ExamBooking)
        }
        // The file of a delivery: under an agreement, or of an exceptional disclosure.
        "DownloadExport" => {
            (role == "dpo"
                && (agreement_purposes.contains(&purpose)
                    || purpose == Purpose::SecurityInvestigation))
                || (role == "exam_officer" && purpose == Purpose::ExamBooking)
        }
        "DiscloseExceptionally" => {
            role == "dpo"
                && [Purpose::LegalObligation, Purpose::SecurityInvestigation].contains(&purpose)
        }
        "PullDeliveries" => role == "partner" && agreement_purposes.contains(&purpose),
        "ShareRelease" => {
            purpose == Purpose::QualityAssurance && ["registrar", "tutor", "dpo"].contains(&role)
        }
        "PullSharedReleases" => purpose == Purpose::QualityAssurance && role == "partner",
        "ListDisclosures" | "ListNotices" => {
            role == "dpo" && [Purpose::LegalObligation, Purpose::SubjectRights].contains(&purpose)
        }
        "RecordNoticeNotPossible" => role == "dpo" && purpose == Purpose::LegalObligation,
        "PullNotices" | "AcknowledgeNotices" => {
            role == "partner" && purpose == Purpose::LegalObligation
        }
        // Partners send back booking confirmations and results against their pseudonyms; exam
        // officers (for bookings) and the dpo see the bookings.
        "SubmitBookingConfirmations" => role == "partner" && purpose == Purpose::ExamBooking,
        "SubmitResults" => role == "partner" && purpose == Purpose::ExamResults,
        "ListBookings" => {
            (role == "exam_officer" && purpose == Purpose::ExamBooking)
                || (role == "dpo"
                    && [Purpose::LegalObligation, Purpose::SubjectRights].contains(&purpose))
        }
        _ => false,
    }
}

/// The enrolment service's grants, as the policies mean them.
fn enrolment_granted(method: &str, role: &str, purpose: Purpose) -> bool {
    use Purpose::*;
    let any = |purposes: &[Purpose]| purposes.contains(&purpose);
    let subject_self = ["learner", "guardian"].contains(&role) && purpose == SubjectRights;
    match method {
        "GetLearner" | "ListLearners" => {
            (method == "GetLearner" && subject_self)
                || match role {
                    "registrar" => any(&[
                        CourseAdministration,
                        Certification,
                        LegalObligation,
                        SubjectRights,
                    ]),
                    "tutor" | "service" => purpose == CourseAdministration,
                    "exam_officer" => any(&[ExamBooking, ExamResults]),
                    "dpo" => any(&[SubjectRights, LegalObligation, SecurityInvestigation]),
                    _ => false,
                }
        }
        // Bulk reads are for services only: platform sync, the sharing service disclosing
        // (under agreements, and exceptionally for a security investigation), and the survey
        // service reading invitees' names and respondents' declared attributes.
        "StreamLearners" => {
            role == "service"
                && any(&[
                    CourseAdministration,
                    QualityAssurance,
                    ExamBooking,
                    ExamResults,
                    FunderReporting,
                    MalpracticeInvestigation,
                    LegalObligation,
                    SecurityInvestigation,
                    ThirdPartyDisclosure,
                ])
        }
        // Followed by the sharing service to tell recipients of changes (GDPR Art. 19).
        "ListLearnerChanges" => role == "service" && purpose == LegalObligation,
        "CreateLearner" | "UpdateLearner" => {
            (method == "UpdateLearner" && subject_self)
                || match role {
                    "registrar" => any(&[CourseAdministration, SubjectRights]),
                    "service" => purpose == CourseAdministration,
                    "exam_officer" => any(&[ExamBooking, ExamResults]),
                    "dpo" => purpose == SubjectRights,
                    _ => false,
                }
        }
        "GetCourse" | "ListCourses" => {
            (["registrar", "tutor", "exam_officer", "service", "dpo"].contains(&role)
                && any(&[
                    CourseAdministration,
                    Certification,
                    ExamBooking,
                    ExamResults,
                ]))
                // The survey service reads a survey's course for its staff names, one by id.
                || (method == "GetCourse" && role == "service" && purpose == QualityAssurance)
        }
        "CreateCourse" | "EnrolLearner" | "ChangeEnrolmentStatus" => {
            ["registrar", "service"].contains(&role) && purpose == CourseAdministration
        }
        "ListEnrolments" | "ListResults" => {
            subject_self
                || match role {
                    "registrar" | "service" | "tutor" => purpose == CourseAdministration,
                    "exam_officer" => purpose == ExamResults,
                    "dpo" => any(&[SubjectRights, LegalObligation, SecurityInvestigation]),
                    _ => false,
                }
        }
        "PlaceLegalHold" | "ReleaseLegalHold" | "ListLegalHolds" => {
            role == "dpo" && purpose == LegalObligation
        }
        "IssueCertificate" => {
            ["registrar", "service"].contains(&role) && any(&[CourseAdministration, Certification])
        }
        "ListCertificates" | "ExportOpenBadge" => {
            (["registrar", "service"].contains(&role)
                && any(&[CourseAdministration, Certification]))
                || (["learner", "guardian"].contains(&role) && purpose == SubjectRights)
                || (role == "dpo" && any(&[SubjectRights, LegalObligation]))
        }
        "RecordFeedback" | "ListFeedback" => {
            (["registrar", "service"].contains(&role)
                && any(&[CourseAdministration, QualityAssurance]))
                || (["learner", "guardian"].contains(&role) && purpose == CourseAdministration)
                || (method == "ListFeedback"
                    && role == "dpo"
                    && any(&[SubjectRights, LegalObligation]))
        }
        "RecordResult" => match role {
            "tutor" => purpose == CourseAdministration,
            // Partners' results, recorded by the sharing service (inbound).
            "exam_officer" | "service" => purpose == ExamResults,
            _ => false,
        },
        _ => false,
    }
}

fn principal(role: &str, subject: &str) -> TokenRequest {
    let mut p = staff(role);
    match role {
        "learner" => p.subject = subject.into(),
        "guardian" => p.wards = vec![subject.into()],
        "partner" => p.partner = Some("exam-board-1".into()),
        _ => {}
    }
    p
}

#[tokio::test]
async fn every_rpc_role_purpose_and_consent_state() {
    let (_database, db, keyring) = migrated().await;
    let p = process(&db, keyring, "").await;
    let register = Register::default_register().unwrap();

    // Seed the consent states through the ledger itself.
    let consent_based: Vec<Purpose> = PURPOSE_NAMES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| register.rule(*p).is_some_and(|r| r.consent_required))
        .collect();
    assert!(!consent_based.is_empty());
    for subject in [GRANTED, WITHDRAWN] {
        for purpose in &consent_based {
            let call = match p.guard.check(
                "/tutela.consent.v1.ConsentLedger/RecordConsent",
                &headers_for(&staff("registrar"), "consent_management"),
            ) {
                Ok(Outcome::Authorized(a, _)) => a,
                other => panic!("{other:?}"),
            };
            p.ledger
                .record_consent(with(grant(subject, *purpose, ""), call.clone()))
                .await
                .unwrap();
            if subject == WITHDRAWN {
                p.ledger
                    .withdraw_consent(with(withdraw(subject, *purpose, ""), call))
                    .await
                    .unwrap();
            }
        }
    }

    let methods = MethodTable::from_pool(tutela_proto::descriptor_pool().unwrap());
    let guarded: Vec<_> = methods
        .iter()
        .filter(|m| m.authorisation == Authorisation::Guarded)
        .collect();
    assert!(guarded.len() >= 8, "the matrix covers every guarded RPC");
    // The only RPCs outside the matrix: those the contract declares message-token calls.
    let mut token: Vec<&str> = methods
        .iter()
        .filter(|m| m.authorisation == Authorisation::MessageToken)
        .map(|m| m.rpc.as_str())
        .collect();
    token.sort_unstable();
    assert_eq!(
        token,
        [
            "tutela.subscription.v1.SubscriptionService/ConfirmSubscription",
            "tutela.subscription.v1.SubscriptionService/Unsubscribe",
        ]
    );
    let (mut cases, mut allowed) = (0, 0);
    for method in &guarded {
        let path = format!("/{}", method.rpc);
        let name = method.rpc.rsplit('/').next().unwrap();
        for role in ROLES {
            for (purpose, purpose_name) in PURPOSE_NAMES {
                for subject in [NO_CONSENT, GRANTED, WITHDRAWN] {
                    cases += 1;
                    let headers = headers_for(&principal(role, subject), purpose_name);
                    let outcome = match p.guard.check(&path, &headers) {
                        Err(e) => e.reason().to_owned(),
                        Ok(Outcome::Authorized(a, _)) => {
                            assert!(
                                !a.policies().is_empty(),
                                "an allowed call names the policy that permitted it"
                            );
                            match a.subject(subject).await {
                                Ok(_) => "ALLOW".to_owned(),
                                Err(e) => e.reason().to_owned(),
                            }
                        }
                        Ok(other) => panic!("{path}: {other:?}"),
                    };
                    let needs_consent = register.rule(purpose).is_some_and(|r| r.consent_required);
                    let expected = if !granted(&method.rpc, role, purpose) {
                        "ACCESS_DENIED"
                    } else if needs_consent && subject != GRANTED {
                        "CONSENT_REQUIRED"
                    } else {
                        "ALLOW"
                    };
                    assert_eq!(
                        outcome, expected,
                        "{name} as {role} for {purpose_name}, subject {subject}"
                    );
                    allowed += usize::from(outcome == "ALLOW");
                }
            }
        }
    }
    assert_eq!(cases, guarded.len() * ROLES.len() * PURPOSE_NAMES.len() * 3);
    assert!(allowed > 0);
}

#[tokio::test]
async fn another_tenants_subject_is_not_found_for_every_role_allowed_on_the_ledger() {
    use tonic::Code;
    use tutela_proto::consent::{GetConsentStateRequest, ListConsentHistoryRequest};
    let suite = tutela_testkit::TestSuite::start().await.unwrap();
    let cm = "consent_management";
    suite
        .consent_ledger(tutela_testkit::Credentials::new(
            &suite.token("acme", "staff-1", &["registrar"]),
            cm,
        ))
        .record_consent(grant(SUBJECT, Purpose::Marketing, ""))
        .await
        .unwrap();
    for role in ROLES {
        if !granted("GetConsentState", role, Purpose::ConsentManagement) {
            continue;
        }
        let mut who = principal(role, SUBJECT);
        who.tenant = "globex".into();
        let mut ledger =
            suite.consent_ledger(tutela_testkit::Credentials::new(&suite.token_for(who), cm));
        let err = ledger
            .get_consent_state(GetConsentStateRequest {
                subject: subject(SUBJECT),
                purpose: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "GetConsentState as {role}");
        let err = ledger
            .list_consent_history(ListConsentHistoryRequest {
                subject: subject(SUBJECT),
                purpose: 0,
                page: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "ListConsentHistory as {role}");
    }
    // A withdrawal in another tenant appends to that tenant's ledger only.
    suite
        .consent_ledger(tutela_testkit::Credentials::new(
            &suite.token("globex", "staff-9", &["registrar"]),
            cm,
        ))
        .withdraw_consent(withdraw(SUBJECT, Purpose::Marketing, ""))
        .await
        .unwrap();
    let state = suite
        .consent_ledger(tutela_testkit::Credentials::new(
            &suite.token("acme", "staff-1", &["registrar"]),
            cm,
        ))
        .get_consent_state(tutela_proto::consent::GetConsentStateRequest {
            subject: subject(SUBJECT),
            purpose: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(state.states[0].granted, "acme's ledger is untouched");
}
