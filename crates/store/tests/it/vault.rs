use std::sync::Arc;

use chrono::{DateTime, Duration};
use secrecy::SecretString;
use tutela_store::testing::TestDatabase;
use tutela_store::{KeyVault, Keyring, ManualClock, StoreError, migrate};

fn kek(byte: u8) -> SecretString {
    use base64::Engine;
    SecretString::from(base64::engine::general_purpose::STANDARD.encode([byte; 32]))
}

async fn vault_with(keyring: Keyring) -> (TestDatabase, KeyVault, Arc<ManualClock>) {
    let db = TestDatabase::create().await.unwrap();
    let conn = db.connect().await.unwrap();
    migrate(&conn, &[]).await.unwrap();
    let clock = Arc::new(ManualClock::new(
        DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
    ));
    let vault = KeyVault::new(conn, Arc::new(keyring), "enrolment", clock.clone());
    (db, vault, clock)
}

async fn vault() -> (TestDatabase, KeyVault, Arc<ManualClock>) {
    // The values sealed below are personal data: none may reach a log.
    tutela_store::testing::logs::personal(&["ada@example.org", "learner-1"]);
    let k = kek(7);
    vault_with(Keyring::from_base64([("k1", &k)]).unwrap()).await
}

#[tokio::test]
async fn a_sealed_value_opens_for_the_same_subject_and_field() {
    let (_db, vault, _) = vault().await;
    let key = vault.get_or_create("acme", "learner-1").await.unwrap();
    let sealed = key.seal("learner.email", b"ada@example.org").unwrap();
    assert!(!sealed.windows(15).any(|w| w == b"ada@example.org"));

    // A second look-up unwraps the same stored key.
    let again = vault.get("acme", "learner-1").await.unwrap();
    assert_eq!(
        again.open_string("learner.email", &sealed).unwrap(),
        "ada@example.org"
    );
}

#[tokio::test]
async fn keys_made_in_bulk_open_as_single_ones_do_and_carry_their_row_numbers() {
    let (_db, vault, _) = vault().await;
    let first = vault.get_or_create("acme", "learner-0").await.unwrap();
    let subjects: Vec<String> = (1..=3).map(|i| format!("learner-{i}")).collect();
    let keys = vault.create_many("acme", &subjects).await.unwrap();
    let mut last = first.handle();
    for (subject, key) in subjects.iter().zip(&keys) {
        // Numbered after every earlier key, in the order made.
        assert!(key.handle() > last, "{} after {last}", key.handle());
        last = key.handle();
        let again = vault.get("acme", subject).await.unwrap();
        assert_eq!(again.handle(), key.handle());
        let sealed = key.seal("learner.email", b"ada@example.org").unwrap();
        assert_eq!(
            again.open_string("learner.email", &sealed).unwrap(),
            "ada@example.org"
        );
    }
    // A subject who already has a key is refused, and the batch with it.
    let again = vec!["learner-9".to_owned(), "learner-2".to_owned()];
    assert!(vault.create_many("acme", &again).await.is_err());
    assert!(matches!(
        vault.get("acme", "learner-9").await,
        Err(StoreError::KeyNotFound)
    ));
}

#[tokio::test]
async fn a_value_bound_to_one_learner_does_not_open_for_another() {
    let (_db, vault, _) = vault().await;
    let ada = vault.get_or_create("acme", "learner-1").await.unwrap();
    let bob = vault.get_or_create("acme", "learner-2").await.unwrap();
    let sealed = ada.seal("learner.email", b"ada@example.org").unwrap();

    assert!(matches!(
        bob.open("learner.email", &sealed),
        Err(StoreError::Decrypt)
    ));
    // Nor under another field of the same learner, nor after a flipped bit.
    assert!(matches!(
        ada.open("learner.phone", &sealed),
        Err(StoreError::Decrypt)
    ));
    let mut flipped = sealed.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(matches!(
        ada.open("learner.email", &flipped),
        Err(StoreError::Decrypt)
    ));
}

#[tokio::test]
async fn the_same_learner_in_another_tenant_has_another_key() {
    let (_db, vault, _) = vault().await;
    let a = vault.get_or_create("acme", "learner-1").await.unwrap();
    let b = vault.get_or_create("globex", "learner-1").await.unwrap();
    let sealed = a.seal("f", b"x").unwrap();
    assert!(b.open("f", &sealed).is_err());
}

#[tokio::test]
async fn after_shredding_the_vault_says_erased_not_garbage() {
    let (_db, vault, clock) = vault().await;
    let key = vault.get_or_create("acme", "learner-1").await.unwrap();
    let sealed = key.seal("learner.email", b"ada@example.org").unwrap();
    drop(key);

    clock.advance(Duration::days(1));
    assert!(vault.shred("acme", "learner-1").await.unwrap());
    assert!(matches!(
        vault.get("acme", "learner-1").await,
        Err(StoreError::Erased)
    ));
    // Erasure is final: the learner cannot silently get a fresh key.
    assert!(matches!(
        vault.get_or_create("acme", "learner-1").await,
        Err(StoreError::Erased)
    ));
    // Shredding twice is harmless.
    assert!(!vault.shred("acme", "learner-1").await.unwrap());
    // Unknown is distinct from erased.
    assert!(matches!(
        vault.get("acme", "nobody").await,
        Err(StoreError::KeyNotFound)
    ));
    // The ciphertext that survived (say, in a backup) has no key left to open it.
    let _ = sealed;
}

#[tokio::test]
async fn shredding_a_subject_with_no_key_leaves_a_tombstone() {
    let (_db, vault, _) = vault().await;
    assert!(!vault.shred("acme", "learner-9").await.unwrap());
    assert!(matches!(
        vault.get_or_create("acme", "learner-9").await,
        Err(StoreError::Erased)
    ));
}

#[tokio::test]
async fn concurrent_first_uses_agree_on_one_key() {
    let (_db, vault, _) = vault().await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let v = vault.clone();
            tokio::spawn(async move { v.get_or_create("acme", "learner-1").await.unwrap() })
        })
        .collect();
    let mut keys = Vec::new();
    for t in tasks {
        keys.push(t.await.unwrap());
    }
    let sealed = keys[0].seal("f", b"same").unwrap();
    for k in &keys {
        assert_eq!(k.open_string("f", &sealed).unwrap(), "same");
    }
}

#[tokio::test]
async fn rotating_the_kek_rewraps_every_live_key() {
    let (old, new) = (kek(1), kek(2));
    let (db, vault, _) = vault_with(Keyring::from_base64([("old", &old)]).unwrap()).await;
    let sealed = vault
        .get_or_create("acme", "l1")
        .await
        .unwrap()
        .seal("f", b"v")
        .unwrap();
    vault.get_or_create("acme", "l2").await.unwrap();
    vault.shred("acme", "l2").await.unwrap();

    // New key first (current), old still present for unwrapping.
    let conn = db.connect().await.unwrap();
    let clock = Arc::new(ManualClock::new(
        DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
    ));
    let both = Keyring::from_base64([("new", &new), ("old", &old)]).unwrap();
    let rotated = KeyVault::new(conn.clone(), Arc::new(both), "enrolment", clock.clone());
    assert_eq!(rotated.rewrap_all().await.unwrap(), 1);

    // The old key can now go: the data still opens with only the new one.
    let only_new = Keyring::from_base64([("new", &new)]).unwrap();
    let after = KeyVault::new(conn, Arc::new(only_new), "enrolment", clock);
    assert_eq!(
        after
            .get("acme", "l1")
            .await
            .unwrap()
            .open_string("f", &sealed)
            .unwrap(),
        "v"
    );
    assert!(matches!(
        after.get("acme", "l2").await,
        Err(StoreError::Erased)
    ));
}

#[test]
fn keys_never_appear_in_debug_output() {
    let secret = kek(0x41); // base64 of 0x41 bytes is "QUFB..."
    let ring = Keyring::from_base64([("k1", &secret)]).unwrap();
    let printed = format!("{ring:?}");
    assert!(printed.contains("[redacted]"));
    assert!(!printed.contains("QUFB"));
    assert!(!printed.contains("65, 65"));
}

#[tokio::test]
async fn subject_keys_and_vaults_print_redacted() {
    let (_db, vault, _) = vault().await;
    let key = vault.get_or_create("acme", "learner-1").await.unwrap();
    assert_eq!(format!("{key:?}"), "SubjectKey([redacted])");
    assert!(!format!("{vault:?}").contains("Bwc")); // base64 of the 0x07 kek bytes
}

#[test]
fn a_keyring_refuses_keys_of_the_wrong_size() {
    let short = SecretString::from("AAAA".to_owned());
    let err = Keyring::from_base64([("k", &short)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("32 bytes"), "{err}");
    assert!(!err.contains("AAAA"));
}

#[tokio::test]
async fn a_key_made_in_the_writers_transaction_commits_with_it_or_not_at_all() {
    let (db, vault, _) = vault().await;
    let conn = db.connect().await.unwrap();

    // Rolled back with the write that made it: no key is left behind.
    let txn = tutela_store::begin(&conn).await.unwrap();
    vault
        .get_or_create_in(&txn, "acme", "learner-1")
        .await
        .unwrap();
    txn.rollback().await.unwrap();
    assert!(matches!(
        vault.get("acme", "learner-1").await,
        Err(StoreError::KeyNotFound)
    ));

    // Committed with it: the vault's own look-up unwraps the same key.
    let txn = tutela_store::begin(&conn).await.unwrap();
    let key = vault
        .get_or_create_in(&txn, "acme", "learner-1")
        .await
        .unwrap();
    let sealed = key.seal("learner.email", b"ada@example.org").unwrap();
    txn.commit().await.unwrap();
    let stored = vault.get("acme", "learner-1").await.unwrap();
    assert_eq!(stored.handle(), key.handle());
    assert_eq!(
        stored.open_string("learner.email", &sealed).unwrap(),
        "ada@example.org"
    );

    // A subject with a key gets that key, not a new one; an erased one gets none.
    let again = vault
        .get_or_create_in(&conn, "acme", "learner-1")
        .await
        .unwrap();
    assert_eq!(
        again.open_string("learner.email", &sealed).unwrap(),
        "ada@example.org"
    );
    vault.shred("acme", "learner-1").await.unwrap();
    assert!(matches!(
        vault.get_or_create_in(&conn, "acme", "learner-1").await,
        Err(StoreError::Erased)
    ));
}

#[tokio::test]
async fn a_key_row_read_by_the_callers_own_query_opens_until_it_is_shredded() {
    use sea_orm::{ConnectionTrait, Statement};
    let (db, vault, _) = vault().await;
    let conn = db.connect().await.unwrap();
    let key = vault.get_or_create("acme", "learner-1").await.unwrap();
    let sealed = key.seal("learner.email", b"ada@example.org").unwrap();
    let read = || async {
        let row = conn
            .query_one_raw(Statement::from_string(
                conn.get_database_backend(),
                format!(
                    "SELECT seq, kek_id, wrapped_key FROM {} WHERE subject_id = 'learner-1'",
                    tutela_store::vault::KEYS_TABLE
                ),
            ))
            .await
            .unwrap()
            .unwrap();
        let seq: i64 = row.try_get("", "seq").unwrap();
        let kek_id: String = row.try_get("", "kek_id").unwrap();
        let wrapped: Option<Vec<u8>> = row.try_get("", "wrapped_key").unwrap();
        let stored = tutela_store::StoredKey {
            tenant: "acme",
            subject: "learner-1",
            kek_id: &kek_id,
            wrapped_key: wrapped.as_deref(),
        };
        vault.stored_key(stored, seq)
    };
    let opened = read().await.unwrap();
    assert_eq!(opened.handle(), key.handle());
    assert_eq!(
        opened.open_string("learner.email", &sealed).unwrap(),
        "ada@example.org"
    );
    vault.shred("acme", "learner-1").await.unwrap();
    assert!(matches!(read().await, Err(StoreError::Erased)));
}
