//! `tutela sharing export`, the real binary against the suite: a file delivery through the
//! disclosure path, written with the hash the delivery recorded, in the partner portal's CSV and
//! the funder return's XML; every record of it in the disclosure log with the channel `file`.

use std::process::Command;

use sha2::{Digest, Sha256};
use tutela_proto::common::{LegalBasis, SubjectRef};
use tutela_proto::enrolment::LearnerProfile;
use tutela_proto::sharing::{
    ActivateAgreementRequest, AgreementPurpose, CreateAgreementRequest, CreatePartnerRequest,
    ListDisclosuresRequest, Partner, PartnerKind, PartnerRole, PurposeTerms,
};
use tutela_testkit::{Credentials, TestSuite, sample_profile};

use crate::binary::BIN;

// Multi-threaded: the binary is waited for synchronously while this process serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_writes_the_recorded_file_and_logs_each_record_as_disclosed_by_file() {
    let suite = TestSuite::start().await.unwrap();
    let dpo = |purpose: &str| Credentials::new(&suite.token("acme", "dpo-1", &["dpo"]), purpose);
    // A name a spreadsheet would run as a formula, and one that needs CSV quoting.
    let profiles = ["=cmd|' /C calc'!A0", "O'Brien, Jr"]
        .into_iter()
        .zip(0..)
        .map(|(family_name, i)| LearnerProfile {
            family_name: family_name.into(),
            ..sample_profile(i)
        });
    let ids = suite.create_learners("acme", profiles, 1).await.unwrap();
    let partner_id = suite
        .partners(dpo("legal_obligation"))
        .create_partner(CreatePartnerRequest {
            partner: Some(Partner {
                legal_name: "Skills Funding Body".into(),
                kind: PartnerKind::Funder as i32,
                role: PartnerRole::Controller as i32,
                country: "GB".into(),
                contact_email: "returns@funder.example.org".into(),
                ..Default::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner()
        .partner
        .unwrap()
        .partner_id;
    let agreement = suite
        .agreements(dpo("legal_obligation"))
        .create_agreement(CreateAgreementRequest {
            partner_id: partner_id.clone(),
            valid_from: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() - 86_400,
                nanos: 0,
            }),
            purposes: vec![PurposeTerms {
                purpose: AgreementPurpose::ExamBooking as i32,
                legal_basis: LegalBasis::Contract as i32,
                fields: vec![
                    "profile.email".into(),
                    "profile.given_name".into(),
                    "profile.family_name".into(),
                ],
            }],
            partner_retention: "P1Y".into(),
            access_period: "P30D".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agreement
        .unwrap();
    suite
        .agreements(dpo("legal_obligation"))
        .activate_agreement(ActivateAgreementRequest {
            agreement_id: agreement.agreement_id,
        })
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("learners.txt");
    std::fs::write(&list, format!("# candidates\n{}\n\n{}\n", ids[0], ids[1])).unwrap();
    let token = suite.token("acme", "exam-officer-1", &["exam_officer"]);
    let export = |layout: &str, out: &str| {
        Command::new(BIN)
            .args([
                "sharing",
                "export",
                "--partner",
                &partner_id,
                "--layout",
                layout,
            ])
            .arg("--learners")
            .arg(&list)
            .arg("--out")
            .arg(dir.path().join(out))
            .args(["--endpoint", &format!("http://{}", suite.addr())])
            .env("TUTELA_CLI_TOKEN", &token)
            .output()
            .unwrap()
    };

    let done = export("csv", "candidates.csv");
    assert!(done.status.success(), "{done:?}");
    let stdout = String::from_utf8(done.stdout).unwrap();
    let bytes = std::fs::read(dir.path().join("candidates.csv")).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    assert!(stdout.contains("2 record(s)"), "{stdout}");
    assert!(stdout.contains(&sha), "{stdout}");
    let csv = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "candidate_ref,profile.email,profile.given_name,profile.family_name"
    );
    assert!(
        lines[1].ends_with(",learner0@example.org,Given0,'=cmd|' /C calc'!A0"),
        "{csv}"
    );
    assert!(
        lines[2].ends_with(",learner1@example.org,Given1,\"O'Brien, Jr\""),
        "{csv}"
    );
    assert_eq!(
        lines[1].split(',').next().unwrap().len(),
        64,
        "the pseudonym"
    );
    for id in &ids {
        assert!(!csv.contains(id.as_str()), "no learner id leaves");
    }
    assert!(
        !csv.contains("1990-01-01"),
        "no field the agreement does not name"
    );
    // The file is not overwritten.
    let again = export("csv", "candidates.csv");
    assert!(!again.status.success());

    let done = export("funder-xml", "return.xml");
    assert!(done.status.success(), "{done:?}");
    let xml = std::fs::read_to_string(dir.path().join("return.xml")).unwrap();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<FunderReturn"));
    assert!(
        xml.contains("<Field path=\"profile.family_name\">O&apos;Brien, Jr</Field>"),
        "{xml}"
    );

    // Each record of each file is in the log, as disclosed by file.
    let log = suite
        .disclosures(dpo("legal_obligation"))
        .list_disclosures(ListDisclosuresRequest {
            subject: Some(SubjectRef {
                subject_id: ids[0].clone(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .disclosures;
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|e| e.channel == "file"));
    assert_eq!(log[0].actor, "exam-officer-1");

    // Someone who may not disclose gets a clear refusal and no file.
    let tutor = Command::new(BIN)
        .args(["sharing", "export", "--partner", &partner_id])
        .arg("--learners")
        .arg(&list)
        .arg("--out")
        .arg(dir.path().join("tutor.csv"))
        .args(["--endpoint", &format!("http://{}", suite.addr())])
        .env(
            "TUTELA_CLI_TOKEN",
            suite.token("acme", "tutor-1", &["tutor"]),
        )
        .output()
        .unwrap();
    assert!(!tutor.status.success());
    let stderr = String::from_utf8(tutor.stderr).unwrap();
    assert!(
        stderr.contains("PermissionDenied ACCESS_DENIED"),
        "{stderr}"
    );
    assert!(!dir.path().join("tutor.csv").exists());
    assert!(!dir.path().join("tutor.partial").exists());
}
