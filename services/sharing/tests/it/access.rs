//! Who may manage and read partners and agreements, as the default Cedar rules say: the dpo
//! manages them for `legal_obligation`; an exam officer reads them for exam bookings and
//! results; everyone else, and every other purpose, is refused (PERMISSION_DENIED).

use tonic::Code;
use tutela_policy::principal::TokenRequest;
use tutela_proto::sharing::{GetAgreementRequest, GetPartnerRequest, RotatePartnerKeyRequest};

use crate::*;

#[tokio::test]
async fn only_the_dpo_manages_partners_and_agreements() {
    let suite = TestSuite::start().await.unwrap();
    let partner_id = partner(&suite, "GB").await;
    let agreement_id = suite
        .agreements(dpo(&suite))
        .create_agreement(new_agreement(&partner_id))
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap()
        .agreement_id;
    let partner_token = suite.token_for(TokenRequest {
        tenant: "acme".into(),
        subject: "exam-board-1".into(),
        kind: None,
        roles: vec!["partner".into()],
        partner: Some(partner_id.clone()),
        wards: Vec::new(),
        ttl: chrono::Duration::hours(1),
    });
    let refused = [
        staff(&suite, "acme", "registrar", "legal_obligation"),
        staff(&suite, "acme", "exam_officer", "exam_booking"),
        staff(&suite, "acme", "exam_officer", "legal_obligation"),
        staff(&suite, "acme", "tutor", "course_administration"),
        staff(&suite, "acme", "dpo", "exam_booking"),
        staff(&suite, "acme", "dpo", "marketing"),
        Credentials::new(&partner_token, "exam_booking"),
    ];
    for credentials in refused {
        let err = suite
            .partners(credentials.clone())
            .create_partner(new_partner("GB"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(reason(&err), "ACCESS_DENIED");
        let err = suite
            .partners(credentials.clone())
            .rotate_partner_key(RotatePartnerKeyRequest {
                partner_id: partner_id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        let err = suite
            .agreements(credentials)
            .create_agreement(new_agreement(&partner_id))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    // Reading: an exam officer for exams; nobody else but the dpo.
    for (credentials, allowed) in [
        (staff(&suite, "acme", "exam_officer", "exam_booking"), true),
        (staff(&suite, "acme", "exam_officer", "exam_results"), true),
        (staff(&suite, "acme", "registrar", "exam_booking"), false),
        (staff(&suite, "acme", "marketing", "marketing"), false),
        (Credentials::new(&partner_token, "exam_results"), false),
        (
            Credentials::new(
                &suite.token("acme", "0b9e8a4c-7f1d-4e55-9a51-3c2f0d9e1a77", &["learner"]),
                "subject_rights",
            ),
            false,
        ),
    ] {
        let partner = suite
            .partners(credentials.clone())
            .get_partner(GetPartnerRequest {
                partner_id: partner_id.clone(),
            })
            .await;
        let agreement = suite
            .agreements(credentials)
            .get_agreement(GetAgreementRequest {
                agreement_id: agreement_id.clone(),
            })
            .await;
        if allowed {
            partner.unwrap();
            agreement.unwrap();
        } else {
            assert_eq!(partner.unwrap_err().code(), Code::PermissionDenied);
            assert_eq!(agreement.unwrap_err().code(), Code::PermissionDenied);
        }
    }
}

#[tokio::test]
async fn a_partners_contact_is_withheld_from_a_purpose_that_may_not_touch_contact_data() {
    let suite = TestSuite::start().await.unwrap();
    let partner_id = partner(&suite, "GB").await;
    let get = || GetPartnerRequest {
        partner_id: partner_id.clone(),
    };
    // Exam bookings may touch contact data; exam results may not (the register says so).
    let booking = suite
        .partners(staff(&suite, "acme", "exam_officer", "exam_booking"))
        .get_partner(get())
        .await
        .unwrap();
    assert_eq!(
        booking.get_ref().partner.as_ref().unwrap().contact_email,
        CONTACT
    );
    let results = suite
        .partners(staff(&suite, "acme", "exam_officer", "exam_results"))
        .get_partner(get())
        .await
        .unwrap();
    assert_eq!(
        results
            .metadata()
            .get("x-tutela-withheld-categories")
            .and_then(|v| v.to_str().ok()),
        Some("contact")
    );
    let partner = results.into_inner().partner.unwrap();
    assert!(partner.contact_email.is_empty());
    assert_eq!(partner.legal_name, "Example Exam Board Ltd");
}
