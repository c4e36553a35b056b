//! Agreements: drafted in versions, checked against the enrolment contract and the register,
//! activated without overlap, safeguarded abroad, immutable once in force, and audited.

use tonic::Code;
use tutela_proto::common::{LegalBasis, PageRequest};
use tutela_proto::sharing::{
    ActivateAgreementRequest, AgreementPurpose, AgreementState, GetAgreementRequest,
    ListAgreementsRequest, TerminateAgreementRequest, TransferSafeguard,
};

use crate::*;

fn activate(id: &str) -> ActivateAgreementRequest {
    ActivateAgreementRequest {
        agreement_id: id.into(),
    }
}

fn terminate(id: &str) -> TerminateAgreementRequest {
    TerminateAgreementRequest {
        agreement_id: id.into(),
    }
}

#[tokio::test]
async fn a_partner_gets_an_agreement_that_is_drafted_then_put_into_force_and_audited() {
    let suite = TestSuite::start().await.unwrap();
    let partner_id = partner(&suite, "GB").await;
    let mut agreements = suite.agreements(dpo(&suite));

    let draft = agreements
        .create_agreement(new_agreement(&partner_id))
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();
    assert_eq!(draft.version, 1);
    assert_eq!(draft.state, AgreementState::Draft as i32);
    assert_eq!(draft.partner_retention, "P1Y");
    assert_eq!(draft.access_period, "P12M");
    assert_eq!(draft.transfer_safeguard, TransferSafeguard::None as i32);
    assert_eq!(draft.purposes, new_agreement(&partner_id).purposes);
    assert!(draft.activated_at.is_none());

    let active = agreements
        .activate_agreement(activate(&draft.agreement_id))
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();
    assert_eq!(active.state, AgreementState::Active as i32);
    assert!(active.activated_at.is_some());
    assert_eq!(active.purposes, draft.purposes);

    let got = agreements
        .get_agreement(GetAgreementRequest {
            agreement_id: draft.agreement_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();
    assert_eq!(got, active);

    let reasons = audited(
        &suite,
        "tutela.sharing.v1.AgreementService/ActivateAgreement",
    )
    .await;
    let expected = format!(
        "agreement_activated agreement={} partner={partner_id} version=1",
        draft.agreement_id
    );
    assert!(reasons.contains(&expected), "{reasons:?}");

    // Another tenant sees neither the agreement nor the partner's list.
    let globex = Credentials::new(
        &suite.token("globex", "dpo-9", &["dpo"]),
        "legal_obligation",
    );
    let mut theirs = suite.agreements(globex);
    let err = theirs
        .get_agreement(GetAgreementRequest {
            agreement_id: draft.agreement_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = theirs
        .list_agreements(ListAgreementsRequest {
            partner_id: partner_id.clone(),
            page: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn an_unknown_field_path_is_named_by_its_place_in_the_request() {
    let suite = TestSuite::start().await.unwrap();
    let partner_id = partner(&suite, "GB").await;
    let mut request = new_agreement(&partner_id);
    request.purposes[0].fields[1] = "profile.shoe_size".into();
    request.purposes[1].fields.push("result".into());
    let err = suite
        .agreements(dpo(&suite))
        .create_agreement(request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "INVALID_ARGUMENT");
    assert_eq!(
        fields(&err),
        ["purposes[0].fields[1]", "purposes[1].fields[3]"]
    );
}

#[tokio::test]
async fn a_field_whose_category_the_register_does_not_allow_for_its_purpose_is_refused() {
    let suite = TestSuite::start().await.unwrap();
    let partner_id = partner(&suite, "GB").await;
    let mut request = new_agreement(&partner_id);
    // Exam results may touch identity and assessment data: not contact, not special category.
    request.purposes[1].fields = vec![
        "result.score".into(),
        "profile.email".into(),
        "profile.disabilities".into(),
    ];
    let err = suite
        .agreements(dpo(&suite))
        .create_agreement(request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "CATEGORY_NOT_FOR_PURPOSE");
    assert_eq!(
        fields(&err),
        ["purposes[1].fields[1]", "purposes[1].fields[2]"]
    );

    // Nor may a purpose rest on a basis the register does not give it, or appear twice.
    let mut request = new_agreement(&partner_id);
    request.purposes[0].legal_basis = LegalBasis::Consent as i32;
    request.purposes[1].purpose = AgreementPurpose::ExamBooking as i32;
    request.partner_retention = "PT12H".into();
    let err = suite
        .agreements(dpo(&suite))
        .create_agreement(request)
        .await
        .unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "purposes[0].legal_basis",
            "purposes[1].purpose",
            "partner_retention"
        ]
    );
}

#[tokio::test]
async fn versions_of_one_partner_never_overlap_in_force() {
    let suite = TestSuite::start().await.unwrap();
    let partner_id = partner(&suite, "GB").await;
    let mut agreements = suite.agreements(dpo(&suite));
    let drafts = agreements.clone();
    let create = |request| {
        let mut agreements = drafts.clone();
        async move {
            agreements
                .create_agreement(request)
                .await
                .unwrap()
                .into_inner()
                .agreement
                .unwrap()
        }
    };
    let first = create(new_agreement(&partner_id)).await;
    agreements
        .activate_agreement(activate(&first.agreement_id))
        .await
        .unwrap();
    let second = create(new_agreement(&partner_id)).await;
    assert_eq!(second.version, 2);
    let err = agreements
        .activate_agreement(activate(&second.agreement_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "AGREEMENT_OVERLAP");

    // Superseding: the first ends, then the second comes into force.
    agreements
        .terminate_agreement(terminate(&first.agreement_id))
        .await
        .unwrap();
    agreements
        .activate_agreement(activate(&second.agreement_id))
        .await
        .unwrap();

    // A version that starts once the one in force has ended does not overlap it.
    let mut bounded = new_agreement(&partner_id);
    bounded.valid_from = Some(days(30));
    bounded.valid_to = Some(days(60));
    let third = create(bounded).await;
    let err = agreements
        .activate_agreement(activate(&third.agreement_id))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err),
        "AGREEMENT_OVERLAP",
        "the second is open-ended"
    );

    let listed = agreements
        .list_agreements(ListAgreementsRequest {
            partner_id: partner_id.clone(),
            page: Some(PageRequest {
                page_size: 2,
                page_token: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let states: Vec<(u32, i32)> = listed
        .agreements
        .iter()
        .map(|a| (a.version, a.state))
        .collect();
    assert_eq!(
        states,
        [
            (1, AgreementState::Terminated as i32),
            (2, AgreementState::Active as i32)
        ]
    );
    let rest = agreements
        .list_agreements(ListAgreementsRequest {
            partner_id,
            page: Some(PageRequest {
                page_size: 2,
                page_token: listed.page.unwrap().next_page_token,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.agreements.len(), 1);
    assert_eq!(rest.agreements[0].version, 3);
    assert_eq!(rest.agreements[0].state, AgreementState::Draft as i32);
}

#[tokio::test]
async fn a_partner_abroad_without_adequacy_needs_a_named_safeguard() {
    let suite = TestSuite::start().await.unwrap();
    let mut agreements = suite.agreements(dpo(&suite));
    let us = partner(&suite, "US").await;
    let err = agreements
        .create_agreement(new_agreement(&us))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "TRANSFER_SAFEGUARD_REQUIRED");

    // A safeguard needs its document, and a document needs a safeguard.
    let mut sccs = new_agreement(&us);
    sccs.transfer_safeguard = TransferSafeguard::Sccs as i32;
    let err = agreements.create_agreement(sccs.clone()).await.unwrap_err();
    assert_eq!(fields(&err), ["safeguard_reference"]);
    let mut stray = new_agreement(&us);
    stray.safeguard_reference = "DPA-2027-04".into();
    let err = agreements.create_agreement(stray).await.unwrap_err();
    assert_eq!(fields(&err), ["safeguard_reference"]);

    sccs.safeguard_reference = "EU SCCs module 1 + UK Addendum, signed 2027-01-04".into();
    let draft = agreements
        .create_agreement(sccs)
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();
    assert_eq!(draft.transfer_safeguard, TransferSafeguard::Sccs as i32);
    agreements
        .activate_agreement(activate(&draft.agreement_id))
        .await
        .unwrap();

    // Japan has an adequacy decision, Norway is in the EEA: no safeguard needed.
    for country in ["JP", "NO"] {
        let id = partner(&suite, country).await;
        let draft = agreements
            .create_agreement(new_agreement(&id))
            .await
            .unwrap()
            .into_inner()
            .agreement
            .unwrap();
        agreements
            .activate_agreement(activate(&draft.agreement_id))
            .await
            .unwrap();
    }
    // A draft is no recipient yet.
    let ch = partner(&suite, "CH").await;
    agreements
        .create_agreement(new_agreement(&ch))
        .await
        .unwrap();

    // The record of processing activities names them, with the transfer where one is needed.
    let db = suite.database().connect().await.unwrap();
    let register = tutela_policy::Register::default_register().unwrap();
    let rows = tutela_sharing::recipients::in_force(&db, &register, chrono::Utc::now())
        .await
        .unwrap();
    let listed: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|r| {
            (
                r.country.as_str(),
                r.purpose.as_str(),
                r.transfer.as_ref().map(|t| t.safeguard.as_str()),
            )
        })
        .collect();
    assert_eq!(listed.len(), 6, "{listed:?}");
    for country in ["US", "JP", "NO"] {
        for purpose in ["exam_booking", "exam_results"] {
            let safeguard = (country == "US").then_some("sccs");
            assert!(
                listed.contains(&(country, purpose, safeguard)),
                "{country} {purpose}: {listed:?}"
            );
        }
    }
    let us_row = rows.iter().find(|r| r.country == "US").unwrap();
    assert_eq!(us_row.tenant, "acme");
    assert_eq!(us_row.legal_basis, "contract");
    assert_eq!(us_row.recipient_retention, "P1Y");
    assert!(
        us_row
            .transfer
            .as_ref()
            .unwrap()
            .reference
            .starts_with("EU SCCs"),
        "{us_row:?}"
    );
    // Once terminated, an agreement is no longer in force.
    agreements
        .terminate_agreement(terminate(&rows[0].agreement_id))
        .await
        .unwrap();
    let after = tutela_sharing::recipients::in_force(&db, &register, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(after.len(), 4);
    assert!(after.iter().all(|r| r.agreement_id != rows[0].agreement_id));
}

#[tokio::test]
async fn an_agreement_in_force_is_never_changed_and_ends_only_once() {
    let suite = TestSuite::start().await.unwrap();
    let partner_id = partner(&suite, "GB").await;
    let mut agreements = suite.agreements(dpo(&suite));
    // One request, sent again below: a retry carries the same valid_from, which a second
    // `new_agreement` would not if the clock crossed a second meanwhile.
    let request = keyed(new_agreement(&partner_id), "agreement-0001");
    let draft = agreements
        .create_agreement(request.clone())
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();
    let id = draft.agreement_id.clone();
    // Terminating a draft is refused: it was never in force.
    let err = agreements
        .terminate_agreement(terminate(&id))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_TRANSITION");
    let active = agreements
        .activate_agreement(activate(&id))
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();

    // Activating again changes nothing; a retried create answers with the same agreement, and
    // the same key for other terms is refused.
    let err = agreements
        .activate_agreement(activate(&id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "INVALID_TRANSITION");
    let retried = agreements
        .create_agreement(request.clone())
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();
    assert_eq!(
        retried, active,
        "the retry answers with the agreement as it is now"
    );
    let mut other = request.clone();
    other.partner_retention = "P2Y".into();
    let err = agreements.create_agreement(other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let terminated = agreements
        .terminate_agreement(terminate(&id))
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();
    assert_eq!(terminated.state, AgreementState::Terminated as i32);
    assert!(terminated.terminated_at.is_some());
    for err in [
        agreements
            .activate_agreement(activate(&id))
            .await
            .unwrap_err(),
        agreements
            .terminate_agreement(terminate(&id))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(reason(&err), "INVALID_TRANSITION");
    }
    // The terms are the ones first written.
    let now = agreements
        .get_agreement(GetAgreementRequest { agreement_id: id })
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();
    assert_eq!(now.purposes, draft.purposes);
    assert_eq!(now.valid_from, draft.valid_from);
    assert_eq!(now.partner_retention, draft.partner_retention);
    assert_eq!(now.activated_at, active.activated_at);
}

#[tokio::test]
async fn a_draft_whose_validity_has_ended_cannot_come_into_force() {
    let suite = TestSuite::start().await.unwrap();
    let partner_id = partner(&suite, "GB").await;
    let mut agreements = suite.agreements(dpo(&suite));
    let mut past = new_agreement(&partner_id);
    past.valid_from = Some(days(-30));
    past.valid_to = Some(days(-1));
    let draft = agreements
        .create_agreement(past)
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();
    let err = agreements
        .activate_agreement(activate(&draft.agreement_id))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_TRANSITION");

    let mut backwards = new_agreement(&partner_id);
    backwards.valid_to = Some(days(-2));
    backwards.purposes.clear();
    let err = agreements.create_agreement(backwards).await.unwrap_err();
    assert_eq!(fields(&err), ["valid_to", "purposes"]);
}

#[tokio::test]
async fn concurrent_drafts_take_distinct_versions_and_only_one_overlapping_activation_wins() {
    let suite = TestSuite::start().await.unwrap();
    let partner_id = partner(&suite, "GB").await;
    let agreements = suite.agreements(dpo(&suite));
    let drafts = join_spawned(
        (0..4)
            .map(|_| {
                let mut client = agreements.clone();
                let request = new_agreement(&partner_id);
                tokio::spawn(async move { client.create_agreement(request).await })
            })
            .collect(),
    )
    .await;
    let mut versions: Vec<u32> = drafts
        .iter()
        .map(|d| {
            d.as_ref()
                .unwrap()
                .get_ref()
                .agreement
                .as_ref()
                .unwrap()
                .version
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, [1, 2, 3, 4]);

    // All four overlap (open-ended from yesterday): exactly one may come into force.
    let activations = join_spawned(
        drafts
            .iter()
            .map(|d| {
                let mut client = agreements.clone();
                let id = d
                    .as_ref()
                    .unwrap()
                    .get_ref()
                    .agreement
                    .clone()
                    .unwrap()
                    .agreement_id;
                tokio::spawn(async move { client.activate_agreement(activate(&id)).await })
            })
            .collect(),
    )
    .await;
    let won = activations.iter().filter(|a| a.is_ok()).count();
    assert_eq!(won, 1, "{activations:?}");
    for lost in activations.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(reason(lost), "AGREEMENT_OVERLAP");
    }
}

/// Awaits every spawned call, in order.
async fn join_spawned<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
