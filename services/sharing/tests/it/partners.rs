//! Partners: created, read and listed within the tenant, checked on input, created and retried
//! idempotently, and their pseudonym keys rotated, audited and never returned.

use std::sync::Arc;

use prost::Message;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use tonic::Code;
use tutela_proto::common::{IdempotencyKey, PageRequest};
use tutela_proto::sharing::{
    GetPartnerRequest, ListPartnersRequest, PartnerKind, RotatePartnerKeyRequest,
};
use tutela_sharing::PartnerKeys;
use tutela_sharing::entity::partner_key;

use crate::*;

#[tokio::test]
async fn the_dpo_creates_reads_and_lists_partners_of_its_own_tenant_only() {
    let suite = TestSuite::start().await.unwrap();
    let mut partners = suite.partners(dpo(&suite));
    let created = partners
        .create_partner(new_partner("GB"))
        .await
        .unwrap()
        .into_inner()
        .partner
        .unwrap();
    assert_eq!(created.key_version, 1);
    assert_eq!(created.country, "GB");
    assert_eq!(created.kind, PartnerKind::ExamBody as i32);
    assert_eq!(created.contact_email, CONTACT);
    let id = created.partner_id.clone();
    let got = partners
        .get_partner(GetPartnerRequest {
            partner_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .partner
        .unwrap();
    assert_eq!(got, created);

    // Pages follow creation order.
    let second = partner(&suite, "DE").await;
    let third = partner(&suite, "JP").await;
    let page = |token: &str| ListPartnersRequest {
        page: Some(PageRequest {
            page_size: 2,
            page_token: token.into(),
        }),
    };
    let first_page = partners.list_partners(page("")).await.unwrap().into_inner();
    let ids: Vec<&str> = first_page
        .partners
        .iter()
        .map(|p| p.partner_id.as_str())
        .collect();
    assert_eq!(ids, [id.as_str(), second.as_str()]);
    let token = first_page.page.unwrap().next_page_token;
    assert!(!token.is_empty());
    let last_page = partners
        .list_partners(page(&token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last_page.partners.len(), 1);
    assert_eq!(last_page.partners[0].partner_id, third);
    assert!(last_page.page.unwrap().next_page_token.is_empty());
    let err = partners.list_partners(page("forged")).await.unwrap_err();
    assert_eq!(fields(&err), ["page.page_token"]);

    // Another tenant's dpo sees nothing of acme's partners.
    let globex = Credentials::new(
        &suite.token("globex", "dpo-9", &["dpo"]),
        "legal_obligation",
    );
    let mut theirs = suite.partners(globex);
    let err = theirs
        .get_partner(GetPartnerRequest { partner_id: id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let listed = theirs.list_partners(page("")).await.unwrap().into_inner();
    assert!(listed.partners.is_empty());
}

#[tokio::test]
async fn a_partner_needs_an_assigned_country_an_email_a_kind_and_a_role() {
    let suite = TestSuite::start().await.unwrap();
    let mut partners = suite.partners(dpo(&suite));
    for country in ["UK", "XX", "gb", ""] {
        let err = partners
            .create_partner(new_partner(country))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{country}");
        assert_eq!(fields(&err), ["partner.country"], "{country}");
    }
    let mut bad = new_partner("GB");
    let p = bad.partner.as_mut().unwrap();
    p.contact_email = "not an address".into();
    p.kind = 0;
    p.role = 99;
    p.legal_name = " ".into();
    let err = partners.create_partner(bad).await.unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "partner.legal_name",
            "partner.kind",
            "partner.role",
            "partner.contact_email"
        ]
    );
}

#[tokio::test]
async fn a_retried_create_answers_with_the_same_partner_and_a_reused_key_is_refused() {
    let suite = TestSuite::start().await.unwrap();
    let mut partners = suite.partners(dpo(&suite));
    let keyed = |country: &str| {
        let mut r = new_partner(country);
        r.idempotency_key = Some(IdempotencyKey {
            key: "partner-0001".into(),
        });
        r
    };
    let first = partners
        .create_partner(keyed("GB"))
        .await
        .unwrap()
        .into_inner();
    let again = partners
        .create_partner(keyed("GB"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    let err = partners.create_partner(keyed("FR")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

/// The partner's keys as stored, opened with the suite's own key-encryption key.
async fn keys_of(suite: &TestSuite, partner_id: &str) -> Vec<(partner_key::Model, Vec<u8>)> {
    let db = suite.database().connect().await.unwrap();
    let keys = PartnerKeys::new(
        db.clone(),
        Arc::new(tutela::keys::load_keyring(suite.config()).unwrap()),
        Arc::new(tutela_store::SystemClock),
    );
    let rows = partner_key::Entity::find()
        .filter(partner_key::Column::PartnerId.eq(partner_id))
        .order_by_asc(partner_key::Column::Version)
        .all(&db)
        .await
        .unwrap();
    let mut opened = Vec::new();
    for row in rows {
        let key = keys
            .open("acme", partner_id, row.version as u32, &row.sealed_key)
            .await
            .unwrap();
        // The raw bytes only through the pseudonym they make: compare keys by what they do.
        let probe = key.pseudonym("probe").into_bytes();
        let printed = format!("{key:?} {row:?}");
        assert!(printed.contains("[redacted]"), "{printed}");
        assert!(
            !printed.contains(&hex::encode(&row.sealed_key)),
            "{printed}"
        );
        opened.push((row, probe));
    }
    opened
}

#[tokio::test]
async fn rotating_a_key_makes_the_next_version_retires_the_last_and_is_audited() {
    let suite = TestSuite::start().await.unwrap();
    let mut partners = suite.partners(dpo(&suite));
    let id = partner(&suite, "GB").await;
    let before = keys_of(&suite, &id).await;
    assert_eq!(before.len(), 1);

    let rotated = partners
        .rotate_partner_key(RotatePartnerKeyRequest {
            partner_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .partner
        .unwrap();
    assert_eq!(rotated.key_version, 2);
    let after = keys_of(&suite, &id).await;
    assert_eq!(after.len(), 2);
    assert!(after[0].0.retired_at.is_some(), "the old key is retired");
    assert!(after[1].0.retired_at.is_none());
    assert_ne!(after[0].1, after[1].1, "a new key makes other pseudonyms");
    assert_eq!(after[0].1, before[0].1, "the old key is kept as it was");

    let reasons = audited(&suite, "tutela.sharing.v1.PartnerService/RotatePartnerKey").await;
    let expected = format!("partner_key_rotated partner={id} key_version=2");
    assert!(reasons.contains(&expected), "{reasons:?}");

    // Another tenant cannot rotate it.
    let globex = Credentials::new(
        &suite.token("globex", "dpo-9", &["dpo"]),
        "legal_obligation",
    );
    let err = suite
        .partners(globex)
        .rotate_partner_key(RotatePartnerKeyRequest { partner_id: id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn no_response_carries_a_partner_key() {
    let suite = TestSuite::start().await.unwrap();
    let mut partners = suite.partners(dpo(&suite));
    let created = partners
        .create_partner(new_partner("GB"))
        .await
        .unwrap()
        .into_inner();
    let id = created.partner.clone().unwrap().partner_id;
    let rotated = partners
        .rotate_partner_key(RotatePartnerKeyRequest {
            partner_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let got = partners
        .get_partner(GetPartnerRequest {
            partner_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed = partners
        .list_partners(ListPartnersRequest { page: None })
        .await
        .unwrap()
        .into_inner();
    let responses = [
        created.encode_to_vec(),
        rotated.encode_to_vec(),
        got.encode_to_vec(),
        listed.encode_to_vec(),
    ];

    // Every key the partner ever had, raw, in hex and sealed: none is in any response.
    let db = suite.database().connect().await.unwrap();
    let keyring = Arc::new(tutela::keys::load_keyring(suite.config()).unwrap());
    let vault = tutela_store::KeyVault::new(
        db.clone(),
        keyring,
        tutela_sharing::keys::VAULT_SCOPE,
        Arc::new(tutela_store::SystemClock),
    );
    let data_key = vault.get("acme", &id).await.unwrap();
    let rows = partner_key::Entity::find()
        .filter(partner_key::Column::PartnerId.eq(id.as_str()))
        .all(&db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let raw = data_key
            .open(&format!("partner_key.v{}", row.version), &row.sealed_key)
            .unwrap();
        assert_eq!(raw.len(), 32);
        let hex = hex::encode(raw.as_slice());
        for response in &responses {
            for secret in [raw.as_slice(), hex.as_bytes(), row.sealed_key.as_slice()] {
                assert!(
                    !response.windows(secret.len()).any(|w| w == secret),
                    "a response carries key version {}",
                    row.version
                );
            }
        }
    }
}
